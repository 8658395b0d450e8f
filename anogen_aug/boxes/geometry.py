"""Box geometry: validation and box <-> mask.

Boxes are ``(N, 4)`` float tensors, XYXY in pixels, ``x1 > x0`` and ``y1 > y0``; pixel ``(y, x)`` is inside a box
when ``x0 <= x < x1`` and ``y0 <= y < y1`` after rounding the box outwards to whole pixels.
"""

from __future__ import annotations

import math

import torch


def check_boxes(boxes, height: int, width: int, *, name: str = "boxes") -> torch.Tensor:
    """Validate boxes against an image size and return them as an ``(N, 4)`` float tensor.

    Args:
        boxes: ``(N, 4)`` or one box ``(4,)``, XYXY pixels, anything `torch.as_tensor` takes.
        height, width: The image's size; every box must lie inside it, at least 1 px wide and high.
        name: The argument's name in error messages.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.ndim == 1 and boxes.numel() == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (N, 4) XYXY with N >= 1, got {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        raise ValueError(f"`{name}` must be finite, got {boxes.tolist()}")
    for box in boxes.tolist():
        x0, y0, x1, y1 = box
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"`{name}`: box {box} has zero area (needs x1 > x0 and y1 > y0, at least 1 px)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValueError(f"`{name}`: box {box} lies outside the image (width {width}, height {height})")
    return boxes


def box_to_slices(box) -> tuple[slice, slice]:
    """Pixel slices ``(rows, cols)`` covered by one XYXY box (rounded outwards)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return slice(math.floor(y0), math.ceil(y1)), slice(math.floor(x0), math.ceil(x1))


def boxes_to_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of boxes ``(N, 4)`` as a mask ``(1, H, W)`` float in {0, 1}."""
    mask = torch.zeros(1, height, width)
    for box in torch.as_tensor(boxes).reshape(-1, 4):
        rows, cols = box_to_slices(box)
        mask[:, rows, cols] = 1.0
    return mask


def mask_to_box(mask: torch.Tensor) -> torch.Tensor:
    """Tight XYXY box ``(4,)`` around the non-zero pixels of a ``(1, H, W)`` mask."""
    ys, xs = torch.nonzero(mask.reshape(mask.shape[-2:]) > 0, as_tuple=True)
    if ys.numel() == 0:
        raise ValueError("`mask` is empty: it has no foreground pixel")
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
