"""`BoxSampler`: random boxes of per-defect sizes, placed where the defect may occur (AnoGen's box masks, §3.2)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..checks import check_bool, check_int, check_probability, check_range
from .regions import allowed_region, check_region
from .table import box_range_table

logger = logging.getLogger(__name__)

#: Candidates tested at once when there is a region to test them against.
_CHUNK = 64


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
        for name in ("width_range", "height_range"):  # fractions of the image side: 0 < lo <= hi <= 1
            object.__setattr__(
                self, name, check_range(getattr(self, name), name, low=0, high=1, low_open=True)
            )
        object.__setattr__(self, "region", check_region(self.region))
        check_probability(self.min_inside, "min_inside")
        check_bool(self.rotation, "rotation")
        check_int(self.max_tries, "max_tries")

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
        check_int(num_boxes, "num_boxes")
        region = self.region if region is None else check_region(region)
        allowed = allowed_region(region, image, height, width)
        integral = None
        if allowed is not None:  # summed-area table (H+1, W+1): pixels inside any box in O(1)
            integral = torch.nn.functional.pad(allowed.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
        boxes = [self._sample_one(height, width, integral, generator) for _ in range(num_boxes)]
        return torch.stack(boxes)

    def _sample_one(self, height: int, width: int, integral, generator) -> torch.Tensor:
        """One box: chunks of candidates until one has ``min_inside`` of its pixels in the region."""
        w_lo, w_hi = _pixel_sizes(self.width_range, width)
        h_lo, h_hi = _pixel_sizes(self.height_range, height)
        best, tried = 0.0, 0
        while tried < self.max_tries:
            count = 1 if integral is None else min(_CHUNK, self.max_tries - tried)
            tried += count
            boxes = self._candidates(count, (w_lo, w_hi), (h_lo, h_hi), height, width, generator)
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

    def _candidates(self, count: int, widths, heights, height: int, width: int, generator) -> torch.Tensor:
        """``count`` candidate boxes ``(count, 4)`` float64: sizes in ``widths``/``heights``, uniform corners."""
        w = torch.randint(widths[0], widths[1] + 1, (count,), generator=generator)
        h = torch.randint(heights[0], heights[1] + 1, (count,), generator=generator)
        corner = torch.rand(2, count, generator=generator, dtype=torch.float64)
        x0 = torch.minimum((corner[0] * (width - w + 1)).floor(), width - w)
        y0 = torch.minimum((corner[1] * (height - h + 1)).floor(), height - h)
        boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1).double()  # (count, 4)
        if self.rotation:
            angles = torch.randint(0, 181, (count,), generator=generator)
            boxes = _rotated_bounds(boxes, angles, height, width)
        return boxes


def _pixel_sizes(fractions: tuple[float, float], side: int) -> tuple[int, int]:
    """Integer sizes ``[ceil(lo * side), floor(hi * side)]`` (the nearest size when that is empty), in [1, side]."""
    lo, hi = math.ceil(fractions[0] * side - 1e-9), math.floor(fractions[1] * side + 1e-9)
    if lo > hi:
        lo = hi = round(sum(fractions) / 2 * side)
    return min(max(lo, 1), side), min(max(hi, 1), side)


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
