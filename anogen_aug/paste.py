"""`CopyPasteGenerator`: few-shot crop-and-paste anomalies with exact masks and no diffusion weights.

Every support anomaly is cut out by its mask (cropped to the mask's bounding box). For each box the generator
picks a support item, flips, rotates, scales and brightens it (every draw from ``generator``), fits it into the
box and blends it in. The returned ``mask`` is exactly the support mask as placed; every pixel outside it (so
every pixel outside the boxes) is bit-identical to the input. It returns the same `Synthesis` as the diffusion
generator, so banks, transforms and datamodules treat both alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .boxes import box_to_slices, boxes_to_mask, check_boxes, mask_to_box
from .images import content_hash, load_image, load_mask, quantize
from .synthesis import Synthesis

BLENDS = ("feather", "seamless", "hard")
FITS = ("box", "none")


def _check_range(name: str, value, *, positive: bool = False) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low > high or (positive and low <= 0):
        expected = "0 < low <= high" if positive else "low <= high, finite"
        raise ValueError(f"`{name}` must satisfy {expected}, got {value!r}")
    return low, high


@dataclass(frozen=True)
class PasteConfig:
    """Settings of `CopyPasteGenerator` (saved in the bank manifest).

    Attributes:
        scale_range: Size factor drawn uniformly per anomaly. With ``fit="box"`` it is relative to the largest
            aspect-preserving size that fits the box (1.0 touches the box); above 1.0 the anomaly overflows the
            box and is cut at the box edge (the mask stays exact). With ``fit="none"`` it is relative to the
            support anomaly's own pixel size.
        rotation_range: Rotation in degrees (counter-clockwise), drawn uniformly.
        flip_p: Probability of a horizontal flip.
        brightness_range: Multiplicative brightness factor, drawn uniformly.
        blend: ``"feather"`` (alpha ramps from ``1 / (feather + 1)`` at the mask edge to 1 over ``feather``
            pixels), ``"seamless"`` (Poisson cloning with ``cv2.seamlessClone``, kept inside the mask) or
            ``"hard"`` (alpha = mask).
        feather: Width in pixels of the feather ramp (0 = hard edges).
        fit: ``"box"`` (scale the cut anomaly to fit the box) or ``"none"`` (keep its pixel size).
    """

    scale_range: tuple[float, float] = (0.7, 1.3)
    rotation_range: tuple[float, float] = (-30.0, 30.0)
    flip_p: float = 0.5
    brightness_range: tuple[float, float] = (0.85, 1.15)
    blend: str = "feather"
    feather: int = 2
    fit: str = "box"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range", _check_range("scale_range", self.scale_range, positive=True))
        object.__setattr__(self, "rotation_range", _check_range("rotation_range", self.rotation_range))
        brightness = _check_range("brightness_range", self.brightness_range, positive=True)
        object.__setattr__(self, "brightness_range", brightness)
        if isinstance(self.flip_p, bool) or not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"`flip_p` must be a probability in [0, 1], got {self.flip_p!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"`blend` must be one of {BLENDS}, got {self.blend!r}")
        if isinstance(self.feather, bool) or not isinstance(self.feather, int) or self.feather < 0:
            raise ValueError(f"`feather` must be an integer >= 0 (pixels), got {self.feather!r}")
        if self.fit not in FITS:
            raise ValueError(f"`fit` must be one of {FITS}, got {self.fit!r}")


def _as_list(value, name: str) -> list:
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4:
        return list(value)  # a batch (B, C, H, W)
    if isinstance(value, (str, os.PathLike, Image.Image, torch.Tensor, np.ndarray)) or not isinstance(
        value, Sequence
    ):
        raise TypeError(f"`{name}` must be a sequence (list) of images, got {type(value).__name__}")
    return list(value)


def _cut_support(support_images, support_masks) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Load, check and cut the support set: ``[(patch (3, h, w), mask (1, h, w)), ...]`` cropped to each mask."""
    images = _as_list(support_images, "support_images")
    masks = _as_list(support_masks, "support_masks")
    if not images:
        raise ValueError("`support_images` must hold at least one defect image, got none")
    if len(images) != len(masks):
        raise ValueError(
            f"`support_masks` must hold one mask per support image ({len(images)}), got {len(masks)}"
        )
    cut = []
    for i, (image, mask) in enumerate(zip(images, masks)):
        image = load_image(image, name=f"support_images[{i}]").cpu()
        mask = load_mask(mask, name=f"support_masks[{i}]").cpu()
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"`support_masks[{i}]` must have the size of `support_images[{i}]` "
                f"({image.shape[-1]}x{image.shape[-2]}), got {mask.shape[-1]}x{mask.shape[-2]}"
            )
        if not mask.any():
            raise ValueError(f"`support_masks[{i}]` is empty: it marks no defect pixel")
        rows, cols = box_to_slices(mask_to_box(mask))
        cut.append((image[:, rows, cols].contiguous(), mask[:, rows, cols].contiguous()))
    return cut


def _feather_alpha(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Alpha ``(1, h, w)``: distance to the mask edge / (width + 1), clipped to 1; zero outside the mask."""
    if width == 0:
        return mask.float()
    padded = np.pad(mask[0].numpy().astype(np.uint8), 1)  # the box edge counts as an edge too
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    alpha = torch.from_numpy(np.clip(distance / (width + 1), 0.0, 1.0)).float()[None]
    return alpha * mask


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` in [0, 1] -> ``(h, w, 3)`` uint8 contiguous."""
    return np.ascontiguousarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def _seamless(region: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Poisson-clone ``canvas`` into ``region`` (both ``(3, h, w)``) where ``mask`` ``(1, h, w)`` is set."""
    pad = 2  # OpenCV clears the outermost mask pixel and keeps the ROI border fixed: give it room
    source = torch.where(mask, canvas, region)  # the ring around the mask carries the background's gradients
    dst = cv2.copyMakeBorder(_to_uint8(region), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    src = cv2.copyMakeBorder(_to_uint8(source), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    clone_mask = np.pad(mask[0].numpy().astype(np.uint8) * 255, pad)
    clone_mask = cv2.dilate(clone_mask, np.ones((3, 3), np.uint8))  # every mask pixel becomes an unknown
    x, y, w, h = cv2.boundingRect(clone_mask)
    cloned = cv2.seamlessClone(src, dst, clone_mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    cloned = torch.from_numpy(cloned[pad:-pad, pad:-pad]).permute(2, 0, 1).float() / 255  # (3, h, w)
    return cloned


class CopyPasteGenerator:
    """Crop-and-paste anomaly generator: cut support anomalies by their masks and paste them into boxes.

    Args:
        support_images: 1 or more defect images (paths, PIL images, arrays or ``(3, H, W)`` tensors).
        support_masks: Their pixel masks, same order and size; none may be empty.
        config: `PasteConfig` (default settings when None).

    Example:
        >>> generator = CopyPasteGenerator(["crack.png"], ["crack_mask.png"])
        >>> synthesis = generator.generate(image, torch.tensor([[10, 10, 40, 30]]))
    """

    name = "paste"
    mask_exact = True  # the bank writer stores this as the record's `mask_exact`

    def __init__(self, support_images, support_masks, *, config: PasteConfig | None = None) -> None:
        config = PasteConfig() if config is None else config
        if not isinstance(config, PasteConfig):
            raise TypeError(f"`config` must be a PasteConfig, got {type(config).__name__}")
        self.config = config
        self.support = _cut_support(support_images, support_masks)
        self.support_hashes = [content_hash(patch) for patch, _ in self.support]

    def settings(self) -> dict[str, Any]:
        """JSON-able settings stored in the bank manifest."""
        return {
            "config": asdict(self.config),
            "num_support": len(self.support),
            "support_hashes": self.support_hashes,
        }

    def __repr__(self) -> str:
        return f"CopyPasteGenerator(num_support={len(self.support)}, config={self.config})"

    def _draw(self, generator: torch.Generator | None) -> list[float]:
        device = generator.device if generator is not None else "cpu"
        return torch.rand(7, generator=generator, device=device).tolist()

    def _transform(self, draws: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick a support item, flip, rotate and brighten it: ``(patch (3, h, w), mask (1, h, w) bool)``."""
        config = self.config
        patch, mask = self.support[min(int(draws[0] * len(self.support)), len(self.support) - 1)]
        if draws[1] < config.flip_p:
            patch, mask = patch.flip(-1), mask.flip(-1)
        low, high = config.rotation_range
        angle = low + (high - low) * draws[2]
        mask = mask > 0.5
        if angle != 0:
            rotated = TF.rotate(patch, angle, interpolation=InterpolationMode.BILINEAR, expand=True)
            soft = TF.rotate(mask.float(), angle, interpolation=InterpolationMode.BILINEAR, expand=True)
            if (soft >= 0.5).any():  # a one-pixel mask can vanish under rotation: then keep it unrotated
                rows, cols = box_to_slices(mask_to_box(soft >= 0.5))
                patch, mask = rotated[:, rows, cols], (soft >= 0.5)[:, rows, cols]
        low, high = config.brightness_range
        return (patch * (low + (high - low) * draws[3])).clamp(0, 1), mask

    def _place(self, patch, mask, height: int, width: int, draws: list[float]):
        """Scale ``patch``/``mask`` and put them on a ``(height, width)`` box canvas; return canvas and mask."""
        ph, pw = patch.shape[-2:]
        low, high = self.config.scale_range
        factor = low + (high - low) * draws[4]
        base = min(width / pw, height / ph) if self.config.fit == "box" else 1.0
        for attempt in range(2):
            if attempt == 1:  # the visible part held no mask pixel: shrink to fit the box entirely
                base, factor = min(width / pw, height / ph), 1.0
            th, tw = max(1, round(ph * base * factor)), max(1, round(pw * base * factor))
            scaled = F.interpolate(
                patch[None], (th, tw), mode="bilinear", antialias=True, align_corners=False
            )[0]
            soft = F.interpolate(
                mask[None].float(), (th, tw), mode="bilinear", antialias=True, align_corners=False
            )
            soft = soft[0]
            placed = soft >= 0.5 if (soft >= 0.5).any() else soft >= soft.max()  # (1, th, tw) bool
            oy, ox = round((height - th) * draws[5]), round((width - tw) * draws[6])  # negative = overflow
            y0, x0, y1, x1 = max(oy, 0), max(ox, 0), min(oy + th, height), min(ox + tw, width)
            canvas = torch.zeros(3, height, width)
            canvas_mask = torch.zeros(1, height, width, dtype=torch.bool)
            canvas[:, y0:y1, x0:x1] = scaled[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            canvas_mask[:, y0:y1, x0:x1] = placed[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            if canvas_mask.any():
                break
        return canvas, canvas_mask

    def _blend(self, region: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Blend ``canvas`` into ``region`` (``(3, h, w)``) inside ``mask``; pixels outside are returned as-is."""
        if self.config.blend == "seamless":
            blended = _seamless(region, canvas, mask)
        else:
            alpha = _feather_alpha(mask, self.config.feather if self.config.blend == "feather" else 0)
            blended = region * (1 - alpha) + canvas * alpha
        return torch.where(mask, quantize(blended), region)

    def generate(self, image, boxes, *, generator: torch.Generator | None = None) -> Synthesis:
        """Paste one support anomaly into each box.

        Args:
            image: The normal image, ``(3, H, W)`` float in [0, 1] (or anything `load_image` reads).
            boxes: ``(N, 4)`` XYXY pixels (or one ``(4,)`` box).
            generator: Source of every random draw (support choice, flip, angle, brightness, scale, offset).

        Returns:
            `Synthesis` on the image's device: ``image`` ``(3, H, W)`` (pasted pixels on the 8-bit grid, every
            other pixel bit-identical to the input), ``box_mask`` and ``mask`` ``(1, H, W)`` with ``mask`` the
            exact union of the placed anomalies, ``boxes`` ``(N, 4)``.
        """
        # 1. Check inputs; work on the CPU (OpenCV and small crops), return on the caller's device.
        source = load_image(image, name="image")
        device, source = source.device, source.cpu()
        _, height, width = source.shape
        boxes = check_boxes(boxes, height, width)
        result = source.clone()
        mask = torch.zeros(1, height, width, dtype=torch.bool)
        # 2. One anomaly per box, in box order (later boxes paste over earlier ones where they overlap).
        for box in boxes:
            draws = self._draw(generator)
            patch, patch_mask = self._transform(draws)
            rows, cols = box_to_slices(box)
            box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
            canvas, canvas_mask = self._place(patch, patch_mask, box_h, box_w, draws)
            result[:, rows, cols] = self._blend(result[:, rows, cols], canvas, canvas_mask)
            mask[:, rows, cols] |= canvas_mask
        # 3. Outputs: the box mask covers exactly the pixels the boxes' slices cover, so mask <= box_mask.
        return Synthesis(
            image=result.to(device),
            box_mask=boxes_to_mask(boxes, height, width).to(device),
            mask=mask.float().to(device),
            boxes=boxes.to(device),
        )
