"""``python -m anogen_aug.cli`` (what ``accelerate launch -m`` and ``torchrun -m`` start)."""

import sys

from . import main

sys.exit(main())
