"""`CopyPasteGenerator`: few-shot crop-and-paste anomalies with exact masks and no diffusion weights.

Every support anomaly is cut out by its mask (cropped to the mask's bounding box). For each box the generator
picks a support item, flips, rotates, scales and brightens it (every draw from ``generator``), fits it into the
box and blends it in. A pasted anomaly keeps its own outline: it is scaled down until its whole rotated patch fits
the box, never cut at the box edge. A paste whose mask or visible change is too small is redrawn (see
`PasteConfig`), so a sample labelled anomalous shows its anomaly. The returned ``mask`` is exactly the support
mask as placed; every pixel outside it (so every pixel outside the boxes) is bit-identical to the input. It returns the same `Synthesis` as the diffusion
generator, so banks, transforms and datamodules treat both alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .boxes import box_to_slices, boxes_to_mask, check_boxes, mask_to_box
from .checks import check_choice, check_int, check_number, check_probability, check_range
from .images import content_hash, load_image, quantize, resize_image
from .masks import resize_mask
from .support import load_support_set
from .synthesis import Synthesis
from .visibility import mask_visibility

BLENDS = ("feather", "seamless", "hard")
FITS = ("box", "none")


@dataclass(frozen=True)
class PasteConfig:
    """Settings of `CopyPasteGenerator` (saved in the bank manifest).

    Attributes:
        scale_range: Size factor drawn uniformly per anomaly. With ``fit="box"`` it is relative to the largest
            aspect-preserving size whose whole (rotated) patch fits the box (1.0 touches the box). With
            ``fit="none"`` it is relative to the support anomaly's own pixel size. Either way the size is capped
            at that largest fitting size: an anomaly is scaled to fit its box, never cut along the box edge, so it
            keeps its own outline (factors above the cap act as the cap). The default keeps thin defects near
            full size, since shrinking a thin crack fades it.
        rotation_range: Rotation in degrees (counter-clockwise), drawn uniformly.
        flip_p: Probability of a horizontal flip.
        brightness_range: Multiplicative brightness factor, drawn uniformly.
        blend: ``"feather"`` (alpha ramps up from the mask edge over ``feather`` pixels, stretched so each
            connected part of the mask is opaque at its innermost pixel: a scratch thinner than the ramp keeps
            its full contrast along its middle), ``"seamless"`` (Poisson cloning with ``cv2.seamlessClone``, kept inside the mask) or
            ``"hard"`` (alpha = mask).
        feather: Width in pixels of the feather ramp (0 = hard edges).
        fit: ``"box"`` (scale the cut anomaly to fit the box) or ``"none"`` (keep its pixel size, shrunk only
            when it does not fit the box).
        min_mask_pixels: A paste whose mask has fewer pixels is redrawn (0 = no area check).
        min_contrast: A paste whose mean absolute change inside its mask is below this many 8-bit grey levels
            (`anogen_aug.visibility.mask_visibility`) is redrawn (0 = no contrast check).
        max_tries: Draws per box (support item, flip, angle, brightness, scale, offset) before giving up; then
            the most visible try is kept (a box too small for ``min_mask_pixels`` keeps its best try). The
            bank records every sample's ``mask_area`` and ``contrast``, so such samples can be found.
    """

    scale_range: tuple[float, float] = (0.8, 1.0)
    rotation_range: tuple[float, float] = (-30.0, 30.0)
    flip_p: float = 0.5
    brightness_range: tuple[float, float] = (0.85, 1.15)
    blend: str = "feather"
    feather: int = 2
    fit: str = "box"
    min_mask_pixels: int = 10
    min_contrast: float = 10.0
    max_tries: int = 8

    def __post_init__(self) -> None:
        # The ranges are stored as float pairs (a JSON list becomes a tuple); the other fields as given.
        for name, positive in (("scale_range", True), ("rotation_range", False), ("brightness_range", True)):
            pair = check_range(getattr(self, name), name, low=0.0 if positive else None, low_open=positive)
            object.__setattr__(self, name, pair)
        check_probability(self.flip_p, "flip_p")
        check_choice(self.blend, "blend", BLENDS)
        check_int(self.feather, "feather", low=0)
        check_choice(self.fit, "fit", FITS)
        check_int(self.min_mask_pixels, "min_mask_pixels", low=0)
        object.__setattr__(self, "min_contrast", check_number(self.min_contrast, "min_contrast", low=0.0))
        check_int(self.max_tries, "max_tries", low=1)


def _cut_support(support_images, support_masks) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Load, check and cut the support set: ``[(patch (3, h, w), mask (1, h, w)), ...]`` cropped to each mask."""
    support = load_support_set(support_images, support_masks, names=("support_images", "support_masks"))
    cut = []
    for image, mask in zip(support.images, support.masks):
        image, mask = image.cpu(), mask.cpu()
        rows, cols = box_to_slices(mask_to_box(mask))
        cut.append((image[:, rows, cols].contiguous(), mask[:, rows, cols].contiguous()))
    return cut


def _feather_alpha(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Alpha ``(1, h, w)``: distance to the mask edge / (width + 1), clipped to 1, then divided by its peak in each
    connected part of the mask (a thin scratch whose ramp never reaches 1 stays opaque in its middle); zero
    outside the mask."""
    if width == 0:
        return mask.float()
    padded = np.pad(mask[0].numpy().astype(np.uint8), 1)  # the box edge counts as an edge too
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    alpha = np.clip(distance / (width + 1), 0.0, 1.0)  # (h, w)
    count, labels = cv2.connectedComponents(padded[1:-1, 1:-1], connectivity=8)
    peak = np.zeros(count, np.float32)
    np.maximum.at(peak, labels, alpha)
    peak[0] = 1.0  # the background: alpha is zero there anyway
    alpha = torch.from_numpy(alpha / peak[labels]).float()[None]
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
        support_images: 1 or more defect images: a list of paths, PIL images, arrays or ``(3, H, W)`` tensors,
            or one ``(K, 3, H, W)`` batch (see `anogen_aug.support`; a single image is refused, pass ``[image]``).
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
        """Scale ``patch``/``mask`` so the whole patch fits a ``(height, width)`` box canvas (never cut: the anomaly
        keeps its own outline) and put them there; return canvas ``(3, height, width)`` and mask ``(1, ...)``."""
        ph, pw = patch.shape[-2:]
        low, high = self.config.scale_range
        largest = min(width / pw, height / ph)  # the largest aspect-preserving size that fits the box
        factor = low + (high - low) * draws[4]
        factor = min(factor * largest if self.config.fit == "box" else factor, largest)
        th, tw = min(height, max(1, round(ph * factor))), min(width, max(1, round(pw * factor)))
        scaled = resize_image(patch, (th, tw), mode="bilinear")  # (3, th, tw)
        placed = resize_mask(mask, (th, tw), rule="majority_nonempty")  # (1, th, tw) bool, never empty
        oy, ox = round((height - th) * draws[5]), round((width - tw) * draws[6])  # >= 0: inside the box
        canvas = torch.zeros(3, height, width)
        canvas_mask = torch.zeros(1, height, width, dtype=torch.bool)
        canvas[:, oy : oy + th, ox : ox + tw] = scaled
        canvas_mask[:, oy : oy + th, ox : ox + tw] = placed
        return canvas, canvas_mask

    def _blend(self, region: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Blend ``canvas`` into ``region`` (``(3, h, w)``) inside ``mask``; pixels outside are returned as-is."""
        if self.config.blend == "seamless":
            blended = _seamless(region, canvas, mask)
        else:
            alpha = _feather_alpha(mask, self.config.feather if self.config.blend == "feather" else 0)
            blended = region * (1 - alpha) + canvas * alpha
        return torch.where(mask, quantize(blended), region)

    def _paste_visible(self, region: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste one anomaly into ``region`` ``(3, h, w)``: draw until its mask has ``min_mask_pixels`` pixels and
        its mean change ``min_contrast`` grey levels, at most ``max_tries`` times; return the first visible try
        (else the most visible one) as ``(blended region (3, h, w), mask (1, h, w) bool)``."""
        config, best = self.config, None
        for _ in range(config.max_tries):
            draws = self._draw(generator)
            patch, patch_mask = self._transform(draws)
            canvas, canvas_mask = self._place(patch, patch_mask, *region.shape[-2:], draws)
            blended = self._blend(region, canvas, canvas_mask)
            area, contrast = mask_visibility(region, blended, canvas_mask)
            visible = area >= config.min_mask_pixels and contrast >= config.min_contrast
            # Short of the thresholds, a try is as good as its area and contrast, each counted up to its bar.
            shortfall = min(area / max(config.min_mask_pixels, 1), 1.0) + min(
                contrast / max(config.min_contrast, 1e-6), 1.0
            )
            if best is None or (visible, shortfall) > best[0]:
                best = ((visible, shortfall), blended, canvas_mask)
            if visible:
                break
        return best[1], best[2]

    def generate(self, image, boxes, *, generator: torch.Generator | None = None) -> Synthesis:
        """Paste one support anomaly into each box.

        Args:
            image: The normal image, ``(3, H, W)`` float in [0, 1] (or anything `load_image` reads).
            boxes: ``(N, 4)`` XYXY pixels (or one ``(4,)`` box).
            generator: Source of every random draw (support choice, flip, angle, brightness, scale, offset; one
                set per try, see `PasteConfig.max_tries`).

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
        # 2. One visible anomaly per box, in box order (later boxes paste over earlier ones where they overlap).
        for box in boxes:
            rows, cols = box_to_slices(box)
            blended, placed = self._paste_visible(result[:, rows, cols], generator)
            result[:, rows, cols] = blended
            mask[:, rows, cols] |= placed
        # 3. Outputs: the box mask covers exactly the pixels the boxes' slices cover, so mask <= box_mask.
        return Synthesis(
            image=result.to(device),
            box_mask=boxes_to_mask(boxes, height, width).to(device),
            mask=mask.float().to(device),
            boxes=boxes.to(device),
        )
