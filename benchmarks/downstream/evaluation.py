"""The real test images a downstream run is scored on: capped draws, resized once, read into memory."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from anogen_aug.bank import resize_source
from anogen_aug.images import load_image, load_mask
from anogen_aug.mvtec import Sample


def cap(samples: list, limit: int | None, *, seed: int = 0) -> list:
    """At most ``limit`` samples, drawn with ``seed`` and returned in their original order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    keep = set(random.Random(seed).sample(range(len(samples)), limit))
    return [s for i, s in enumerate(samples) if i in keep]


def cap_anomalies(samples: list[Sample], limit: int | None, *, seed: int = 0) -> list[Sample]:
    """Every normal sample and at most ``limit`` anomalous ones (drawn with ``seed``), in original order."""
    anomalous = [s for s in samples if s.gt_label]
    keep = set(map(id, cap(anomalous, limit, seed=seed)))
    return [s for s in samples if not s.gt_label or id(s) in keep]


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``(1, H, W)`` {0, 1} -> ``(1, size, size)``: area >= 0.5, or any overlap if that loses the defect.

    The benchmark's own rule (area averaging, so a thin crack that a real test mask holds is never lost when the
    image is shrunk for a small budget); the library's rules are in `anogen_aug.masks`.
    """
    area = F.interpolate(mask[None], (size, size), mode="area")[0]  # (1, size, size) covered fraction
    resized = (area >= 0.5).float()
    return resized if resized.any() or not mask.any() else (area > 0).float()


def load_sample(sample: Sample, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A test sample's image ``(3, size, size)`` and mask ``(1, size, size)`` (zeros for a normal image).

    The aspect ratio is not kept, as in anomalib's MVTec pipeline.
    """
    image = resize_source(load_image(sample.image_path), (size, size))  # as the bank stores its sources
    if sample.mask_path is None:
        return image, torch.zeros(1, size, size)
    return image, resize_mask(load_mask(sample.mask_path), size)


class EvaluationSet(torch.utils.data.Dataset):
    """Test samples as ``{"image": (3, S, S), "gt_mask": (1, S, S), "gt_label": int}``, read once."""

    def __init__(self, samples: list[Sample], size: int) -> None:
        self.samples = list(samples)
        self.items = []
        for sample in self.samples:
            image, gt_mask = load_sample(sample, size)
            self.items.append({"image": image, "gt_mask": gt_mask, "gt_label": sample.gt_label})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]
