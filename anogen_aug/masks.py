"""Mask geometry: resizing a {0, 1} mask, the one place that says which rule applies where.

A mask that is resized must be binarised again, and where the threshold sits decides what survives. The library
uses a small set of named rules, each where its source does:

- ``"overlap"``: bilinear, then any non-zero value counts (``!= 0``). The AnoGen authors' latent mask: a latent
  cell that touches the defect at all is in the loss (stage 1).
- ``"majority"``: bilinear on ``mask != 0``, then ``>= 0.5``. DeSTSeg's mask resize (detector training targets).
- ``"majority_nonempty"``: bilinear with antialiasing, then ``>= 0.5``; a mask that would vanish keeps its peak
  pixels instead, so a thin defect shrunk into a box never disappears (crop-and-paste, the transform).
- ``"bicubic"``: bicubic with antialiasing, then ``> 0.5``: the mask follows its image through the same bicubic
  resize (the support set at the model's resolution, as the authors' data loader).
- ``"nearest"``: nearest neighbour (region templates and foreground masks, whose edges are coarse anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .images import interpolate_antialiased

RULES = ("overlap", "majority", "majority_nonempty", "bicubic", "nearest")


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | int, *, rule: str = "majority") -> torch.Tensor:
    """Resize a mask by one of the named `RULES` (see the module docstring for which is used where).

    Args:
        mask: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)``; any real or bool dtype, non-zero is foreground.
        size: Target ``(height, width)``, or one int for a square.
        rule: One of `RULES`.

    Returns:
        Float {0, 1} at the new size, with the input's number of dimensions (bool for ``"majority_nonempty"``,
        which is used where the result indexes pixels).
    """
    if mask.ndim not in (2, 3, 4):
        raise ValueError(f"`mask` must be (H, W), (1, H, W) or (B, 1, H, W), got shape {tuple(mask.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"`size` must be a positive int or (height, width), got {size!r}")
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}")
    shape = mask.shape
    batched = mask.reshape(-1, 1, *shape[-2:])  # (N, 1, H, W)
    resized = _RESIZERS[rule](batched, size)  # (N, 1, h, w)
    return resized.reshape(*shape[:-2], *size)


def _overlap(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return (F.interpolate(mask.float(), size=size, mode="bilinear") != 0).float()


def _majority(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate((mask != 0).float(), size=size, mode="bilinear", align_corners=False)
    return (resized >= 0.5).float()


def _majority_nonempty(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if not mask.any():
        return torch.zeros(mask.shape[0], 1, *size, dtype=torch.bool)
    soft = interpolate_antialiased(mask.float(), size, mode="bilinear")
    if (soft >= 0.5).any():
        return soft >= 0.5
    return soft >= soft.max()


def _bicubic(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = interpolate_antialiased(mask.float(), size, mode="bicubic")
    return (resized > 0.5).float()


def _nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask.float(), size=size, mode="nearest")


_RESIZERS = {
    "overlap": _overlap,
    "majority": _majority,
    "majority_nonempty": _majority_nonempty,
    "bicubic": _bicubic,
    "nearest": _nearest,
}
