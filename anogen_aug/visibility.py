"""`mask_visibility`: how much of a labelled anomaly a detector can see (mask area and mean change inside it).

Shared by `CopyPasteGenerator` (its redraw rule) and the bank writer (the records' ``mask_area`` and
``contrast``), so both measure the same thing the same way.
"""

from __future__ import annotations

import torch


def mask_visibility(source: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> tuple[int, float]:
    """Mask area and contrast of one sample.

    Args:
        source: The image before the anomaly, ``(3, H, W)`` float in [0, 1].
        image: The image with the anomaly, same shape.
        mask: Its pixel mask, ``(1, H, W)`` in {0, 1} (or bool).

    Returns:
        ``(area, contrast)``: the mask's pixel count, and the mean absolute change inside the mask in 8-bit
        grey levels (0-255, averaged over channels and mask pixels; 0.0 for an empty mask).
    """
    inside = mask.detach().to("cpu", torch.bool)[0]  # (H, W)
    area = int(inside.sum())
    if area == 0:
        return 0, 0.0
    change = (image.detach().cpu().float() - source.detach().cpu().float()).abs().mean(0)  # (H, W)
    return area, round(float(change[inside].mean()) * 255, 3)
