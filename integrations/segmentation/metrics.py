"""Scoring a segmenter on real test images: image AUROC; pixel AUROC, AP, F1-max and AUPRO (FPR <= 0.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch
from torch import nn

from anogen_aug.checks import check_choice, check_int

IMAGE_SCORES = ("max", "topk")


@dataclass(frozen=True)
class SegmentationMetrics:
    """Image AUROC, and pixel AUROC, AP (area under precision-recall), F1-max and AUPRO (FPR <= 0.3)."""

    image_auroc: float
    pixel_auroc: float
    pixel_ap: float
    pixel_f1_max: float
    pixel_aupro: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def image_scores(anomaly_map: torch.Tensor, *, image_score: str = "topk", top_k: int = 16) -> torch.Tensor:
    """One score per image from ``(N, 1, H, W)`` maps: the maximum or the mean of the ``top_k`` top pixels."""
    check_choice(image_score, "image_score", IMAGE_SCORES)
    check_int(top_k, "top_k")
    flat = anomaly_map.flatten(1)  # (N, H * W)
    if image_score == "max":
        return flat.amax(dim=1)
    return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)


def score_maps(
    anomaly_map: torch.Tensor,
    gt_mask: torch.Tensor,
    gt_label: torch.Tensor | None = None,
    *,
    image_score: str = "topk",
    top_k: int = 16,
) -> SegmentationMetrics:
    """Metrics of anomaly maps against ground truth (torchmetrics AUROC/AP, anomalib F1Max/AUPRO).

    Args:
        anomaly_map: ``(N, 1, H, W)`` scores (higher = more anomalous).
        gt_mask: ``(N, 1, H, W)`` {0, 1}.
        gt_label: ``(N,)`` {0, 1}; default: whether ``gt_mask`` has a foreground pixel.
        image_score, top_k: How a map becomes an image score (`image_scores`).
    """
    try:
        from anomalib.metrics import AUPRO, F1Max
    except ImportError as error:
        raise ImportError("F1-max and AUPRO need anomalib: pip install 'anogen-aug[anomalib]'") from error
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    if anomaly_map.shape != gt_mask.shape or anomaly_map.ndim != 4 or anomaly_map.shape[1] != 1:
        raise ValueError(
            f"`anomaly_map` and `gt_mask` must both be (N, 1, H, W), got {tuple(anomaly_map.shape)} "
            f"and {tuple(gt_mask.shape)}"
        )
    maps, target = anomaly_map.float().cpu(), (gt_mask.cpu() > 0).long()
    labels = target.flatten(1).amax(dim=1) if gt_label is None else torch.as_tensor(gt_label).long().cpu()
    if labels.unique().numel() < 2 or target.unique().numel() < 2:
        raise ValueError("evaluation needs both normal and anomalous images, and anomalous pixels")
    pixels, pixel_target = maps.flatten(), target.flatten()
    # anomalib metrics read named fields of a batch; they get a plain namespace with those fields.
    batch = SimpleNamespace(anomaly_map=maps[:, 0], gt_mask=target[:, 0].bool())
    f1_max = F1Max(fields=("anomaly_map", "gt_mask"))
    f1_max.update(batch)
    aupro = AUPRO(fields=("anomaly_map", "gt_mask"), fpr_limit=0.3)
    aupro.update(batch)
    return SegmentationMetrics(
        image_auroc=float(BinaryAUROC()(image_scores(maps, image_score=image_score, top_k=top_k), labels)),
        pixel_auroc=float(BinaryAUROC()(pixels, pixel_target)),
        pixel_ap=float(BinaryAveragePrecision()(pixels, pixel_target)),
        pixel_f1_max=float(f1_max.compute()),
        pixel_aupro=float(aupro.compute()),
    )


@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """P(anomalous) maps ``(N, 1, H, W)`` of images ``(N, 3, H, W)``, run on the model's device, on CPU."""
    model.eval()
    device = next(model.parameters()).device
    maps = [
        torch.sigmoid(model(images[i : i + batch_size].to(device))).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(maps)


def evaluate_segmenter(
    model: nn.Module, test_items, *, batch_size: int = 16, image_score: str = "topk", top_k: int = 16
) -> SegmentationMetrics:
    """Run ``model`` on test items ``{"image" (3, H, W), "gt_mask" (1, H, W)[, "gt_label"]}`` and score it.

    Args:
        model: ``(B, 3, H, W)`` -> logits ``(B, 1, H, W)``.
        test_items: A sequence or dataset of such dicts (normal images have an all-zero ``gt_mask``).
        batch_size: Inference batch size.
        image_score, top_k: How a map becomes an image score (`image_scores`).
    """
    items = [test_items[i] for i in range(len(test_items))]
    if not items:
        raise ValueError("`test_items` is empty")
    images = torch.stack([item["image"] for item in items])  # (N, 3, H, W)
    gt_mask = torch.stack([item["gt_mask"] for item in items])  # (N, 1, H, W)
    labels = None
    if all("gt_label" in item for item in items):
        labels = torch.tensor([int(item["gt_label"]) for item in items])
    maps = predict_maps(model, images, batch_size=batch_size)
    return score_maps(maps, gt_mask, labels, image_score=image_score, top_k=top_k)
