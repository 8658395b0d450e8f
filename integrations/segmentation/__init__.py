"""Supervised segmentation from generated anomalies: `AnoGenAugment` in a plain PyTorch training loop.

The protocol of later few-shot generation papers (AnomalyDiffusion, DualAnoDiff, SeaS): a small U-Net is
trained from scratch on normal images into which anomalies are put on the fly, then tested on real anomalies.
It is also the library's example of using the transform in your own training script::

    augment = AnoGenAugment(bank, p=0.5, mask_from="box_mask")       # the paper's weak label: the box
    train_set = SyntheticAnomalySet(normal_images, augment=augment)
    run = train_segmenter(train_set, epochs=20, tau=0.9, generator=torch.Generator().manual_seed(0))
    metrics = evaluate_segmenter(run.model, test_set)                 # items {"image", "gt_mask"}

How labels reach the loss: every training item carries ``gt_mask`` (the target) and ``box_mask`` (where the
target is only a box). With ``mask_from="box_mask"`` the augment writes the box into the `tv_tensors.Mask`,
and the item's ``box_mask`` is that box: `WeakSupervisionLoss` then drops the loss of confidently normal
pixels inside it (``tau < 1``). With ``mask_from="mask"`` (exact crop-and-paste masks) or a Perlin anomaly the
target is a pixel mask and ``box_mask`` is empty: plain, full supervision.

Perlin anomalies and the metrics F1-max and AUPRO come from anomalib (extra ``anogen-aug[anomalib]``).

Modules: ``model`` (`UNet`), ``dataset`` (`SyntheticAnomalySet`), ``training`` (`train_segmenter`),
``metrics`` (`evaluate_segmenter`, `score_maps`).
"""

from __future__ import annotations

from .dataset import SyntheticAnomalySet
from .metrics import (
    IMAGE_SCORES,
    SegmentationMetrics,
    evaluate_segmenter,
    image_scores,
    predict_maps,
    score_maps,
)
from .model import UNet
from .training import LOSSES, SegmenterRun, segmentation_criterion, train_segmenter

__all__ = [
    "IMAGE_SCORES",
    "LOSSES",
    "SegmentationMetrics",
    "SegmenterRun",
    "SyntheticAnomalySet",
    "UNet",
    "evaluate_segmenter",
    "image_scores",
    "predict_maps",
    "score_maps",
    "segmentation_criterion",
    "train_segmenter",
]
