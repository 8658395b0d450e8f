"""anomalib items and batches that carry what weak supervision needs: the box, the clean source, a flag.

anomalib's `ImageItem` / `ImageBatch` validate ``gt_mask`` to bool, so a box ("weak") mask cannot live there;
and `ImageBatch.collate` keeps only the fields that are not None in the FIRST item of a batch. These
subclasses add three fields that every AnoGen training item fills (zeros / the image itself / False for
normal items), so no field is ever dropped by collation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from anomalib.data import ImageBatch, ImageItem

from anogen_aug.masks import resize_mask

EXTRA_FIELDS = ("box_mask", "source_image", "is_generated")


@dataclass
class AnoGenImageItem(ImageItem):
    """An `ImageItem` with the box mask, the clean source image and whether the item was generated.

    Attributes:
        box_mask: ``(1, H, W)`` float {0, 1}: the boxes of a generated anomaly (zeros for normal items).
        source_image: ``(3, H, W)`` float [0, 1]: the clean normal image the anomaly was made from (the
            image itself for normal items); DRAEM's reconstruction target, DeSTSeg's teacher input.
        is_generated: 0-dim bool tensor: True for items taken from the anomaly bank.
    """

    box_mask: torch.Tensor | None = None
    source_image: torch.Tensor | None = None
    is_generated: torch.Tensor | None = None

    def to_numpy(self):
        """Convert to anomalib's `NumpyImageItem`, dropping the extra fields (it has no place for them)."""
        return ImageItem(**_parent_values(self, ImageItem)).to_numpy()


@dataclass
class AnoGenImageBatch(ImageBatch):
    """An `ImageBatch` of `AnoGenImageItem`: ``box_mask (B, 1, H, W)``, ``source_image (B, 3, H, W)``,
    ``is_generated (B,)`` bool."""

    item_class = AnoGenImageItem

    box_mask: torch.Tensor | None = None
    source_image: torch.Tensor | None = None
    is_generated: torch.Tensor | None = None

    def to_numpy(self):
        """Convert to anomalib's `NumpyImageBatch`, dropping the extra fields."""
        return ImageBatch(**_parent_values(self, ImageBatch)).to_numpy()


def _parent_values(instance, parent: type) -> dict:
    return {f.name: getattr(instance, f.name) for f in fields(parent)}


def _plain(tensor: torch.Tensor, rows: int, channels: int) -> torch.Tensor:
    """A tv_tensor as a plain ``(rows, channels, H, W)`` tensor."""
    return tensor.as_subclass(torch.Tensor).reshape(rows, channels, *tensor.shape[-2:])


def training_fields(batch) -> dict[str, torch.Tensor] | None:
    """The AnoGen fields of a train batch at the size and device of ``batch.image``.

    Returns:
        None when the batch lacks them (a plain anomalib batch); else ``source_image (B, 3, H, W)`` float,
        ``gt_mask`` and ``box_mask`` ``(B, 1, H, W)`` float {0, 1} and ``is_generated (B,)`` bool.
    """
    if any(getattr(batch, name, None) is None for name in EXTRA_FIELDS):
        return None
    image = batch.image
    rows, size, device = len(image), tuple(image.shape[-2:]), image.device
    source = _plain(batch.source_image, rows, 3).to(device, torch.float32)
    if tuple(source.shape[-2:]) != size:  # the pre-processor resized only `image`
        source = F.interpolate(source, size=size, mode="bilinear", align_corners=False, antialias=True)
    box_mask = resize_mask(_plain(batch.box_mask, rows, 1).float(), size, rule="majority").to(device)
    gt_mask = torch.zeros_like(box_mask)
    if batch.gt_mask is not None:
        gt_mask = resize_mask(_plain(batch.gt_mask, rows, 1).float(), size, rule="majority").to(device)
    is_generated = batch.is_generated.as_subclass(torch.Tensor).reshape(rows).to(device).bool()
    return {"source_image": source, "gt_mask": gt_mask, "box_mask": box_mask, "is_generated": is_generated}


def anomaly_targets(batch, image: torch.Tensor):
    """What a training step needs from a batch: ``(source, gt_mask, weak_mask, is_generated)``.

    ``source`` is the clean image (the batch's ``source_image``, or ``image`` for a plain anomalib batch),
    ``gt_mask`` the anomaly mask, ``weak_mask`` the boxes of generated rows (where the tau mask applies), all
    ``(B, ...)`` float; ``is_generated`` ``(B,)`` bool, or None for a plain batch (no AnoGen fields).
    """
    fields = training_fields(batch)
    if fields is None:
        mask = torch.zeros(len(image), 1, *image.shape[-2:], device=image.device)
        return image, mask, torch.zeros_like(mask), None
    weak_mask = fields["box_mask"] * fields["is_generated"].view(-1, 1, 1, 1)
    return fields["source_image"], fields["gt_mask"], weak_mask, fields["is_generated"]
