"""Anomaly-map pictures of a trained detector: ``image | ground truth | anomaly map`` per test item."""

from __future__ import annotations

from pathlib import Path

import torch

from anogen_aug.images import save_png


def _heat(values: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` in [0, 1] -> ``(3, H, W)`` jet-like colours."""
    x = values.clamp(0, 1)[None]
    return torch.cat([(1.5 - (4 * x - c).abs()).clamp(0, 1) for c in (3, 2, 1)])


def save_anomaly_maps(model, dataset, out: Path, *, count: int = 4) -> list[Path]:
    """Write ``count`` PNGs ``image | ground truth | anomaly map`` for test items, anomalous first.

    Args:
        model: An anomalib model whose forward returns an ``InferenceBatch`` with ``anomaly_map``.
        dataset: An anomalib test dataset (its ``samples`` table orders the items).
        out: Folder of the PNGs, named ``<defect type>_<stem>.png``.
        count: How many items.

    Returns:
        The paths written.
    """
    labels = [int(v) for v in dataset.samples.label_index]
    order = [i for i, v in enumerate(labels) if v == 1] + [i for i, v in enumerate(labels) if v != 1]
    paths = []
    model.eval()
    device = next(model.parameters()).device
    for index in order[:count]:
        item = dataset[index]
        with torch.no_grad():
            anomaly_map = model(item.image[None].to(device)).anomaly_map.reshape(-1, *item.image.shape[-2:])
        gt = item.gt_mask if item.gt_mask is not None else torch.zeros(item.image.shape[-2:])
        panel = torch.cat(
            [
                item.image.float(),
                gt.float().reshape(1, *gt.shape[-2:]).expand(3, -1, -1),
                _heat(anomaly_map[0].cpu()),
            ],
            dim=2,
        )  # (3, H, 3W)
        name = f"{Path(item.image_path).parent.name}_{Path(item.image_path).stem}.png"
        paths.append(save_png(panel, out / name))
    return paths
