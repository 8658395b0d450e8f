"""Allowed regions: where a box may go (a template mask, or the object's foreground found by Otsu + closing).

A region is ``None`` (anywhere), ``"auto"`` (`foreground_mask` of the image) or a mask; `check_region` validates
one, `allowed_region` turns it into an ``(H, W)`` mask for one image.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

from ..images import load_mask
from ..masks import resize_mask

logger = logging.getLogger(__name__)

#: The "auto" foreground is found at (at most) 256 px with the authors' 15x15 elliptical closing.
WORK_SIDE = 256
CLOSING_AT_256 = 15


def otsu_threshold(
    values, *, bins: int = 256, value_range: tuple[float, float] | None = None
) -> float | None:
    """Otsu's threshold of a set of values (foreground: ``values >= threshold``); ``None`` if there is no split.

    Args:
        values: Any array-like of numbers.
        bins: Histogram bins.
        value_range: Histogram range (default: the values' min and max).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        return None
    lo, hi = value_range if value_range is not None else (values.min(), values.max())
    if hi - lo <= 1e-12:
        return None
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)[:-1]  # (bins-1,) pixels at or below each candidate split
    weight1 = values.size - weight0
    sum0 = np.cumsum(counts * centres)[:-1]
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (np.sum(counts * centres) - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2  # between-class variance (times N^2)
    between[(weight0 == 0) | (weight1 == 0)] = -1
    if between.max() <= 0:
        return None
    # Between separated modes every split ties: take the middle of the first run of maximal splits.
    first = last = int(np.argmax(between))
    while last + 1 < between.size and between[last + 1] >= between[first] * (1 - 1e-12):
        last += 1
    return float(edges[1:][(first + last) // 2])


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """The object's foreground of an image ``(3, H, W)`` in [0, 1]: ``(1, H, W)`` float in {0, 1}.

    As the AnoGen authors' ``creatMask_v2``: Otsu threshold of the grey image, then a 15x15 elliptical closing,
    both at 256 px (larger images are area-downscaled to a 256 px long side and the result upscaled, nearest;
    smaller images get a proportionally smaller kernel). The polarity is chosen so that the class covering most
    of the image border is the background (ties: the smaller class is the foreground). When Otsu finds no usable
    split (a flat image, or an empty class) the whole image is returned.
    """
    height, width = image.shape[-2:]
    grey = _grey_levels(image)  # (h, w), at most WORK_SIDE on the long side
    threshold = otsu_threshold(grey, bins=256, value_range=(0, 256))
    whole = torch.ones(1, height, width)
    if threshold is None:
        logger.debug("foreground_mask: flat image, using the whole image")
        return whole
    foreground = grey >= threshold
    border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]])
    if border.mean() > 0.5 or (border.mean() == 0.5 and foreground.mean() > 0.5):
        foreground = ~foreground
    if not foreground.any() or foreground.all():
        return whole
    side = max(3, round(CLOSING_AT_256 * max(grey.shape) / WORK_SIDE) // 2 * 2 + 1)
    padded = np.pad(foreground, side, mode="edge")  # edge padding: the image border neither grows nor erodes
    closed = ndimage.binary_closing(padded, structure=_disk(side))[side:-side, side:-side]
    mask = torch.from_numpy(closed.astype(np.float32))[None]  # (1, h, w)
    return resize_mask(mask, (height, width), rule="nearest")


def _grey_levels(image: torch.Tensor) -> np.ndarray:
    """8-bit grey levels (ITU-R 601 luma) of ``image``, area-downscaled to a ``WORK_SIDE`` long side if larger."""
    height, width = image.shape[-2:]
    work = image.detach().double().cpu()[None]  # (1, 3, H, W)
    if max(height, width) > WORK_SIDE:
        size = (
            max(1, round(height * WORK_SIDE / max(height, width))),
            max(1, round(width * WORK_SIDE / max(height, width))),
        )
        work = torch.nn.functional.interpolate(work, size=size, mode="area")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    return np.round((work[0] * weights[:, None, None]).sum(0).numpy() * 255)  # (h, w)


def _disk(side: int) -> np.ndarray:
    radius = (side - 1) / 2
    yy, xx = np.mgrid[:side, :side] - radius
    return (xx**2 + yy**2) <= radius**2 + 0.5


def check_region(region, name: str = "region") -> torch.Tensor | str | None:
    """``None``, ``"auto"``, or a non-empty mask loaded as ``(1, H, W)`` float in {0, 1}.

    Args:
        region: ``None``, ``"auto"``, or a mask (tensor ``(1, H, W)``/``(H, W)``, array, PIL image or file path).
        name: The argument's name in error messages.
    """
    if region is None or (isinstance(region, str) and region == "auto"):
        return region
    mask = load_mask(region, name=name)
    if not mask.any():
        raise ValueError(f"`{name}` is empty: an allowed region needs at least one foreground pixel")
    return mask


def allowed_region(region, image, height: int, width: int) -> torch.Tensor | None:
    """The allowed pixels ``(H, W)`` of one image for a checked region (`check_region`); ``None``: anywhere.

    Args:
        region: ``None``, ``"auto"`` (`foreground_mask` of ``image``) or a mask ``(1, h, w)``, resized (nearest)
            to the image when its size differs.
        image: The image ``(C, H, W)`` (grey is repeated to RGB, extra channels dropped), or its size ``(H, W)``
            (not with ``"auto"``).
        height, width: The image's size.
    """
    if region is None:
        return None
    if isinstance(region, str):
        if not isinstance(image, torch.Tensor):
            raise ValueError('`image` must be an image tensor (C, H, W) for region="auto", got a size')
        image = image if image.ndim == 3 else image[None]  # (C, H, W)
        return foreground_mask(image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1))[0]
    return resize_mask(region, (height, width), rule="nearest")[0]
