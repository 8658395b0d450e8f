"""The pixel mask of a generated defect, estimated from what the generation changed (beyond the paper).

The paper gives a box; a detector trained on segmentation wants pixels. Inside each box the decoded change
``mean_c |generated - image|`` is smoothed, thresholded (Otsu's threshold inside the box, or a fixed one) and
cleaned (opening + closing, small components removed). The mask is an estimate: `AnomalyGenerator.mask_exact`
is ``False``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..boxes import box_to_slices, otsu_threshold

#: Smallest mean absolute change (8-bit levels / 255) that the Otsu-estimated pixel mask may call "changed".
MIN_CHANGE = 2 / 255


def estimate_change_mask(
    image: torch.Tensor,
    generated: torch.Tensor,
    boxes: torch.Tensor,
    *,
    threshold: float | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Pixel mask ``(1, H, W)`` float in {0, 1} of what changed inside each box.

    Args:
        image: The normal image ``(3, H, W)`` in [0, 1].
        generated: The generated image ``(3, H, W)`` in [0, 1].
        boxes: ``(N, 4)`` XYXY pixels; nothing outside them is ever in the mask.
        threshold: Cut on the smoothed mean absolute change; ``None`` for Otsu's threshold inside each box, at
            least `MIN_CHANGE` (a box where nothing, or everything equally, changed gets no mask).
        scale: Image pixels per model pixel (>= 1 for a window larger than the model): the Gaussian's sigma and
            the side of the opening/closing square grow with it.
    """
    difference = (generated - image).abs().mean(0).float().cpu().numpy()  # (H, W)
    mask = np.zeros_like(difference, dtype=bool)
    side = max(3, round(3 * scale) // 2 * 2 + 1)
    for box in boxes:
        rows, cols = box_to_slices(box)
        patch = ndimage.gaussian_filter(difference[rows, cols], sigma=scale, mode="reflect")
        cut = threshold
        if cut is None:
            cut = otsu_threshold(patch)
            if cut is None:  # nothing changed, or everything changed by the same amount
                continue
            cut = max(cut, MIN_CHANGE)
        mask[rows, cols] |= _clean(patch >= cut, side)
    return torch.from_numpy(mask.astype(np.float32))[None]


def _clean(changed: np.ndarray, side: int) -> np.ndarray:
    """Opening + closing with a ``side`` square (edge-padded), then components under 1 % of the box removed."""
    structure = np.ones((side, side), dtype=bool)
    padded = np.pad(changed, side, mode="edge")
    padded = ndimage.binary_closing(ndimage.binary_opening(padded, structure), structure)
    changed = padded[side:-side, side:-side]
    labels, count = ndimage.label(changed)
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(sizes < max(4, 0.01 * changed.size)) + 1
        changed &= ~np.isin(labels, small)
    return changed
