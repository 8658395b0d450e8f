"""`SyntheticAnomalySet`: normal images into which anomalies (bank or Perlin) are put on the fly."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from anogen_aug.bank import resize_source
from anogen_aug.checks import check_probability
from anogen_aug.images import load_image

logger = logging.getLogger(__name__)


class SyntheticAnomalySet(Dataset):
    """Normal images with anomalies put in on the fly: items ``{"image", "gt_mask", "box_mask"}``.

    Per item, with probability ``perlin_p`` a Perlin anomaly (anomalib's `PerlinAnomalyGenerator`, noise
    textures) is drawn; otherwise the image goes through ``augment`` (an `AnoGenAugment`, which adds a bank
    anomaly with its own ``p``); what is left stays normal.

    Args:
        images: Normal images: paths or ``(3, H, W)`` tensors in [0, 1] (loaded and resized once).
        augment: `AnoGenAugment` (or None: Perlin only). Its ``mask_from`` decides the label: ``"box_mask"``
            gives box labels (``box_mask`` = the box), ``"mask"`` exact pixel masks (``box_mask`` empty).
        perlin_p: Probability of a Perlin anomaly instead of ``augment``.
        size: Resize every image to ``(size, size)`` (None: keep; all images must then share one size).

    Items: ``image`` ``(3, H, W)`` in [0, 1]; ``gt_mask`` ``(1, H, W)`` {0, 1}, the training target;
    ``box_mask`` ``(1, H, W)`` {0, 1}, where the target is a box rather than the defect's pixels.
    Randomness comes from the global torch RNG, as in torchvision transforms (`train_segmenter` forks and
    seeds it from its ``generator``).
    """

    def __init__(self, images, *, augment=None, perlin_p: float = 0.0, size: int | None = None) -> None:
        perlin_p = check_probability(perlin_p, "perlin_p")
        if augment is None and perlin_p == 0.0:
            logger.warning("SyntheticAnomalySet without augment and perlin_p=0: every item is normal")
        self.images = [self._load(image, size) for image in images]
        if not self.images:
            raise ValueError("`images` must hold at least one normal image")
        self.augment = augment
        self.perlin_p = perlin_p
        self.perlin = None
        if perlin_p > 0:
            try:
                from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
            except ImportError as error:
                raise ImportError(
                    "Perlin anomalies need anomalib: pip install 'anogen-aug[anomalib]'"
                ) from error

            self.perlin = PerlinAnomalyGenerator(probability=1.0)

    @staticmethod
    def _load(image, size: int | None) -> torch.Tensor:
        image = load_image(image)
        # Resized as `write_bank` resizes sources, so AnoGenAugment finds the samples made from this image.
        return image if size is None else resize_source(image, (size, size))

    def _box_labelled(self, params: dict) -> bool:
        mask_from = getattr(self.augment, "mask_from", "mask")
        return mask_from == "box_mask" or (mask_from == "auto" and not params.get("mask_exact", True))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.images[index]
        empty = torch.zeros(1, *image.shape[-2:])
        if self.perlin is not None and float(torch.rand(())) < self.perlin_p:
            anomalous, mask = self.perlin(image)  # (3, H, W), (1, H, W)
            return {"image": anomalous.clamp(0, 1), "gt_mask": (mask > 0.5).float(), "box_mask": empty}
        if self.augment is None:
            return {"image": image, "gt_mask": empty, "box_mask": empty}
        (out, mask), params = self.augment.forward_with_params(image, tv_tensors.Mask(empty))
        gt_mask = mask.as_subclass(torch.Tensor).float()
        box_mask = gt_mask if params["apply"] and self._box_labelled(params) else empty
        return {"image": out, "gt_mask": gt_mask, "box_mask": box_mask}
