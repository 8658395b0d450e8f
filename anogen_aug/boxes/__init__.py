"""Boxes: validation, box <-> mask, the packaged size table, allowed regions and sampling boxes (`BoxSampler`).

Boxes are ``(N, 4)`` float tensors, XYXY in pixels, ``x1 > x0`` and ``y1 > y0``; pixel ``(y, x)`` is inside a box
when ``x0 <= x < x1`` and ``y0 <= y < y1`` after rounding the box outwards to whole pixels.

Where things live: ``geometry`` (`check_boxes`, `box_to_slices`, `boxes_to_mask`, `mask_to_box`), ``table``
(`box_range_table`, read from ``anogen_aug/data/box_ranges.json``), ``regions`` (`otsu_threshold`,
`foreground_mask`, `check_region`, `allowed_region`) and ``sampler`` (`BoxSampler`).
"""

from .geometry import box_to_slices, boxes_to_mask, check_boxes, mask_to_box
from .regions import allowed_region, check_region, foreground_mask, otsu_threshold
from .sampler import BoxSampler
from .table import box_range_table

__all__ = [
    "BoxSampler",
    "allowed_region",
    "box_range_table",
    "box_to_slices",
    "boxes_to_mask",
    "check_boxes",
    "check_region",
    "foreground_mask",
    "mask_to_box",
    "otsu_threshold",
]
