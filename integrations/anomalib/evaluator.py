"""The metrics AnoGen reports (image / pixel AUROC, AU-PR, F1-max; pixel AU-PRO), as an anomalib `Evaluator`."""

from __future__ import annotations

from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Max

IMAGE_FIELDS = ["pred_score", "gt_label"]
PIXEL_FIELDS = ["anomaly_map", "gt_mask"]

# the keys these metrics log at test time (anomalib names a metric prefix + class name)
METRIC_NAMES = (
    "image_AUROC",
    "image_AUPR",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPR",
    "pixel_F1Max",
    "pixel_AUPRO",
)


def anogen_evaluator() -> Evaluator:
    """Test metrics: image and pixel AUROC, AUPR and F1Max, and pixel AUPRO (FPR limit 0.3).

    Pixel metrics use ``strict=False``: a test set without masks skips them instead of failing.
    """
    test_metrics = [
        AUROC(fields=IMAGE_FIELDS, prefix="image_"),
        AUPR(fields=IMAGE_FIELDS, prefix="image_"),
        F1Max(fields=IMAGE_FIELDS, prefix="image_"),
        AUROC(fields=PIXEL_FIELDS, prefix="pixel_", strict=False),
        AUPR(fields=PIXEL_FIELDS, prefix="pixel_", strict=False),
        F1Max(fields=PIXEL_FIELDS, prefix="pixel_", strict=False),
        AUPRO(fields=PIXEL_FIELDS, prefix="pixel_", strict=False),
    ]
    return Evaluator(test_metrics=test_metrics)
