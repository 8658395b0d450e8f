"""The support set: the few real defect images with pixel masks that stage 1 learns from and crop-and-paste cuts.

One rule for both users (`learn_defect_embedding`, `CopyPasteGenerator`): a support set is a SEQUENCE of images
(a list or tuple of paths, PIL images, arrays or ``(3, H, W)`` tensors) or one ``(K, 3, H, W)`` batch, and its
masks are given the same way, one per image. A single image is refused rather than read as a one-image set: a
lone ``(3, H, W)`` tensor could as well be three grey images, and a path string is a sequence of characters;
pass ``[image]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .images import content_hash, load_image, load_mask


@dataclass(frozen=True)
class SupportSet:
    """A loaded and checked support set.

    Attributes:
        images: ``(3, H, W)`` float in [0, 1] each, on the device they were given on.
        masks: ``(1, H, W)`` in {0, 1} each, the height and width of their image, none empty.
        hashes: `content_hash` of each image as given: a file's bytes, or else its 8-bit pixels.
    """

    images: tuple[torch.Tensor, ...]
    masks: tuple[torch.Tensor, ...]
    hashes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def _as_image_list(value: Any, name: str) -> list[Any]:
    """The items of a support sequence or of a ``(K, C, H, W)`` batch; anything else raises ``TypeError``."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4:
        return list(value)  # a batch (K, C, H, W)
    single = (str, os.PathLike, Image.Image, torch.Tensor, np.ndarray)
    if isinstance(value, single) or not isinstance(value, Sequence):
        raise TypeError(
            f"`{name}` must be a sequence (list) of images or a (K, C, H, W) batch, got {type(value).__name__}; "
            "wrap a single image in a list"
        )
    return list(value)


def load_support_set(
    images: Sequence[Any], masks: Sequence[Any], *, names: tuple[str, str] = ("images", "masks")
) -> SupportSet:
    """Load and check a support set (see the module docstring for what ``images`` and ``masks`` may be).

    Args:
        images: The defect images.
        masks: One pixel mask per image, the same height and width; any non-zero pixel is defect.
        names: The caller's argument names, used in errors (``"`masks[1]` is empty ..."``).

    Returns:
        The `SupportSet`.

    Raises:
        TypeError: ``images`` or ``masks`` is not a sequence or batch of images.
        ValueError: No image; not one mask per image; a mask of another size than its image; an empty mask.
    """
    images_name, masks_name = names
    items, mask_items = _as_image_list(images, images_name), _as_image_list(masks, masks_name)
    if not items:
        raise ValueError(f"`{images_name}` must hold at least one defect image, got none")
    if len(mask_items) != len(items):
        raise ValueError(
            f"`{masks_name}` must hold one mask per image: got {len(items)} image(s) and {len(mask_items)} mask(s)"
        )
    loaded_images, loaded_masks = [], []
    for i, (image, mask) in enumerate(zip(items, mask_items)):
        image = load_image(image, name=f"{images_name}[{i}]")
        mask = load_mask(mask, name=f"{masks_name}[{i}]")
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"`{masks_name}[{i}]` must have the same height and width as `{images_name}[{i}]` "
                f"({image.shape[-2]}x{image.shape[-1]}), got {mask.shape[-2]}x{mask.shape[-1]}"
            )
        if not mask.any():
            raise ValueError(
                f"`{masks_name}[{i}]` is empty (no non-zero pixel): every support image needs its defect marked"
            )
        loaded_images.append(image)
        loaded_masks.append(mask)
    hashes = tuple(content_hash(image) for image in items)
    return SupportSet(images=tuple(loaded_images), masks=tuple(loaded_masks), hashes=hashes)
