"""The packaged box-size table: per-defect width/height ranges as fractions of the image side.

Read from ``anogen_aug/data/box_ranges.json`` (package data), transcribed from the AnoGen authors'
``mvtec_range.json`` / ``visa_range.json``; its ``_source`` key says where from.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json

TABLE_FILE = "box_ranges.json"


@functools.lru_cache(maxsize=1)
def _read_table() -> dict:
    # Anchored at the top package: the data folder is ``anogen_aug/data/``, not inside this subpackage.
    text = importlib.resources.files("anogen_aug").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def box_range_table() -> dict[str, dict[str, dict]]:
    """The packaged box-size table: ``category -> defect_type -> {"width": [lo, hi], "height": [lo, hi], ...}``.

    Fractions of the image side, transcribed from the AnoGen authors' ``mvtec_range.json`` / ``visa_range.json``
    (see the ``_source`` key of ``anogen_aug/data/box_ranges.json``), plus a ``"default"`` category. A fresh
    copy each call: the caller may change it.
    """
    return {k: copy.deepcopy(v) for k, v in _read_table().items() if not k.startswith("_")}
