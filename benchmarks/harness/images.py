"""Synthetic inputs (the speed benchmarks need shapes and plausible statistics, not real pictures) and PSNR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def synthetic_normal(size: int, *, generator: torch.Generator) -> torch.Tensor:
    """A smooth textured "normal" image ``(3, size, size)`` in [0, 1]: low-frequency noise plus fine grain."""
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    image = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    image = 0.35 + 0.3 * image + 0.05 * torch.rand(3, size, size, generator=generator)
    return image.clamp(0, 1)


def synthetic_defect(size: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A normal image with a dark elliptic blotch: ``image (3, size, size)`` in [0, 1], ``mask (1, size, size)``."""
    image = synthetic_normal(size, generator=generator)
    cy, cx, ry, rx = (
        torch.rand(4, generator=generator) * torch.tensor([0.5, 0.5, 0.15, 0.15]) + 0.25
    ).tolist()
    cy, cx = cy * size, cx * size
    ry, rx = max(ry * size / 2, 2), max(rx * size / 2, 2)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).float()[None]  # (1, size, size)
    return (image * (1 - 0.7 * mask)).clamp(0, 1), mask


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [0, 1] (``inf`` when identical)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two {0, 1} masks (1.0 when both are empty)."""
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union
