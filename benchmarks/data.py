"""Reading a data set in the MVTec AD layout, and taking the few-shot support set out of its test split.

Layout (one category)::

    <root>/train/good/*.png
    <root>/test/good/*.png
    <root>/test/<defect_type>/<stem>.png
    <root>/ground_truth/<defect_type>/<stem>_mask.png

The support anomalies (k per defect type) are drawn from the test split with a seed and REMOVED from the
evaluation set: the AnoGen authors' code leaves them in, which lets a detector be tested on the very images
its training anomalies were cut from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from anogen_aug.bank import resize_source
from anogen_aug.images import list_images, load_image, load_mask

NORMAL = "good"


@dataclass(frozen=True)
class Sample:
    """One test image: its file, its mask file (``None`` for a normal image) and its defect type."""

    image_path: Path
    mask_path: Path | None
    defect_type: str

    @property
    def gt_label(self) -> int:
        return int(self.defect_type != NORMAL)


@dataclass(frozen=True)
class MVTecFolder:
    """One category of a data set in the MVTec AD layout."""

    root: Path
    category: str
    train: tuple[Path, ...]
    test: tuple[Sample, ...]

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test if s.defect_type != NORMAL})


def read_mvtec(root: str | Path) -> MVTecFolder:
    """Index ``root`` (``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``).

    Raises:
        FileNotFoundError: a folder or an anomaly's mask is missing.
    """
    root = Path(root)
    if not (root / "train" / NORMAL).is_dir() or not (root / "test").is_dir():
        raise FileNotFoundError(f"`root` is not in the MVTec AD layout (train/good, test/<type>): {root}")
    test = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for image_path in list_images(folder, name=f"test/{folder.name}"):
            mask_path = None
            if folder.name != NORMAL:
                mask_path = root / "ground_truth" / folder.name / f"{image_path.stem}_mask.png"
                if not mask_path.is_file():
                    raise FileNotFoundError(f"no mask for {image_path}: expected {mask_path}")
            test.append(Sample(image_path, mask_path, folder.name))
    train = tuple(list_images(root / "train" / NORMAL, name="train/good"))
    return MVTecFolder(root=root, category=root.name, train=train, test=tuple(test))


def split_support(
    test: tuple[Sample, ...] | list[Sample], *, k: int = 3, seed: int = 0
) -> tuple[dict[str, list[Sample]], list[Sample]]:
    """Draw ``k`` support anomalies per defect type and remove them from the evaluation set.

    Args:
        test: The test split (`MVTecFolder.test`).
        k: Support anomalies per defect type (a type with fewer images gives all but one of them).
        seed: Seed of the draw (same seed, same support set).

    Returns:
        ``(support, evaluation)``: ``{defect_type: [Sample, ...]}`` and the remaining test samples, in order.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}")
    rng = random.Random(seed)
    support: dict[str, list[Sample]] = {}
    for defect_type in sorted({s.defect_type for s in test if s.defect_type != NORMAL}):
        candidates = [s for s in test if s.defect_type == defect_type]
        support[defect_type] = rng.sample(candidates, min(k, max(len(candidates) - 1, 1)))
    taken = {s.image_path for samples in support.values() for s in samples}
    return support, [s for s in test if s.image_path not in taken]


def cap(samples: list, limit: int | None, *, seed: int = 0) -> list:
    """At most ``limit`` samples, drawn with ``seed`` and returned in their original order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    keep = set(random.Random(seed).sample(range(len(samples)), limit))
    return [s for i, s in enumerate(samples) if i in keep]


def cap_anomalies(samples: list[Sample], limit: int | None, *, seed: int = 0) -> list[Sample]:
    """Every normal sample and at most ``limit`` anomalous ones (drawn with ``seed``), in original order."""
    anomalous = [s for s in samples if s.gt_label]
    keep = set(map(id, cap(anomalous, limit, seed=seed)))
    return [s for s in samples if not s.gt_label or id(s) in keep]


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``(1, H, W)`` {0, 1} -> ``(1, size, size)``: area >= 0.5, or any overlap if that loses the defect."""
    area = F.interpolate(mask[None], (size, size), mode="area")[0]  # (1, size, size) covered fraction
    resized = (area >= 0.5).float()
    return resized if resized.any() or not mask.any() else (area > 0).float()


def load_sample(sample: Sample, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A test sample's image ``(3, size, size)`` and mask ``(1, size, size)`` (zeros for a normal image).

    The aspect ratio is not kept, as in anomalib's MVTec pipeline.
    """
    image = resize_source(load_image(sample.image_path), (size, size))  # as the bank stores its sources
    if sample.mask_path is None:
        return image, torch.zeros(1, size, size)
    return image, resize_mask(load_mask(sample.mask_path), size)


class EvaluationSet(torch.utils.data.Dataset):
    """Test samples as ``{"image": (3, S, S), "gt_mask": (1, S, S), "gt_label": int}``, read once."""

    def __init__(self, samples: list[Sample], size: int) -> None:
        self.samples = list(samples)
        self.items = []
        for sample in self.samples:
            image, gt_mask = load_sample(sample, size)
            self.items.append({"image": image, "gt_mask": gt_mask, "gt_label": sample.gt_label})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]
