"""Boxes: validation, box <-> mask, and sampling boxes where a defect may occur (`BoxSampler`).

Boxes are ``(N, 4)`` float tensors, XYXY in pixels, ``x1 > x0`` and ``y1 > y0``; pixel ``(y, x)`` is inside a box
when ``x0 <= x < x1`` and ``y0 <= y < y1`` after rounding the box outwards to whole pixels.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

logger = logging.getLogger(__name__)


def check_boxes(boxes, height: int, width: int, *, name: str = "boxes") -> torch.Tensor:
    """Validate boxes against an image size and return them as an ``(N, 4)`` float tensor."""
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
    """Union of boxes as a mask ``(1, H, W)`` float in {0, 1}."""
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


# --- box sampling ------------------------------------------------------------------------------------------

_TABLE_FILE = "box_ranges.json"
#: The "auto" foreground is found at (at most) 256 px with the authors' 15x15 elliptical closing.
_WORK_SIDE = 256
_CLOSING_AT_256 = 15
_CHUNK = 64


@functools.lru_cache(maxsize=1)
def _box_table() -> dict:
    text = importlib.resources.files("anogen_aug").joinpath("data", _TABLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def box_range_table() -> dict[str, dict[str, dict]]:
    """The packaged box-size table: ``category -> defect_type -> {"width": [lo, hi], "height": [lo, hi], ...}``.

    Fractions of the image side, transcribed from the AnoGen authors' ``mvtec_range.json`` / ``visa_range.json``
    (see the ``_source`` key of ``anogen_aug/data/box_ranges.json``), plus a ``"default"`` category.
    """
    return {k: copy.deepcopy(v) for k, v in _box_table().items() if not k.startswith("_")}


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


def _disk(side: int) -> np.ndarray:
    radius = (side - 1) / 2
    yy, xx = np.mgrid[:side, :side] - radius
    return (xx**2 + yy**2) <= radius**2 + 0.5


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """The object's foreground of an image ``(3, H, W)`` in [0, 1]: ``(1, H, W)`` float in {0, 1}.

    As the AnoGen authors' ``creatMask_v2``: Otsu threshold of the grey image, then a 15x15 elliptical closing,
    both at 256 px (larger images are area-downscaled to a 256 px long side and the result upscaled, nearest;
    smaller images get a proportionally smaller kernel). The polarity is chosen so that the class covering most
    of the image border is the background (ties: the smaller class is the foreground). When Otsu finds no usable
    split (a flat image, or an empty class) the whole image is returned.
    """
    height, width = image.shape[-2:]
    work = image.detach().double().cpu()[None]  # (1, 3, H, W)
    if max(height, width) > _WORK_SIDE:
        size = (
            max(1, round(height * _WORK_SIDE / max(height, width))),
            max(1, round(width * _WORK_SIDE / max(height, width))),
        )
        work = torch.nn.functional.interpolate(work, size=size, mode="area")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    grey = np.round((work[0] * weights[:, None, None]).sum(0).numpy() * 255)  # (h, w) 8-bit levels
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
    side = max(3, round(_CLOSING_AT_256 * max(grey.shape) / _WORK_SIDE) // 2 * 2 + 1)
    padded = np.pad(foreground, side, mode="edge")  # edge padding: the image border neither grows nor erodes
    closed = ndimage.binary_closing(padded, structure=_disk(side))[side:-side, side:-side]
    mask = torch.from_numpy(closed.astype(np.float32))[None]  # (1, h, w)
    if mask.shape[-2:] != (height, width):
        mask = torch.nn.functional.interpolate(mask[None], size=(height, width), mode="nearest")[0]
    return mask


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (lo, hi) of fractions, got {value!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ValueError(
            f"`{name}` must satisfy 0 < lo <= hi <= 1 (fractions of the image side), got {value!r}"
        )
    return lo, hi


def _check_region(region, name: str = "region"):
    if region is None or (isinstance(region, str) and region == "auto"):
        return region
    from .images import load_mask  # images imports nothing from here; local import keeps boxes.py light

    mask = load_mask(region, name=name)
    if not mask.any():
        raise ValueError(f"`{name}` is empty: an allowed region needs at least one foreground pixel")
    return mask


def _pixel_sizes(fractions: tuple[float, float], side: int) -> tuple[int, int]:
    """Integer sizes ``[ceil(lo * side), floor(hi * side)]`` (the nearest size when that is empty), in [1, side]."""
    lo, hi = math.ceil(fractions[0] * side - 1e-9), math.floor(fractions[1] * side + 1e-9)
    if lo > hi:
        lo = hi = round(sum(fractions) / 2 * side)
    return min(max(lo, 1), side), min(max(hi, 1), side)


@dataclass(frozen=True, kw_only=True, eq=False)
class BoxSampler:
    """Random boxes of per-defect sizes, placed where the defect may occur (AnoGen's box masks, §3.2).

    Width and height are integer pixel sizes drawn uniformly from ``width_range * W`` and ``height_range * H``
    (fractions of the image side, as the authors' ``mvtec_range`` table); the top-left corner is uniform so the
    box lies inside the image. A box is accepted only if at least ``min_inside`` of its pixels lie in the allowed
    region; after ``max_tries`` rejected candidates `sample` raises ``ValueError`` (no silent fallback: a region
    too small for the sizes is a configuration error the caller must see).

    Args:
        width_range, height_range: ``(lo, hi)`` fractions of the image width / height, ``0 < lo <= hi <= 1``.
        region: Where boxes may go: ``None`` (anywhere), ``"auto"`` (the object's foreground, `foreground_mask`),
            or a mask (tensor ``(1, H, W)``/``(H, W)``, array, PIL image or file path), e.g. the authors'
            per-defect template; a mask of another size is resized (nearest) to the image.
        min_inside: Fraction of the box's pixels that must lie in the region (the authors' 0.75).
        rotation: Reproduce the authors' rotated boxes: rotate the rectangle by a random integer angle in
            [0, 180] degrees about its centre and return its axis-aligned bounding box clipped to the image (a
            box is XYXY, so the rotated rectangle itself cannot be returned). The ``min_inside`` test is made on
            the returned box.
        max_tries: Candidates drawn per box before giving up.
    """

    width_range: tuple[float, float] = (0.05, 0.25)
    height_range: tuple[float, float] = (0.05, 0.25)
    region: torch.Tensor | str | None = None
    min_inside: float = 0.75
    rotation: bool = False
    max_tries: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "width_range", _check_range(self.width_range, "width_range"))
        object.__setattr__(self, "height_range", _check_range(self.height_range, "height_range"))
        object.__setattr__(self, "region", _check_region(self.region))
        if not 0 <= self.min_inside <= 1:
            raise ValueError(f"`min_inside` must be in [0, 1], got {self.min_inside!r}")
        if not isinstance(self.rotation, bool):
            raise ValueError(f"`rotation` must be True or False, got {self.rotation!r}")
        if isinstance(self.max_tries, bool) or not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise ValueError(f"`max_tries` must be an integer >= 1, got {self.max_tries!r}")

    @classmethod
    def from_table(cls, category: str, defect_type: str, *, fallback: bool = False, **kwargs) -> BoxSampler:
        """A sampler with the packaged size ranges of ``category``/``defect_type`` (`box_range_table`).

        Args:
            category, defect_type: e.g. ``"bottle"``, ``"broken_large"``.
            fallback: Use the ``"default"`` range (with a logged warning) for an unknown pair instead of raising.
            **kwargs: Further `BoxSampler` fields (``region``, ``min_inside``, ``rotation``, ``max_tries``).
        """
        table = box_range_table()
        entry = table.get(category, {}).get(defect_type)
        if entry is None:
            if not fallback:
                if category not in table:
                    raise ValueError(
                        f"`category`: no box ranges for {category!r}; known categories: {', '.join(sorted(table))} "
                        "(or pass fallback=True to use the 'default' range)"
                    )
                raise ValueError(
                    f"`defect_type`: no box ranges for {category!r}/{defect_type!r}; known defect types of "
                    f"{category!r}: {', '.join(sorted(table[category]))} (or pass fallback=True)"
                )
            logger.warning("no box ranges for %s/%s: using the 'default' range", category, defect_type)
            entry = table["default"]["default"]
        return cls(width_range=tuple(entry["width"]), height_range=tuple(entry["height"]), **kwargs)

    def to_dict(self) -> dict:
        """JSON-able settings (a mask region is recorded as ``"mask"``)."""
        region = self.region if self.region is None or isinstance(self.region, str) else "mask"
        return {
            "width_range": list(self.width_range),
            "height_range": list(self.height_range),
            "region": region,
            "min_inside": self.min_inside,
            "rotation": self.rotation,
            "max_tries": self.max_tries,
        }

    def sample(
        self,
        image: torch.Tensor | tuple[int, int],
        num_boxes: int = 1,
        *,
        region=None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``num_boxes`` independent boxes for one image.

        Args:
            image: The image ``(C, H, W)``, or its size ``(H, W)`` (not with the ``"auto"`` region).
            num_boxes: How many boxes.
            region: Overrides the sampler's ``region`` for this call (same forms).
            generator: The only source of randomness; the same generator state gives the same boxes.

        Returns:
            Boxes ``(num_boxes, 4)`` float, XYXY whole pixels, inside the image.
        """
        height, width = _image_size(image)
        if isinstance(num_boxes, bool) or not isinstance(num_boxes, int) or num_boxes < 1:
            raise ValueError(f"`num_boxes` must be an integer >= 1, got {num_boxes!r}")
        allowed = self._allowed(
            image, self.region if region is None else _check_region(region), height, width
        )
        integral = None
        if allowed is not None:  # summed-area table (H+1, W+1): pixels inside any box in O(1)
            integral = torch.nn.functional.pad(allowed.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
        boxes = [self._sample_one(height, width, integral, generator) for _ in range(num_boxes)]
        return torch.stack(boxes)

    def _allowed(self, image, region, height: int, width: int) -> torch.Tensor | None:
        if region is None:
            return None
        if isinstance(region, str):
            if not isinstance(image, torch.Tensor):
                raise ValueError('`image` must be an image tensor (C, H, W) for region="auto", got a size')
            image = image if image.ndim == 3 else image[None]  # (C, H, W)
            return foreground_mask(image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1))[0]
        if region.shape[-2:] != (height, width):
            region = torch.nn.functional.interpolate(region[None], size=(height, width), mode="nearest")[0]
        return region[0]

    def _sample_one(self, height: int, width: int, integral, generator) -> torch.Tensor:
        w_lo, w_hi = _pixel_sizes(self.width_range, width)
        h_lo, h_hi = _pixel_sizes(self.height_range, height)
        best, tried = 0.0, 0
        while tried < self.max_tries:
            count = 1 if integral is None else min(_CHUNK, self.max_tries - tried)
            tried += count
            w = torch.randint(w_lo, w_hi + 1, (count,), generator=generator)
            h = torch.randint(h_lo, h_hi + 1, (count,), generator=generator)
            corner = torch.rand(2, count, generator=generator, dtype=torch.float64)
            x0 = torch.minimum((corner[0] * (width - w + 1)).floor(), width - w)
            y0 = torch.minimum((corner[1] * (height - h + 1)).floor(), height - h)
            boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1).double()  # (count, 4)
            if self.rotation:
                angles = torch.randint(0, 181, (count,), generator=generator)
                boxes = _rotated_bounds(boxes, angles, height, width)
            if integral is None:
                return boxes[0].float()
            inside = _inside_fraction(integral, boxes)
            accepted = torch.nonzero(inside >= self.min_inside)
            if accepted.numel():
                return boxes[int(accepted[0])].float()
            best = max(best, float(inside.max()))
        coverage = float(integral[-1, -1]) / (height * width)
        raise ValueError(
            f"BoxSampler: no box of {w_lo}-{w_hi} x {h_lo}-{h_hi} px had >= {self.min_inside:.0%} of its pixels in "
            f"the allowed region ({coverage:.1%} of the {width}x{height} image; best {best:.0%}) in "
            f"{self.max_tries} tries: lower `min_inside`, use smaller boxes or a larger region, or raise `max_tries`"
        )


def _image_size(image) -> tuple[int, int]:
    if isinstance(image, torch.Tensor) and image.ndim in (2, 3):
        return int(image.shape[-2]), int(image.shape[-1])
    if (
        isinstance(image, (tuple, list))
        and len(image) == 2
        and all(isinstance(v, int) and v > 0 for v in image)
    ):
        return int(image[0]), int(image[1])
    shape = tuple(image.shape) if isinstance(image, torch.Tensor) else image
    raise ValueError(f"`image` must be an image tensor (C, H, W) or a size (H, W), got {shape!r}")


def _rotated_bounds(boxes: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Axis-aligned bounds of boxes ``(K, 4)`` rotated by ``angles`` degrees about their centres, clipped."""
    theta = torch.deg2rad(angles.double())
    cos, sin = theta.cos().abs(), theta.sin().abs()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half_w, half_h = (w * cos + h * sin) / 2, (w * sin + h * cos) / 2
    rotated = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)
    rotated[:, :2] = (rotated[:, :2] + 1e-6).floor()  # round outwards to whole pixels, ignoring float noise
    rotated[:, 2:] = (rotated[:, 2:] - 1e-6).ceil()
    limits = torch.tensor([width, height, width, height], dtype=torch.float64)
    return torch.minimum(rotated.clamp(min=0), limits)


def _inside_fraction(integral: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Fraction of each whole-pixel box ``(K, 4)`` lying in the region whose summed-area table is given."""
    x0, y0, x1, y1 = boxes.long().unbind(1)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return inside / ((x1 - x0) * (y1 - y0)).double()
