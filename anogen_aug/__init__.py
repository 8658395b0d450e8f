"""anogen-aug: few-shot, box-controlled defect generation (AnoGen, ECCV 2024) for training anomaly detectors.

Heavy submodules are imported lazily, so ``import anogen_aug`` is cheap and DataLoader workers that only need
`AnoGenAugment` do not import diffusers.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "Backbone": "backbone",
    "load_backbone": "backbone",
    "DefectEmbedding": "embedding",
    "convert_official": "official",
    "Synthesis": "synthesis",
    "load_image": "images",
    "load_mask": "images",
    "InversionConfig": "inversion",
    "learn_defect_embedding": "inversion",
    "AnomalyGenerator": "generation",
    "GenerationConfig": "generation",
    "BoxSampler": "boxes",
    "CopyPasteGenerator": "paste",
    "PasteConfig": "paste",
    "AnomalyBank": "bank",
    "BankSample": "bank",
    "write_bank": "bank",
    "merge_banks": "bank",
    "AnoGenAugment": "transforms",
    "WeakSupervisionLoss": "losses",
    "weak_supervision_mask": "losses",
    "contact_sheet": "contact_sheet",
    "learn_all": "whole_dataset",
    "generate_all": "whole_dataset",
    "bank_contact_sheet": "contact_sheet",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
