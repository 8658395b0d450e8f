"""anomalib integration: `AnoGenDataModule`, `WeakDraem`, `DeSTSeg`, `train_detector`.

Install the extra first: ``pip install "anogen-aug[anomalib]"``. The core package `anogen_aug` never imports
anomalib; only this subpackage does.
"""

from __future__ import annotations

try:
    import anomalib  # noqa: F401
    import lightning  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "anogen_aug.integrations.anomalib needs anomalib and lightning: pip install 'anogen-aug[anomalib]'"
    ) from error

from .batch import AnoGenImageBatch, AnoGenImageItem
from .datamodule import AnoGenDataModule, AnoGenDataset
from .destseg import DeSTSeg
from .draem import WeakDraem, WeakDraemLoss
from .evaluator import METRIC_NAMES, anogen_evaluator
from .train import train_detector

__all__ = [
    "METRIC_NAMES",
    "AnoGenDataModule",
    "AnoGenDataset",
    "AnoGenImageBatch",
    "AnoGenImageItem",
    "DeSTSeg",
    "WeakDraem",
    "WeakDraemLoss",
    "anogen_evaluator",
    "train_detector",
]
