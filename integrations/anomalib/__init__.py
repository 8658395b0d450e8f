"""anomalib integration: `AnoGenDataModule`, `WeakDraem`, `DeSTSeg`, `train_detector` with its `TrainConfig`.

Install the extra first: ``pip install "anogen-aug[anomalib]"``. The core package `anogen_aug` never imports
anomalib; only this subpackage does. Its names are imported lazily, as the core's: importing anomalib takes
seconds, and `TrainConfig` (which the ``anogen-aug train`` flags are made from) needs none of it, so it can be
imported without the extra; every other name raises an `ImportError` naming the extra when it is missing.

Layout, as anomalib's own models: ``draem/`` and ``destseg/`` each hold ``torch_model.py`` (pure torch),
``loss.py`` and ``lightning_model.py`` (the anomalib module); ``batch.py`` the item and batch types that carry
the weak-supervision fields, ``datamodule.py`` the wrapper that mixes a bank into the train set,
``supervision.py`` which models may be fed its anomalies, ``config.py`` and ``train.py`` the ``anogen-aug train``
run, ``evaluator.py`` and ``maps.py`` what it reports. ``examples/anomalib/`` holds configs for anomalib's CLI.
"""

from __future__ import annotations

from anogen_aug.lazy import lazy_exports

#: The packages of the ``anomalib`` extra.
_EXTRA = ("anomalib", "lightning", "kornia")

_EXPORTS = {
    "AnoGenImageBatch": "batch",
    "AnoGenImageItem": "batch",
    "TrainConfig": "config",
    "AnoGenDataModule": "datamodule",
    "AnoGenDataset": "datamodule",
    "DeSTSeg": "destseg",
    "DeSTSegLoss": "destseg",
    "WeakDraem": "draem",
    "WeakDraemLoss": "draem",
    "METRIC_NAMES": "evaluator",
    "anogen_evaluator": "evaluator",
    "consumes_anomalies": "supervision",
    "train_detector": "train",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(
    __name__,
    _EXPORTS,
    globals(),
    extras=_EXTRA,
    hint="needs anomalib and lightning: pip install 'anogen-aug[anomalib]'",
)
