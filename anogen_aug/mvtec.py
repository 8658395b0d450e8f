"""Data sets in the MVTec AD layout: reading one category, and drawing the few-shot support set from it.

Layout (one category)::

    <category>/train/good/*.png
    <category>/test/good/*.png                                   (optional)
    <category>/test/<defect_type>/<stem>.png
    <category>/ground_truth/<defect_type>/<stem>_mask.png         (or <stem>.png; any image suffix)

Few-shot methods take their support anomalies from the test split. `split_support` draws them with a seed and
REMOVES them from the evaluation set: the AnoGen authors' code leaves them in, which lets a detector be tested
on the very images its training anomalies were cut from.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from .checks import check_int
from .images import list_images

__all__ = ["NORMAL", "MVTecFolder", "Sample", "read_mvtec", "split_support"]

#: The folder name of normal images in ``train/`` and ``test/``.
NORMAL = "good"


@dataclass(frozen=True)
class Sample:
    """One test image: its file, its mask file (None for a normal image) and its defect type."""

    image_path: Path
    mask_path: Path | None
    defect_type: str

    @property
    def gt_label(self) -> int:
        """1 for an anomaly, 0 for a normal image."""
        return int(self.defect_type != NORMAL)


@dataclass(frozen=True)
class MVTecFolder:
    """One category in the MVTec AD layout, as `read_mvtec` found it.

    Attributes:
        root: The category folder.
        category: Its name (the folder's name).
        train: The normal train images, sorted.
        test: The test images, by defect type (sorted, ``good`` among them) and file name.
    """

    root: Path
    category: str
    train: tuple[Path, ...]
    test: tuple[Sample, ...]

    @property
    def defect_types(self) -> list[str]:
        """The defect types of the test split, sorted (``good`` is not one)."""
        return sorted({s.defect_type for s in self.test if s.defect_type != NORMAL})

    @property
    def has_test_normals(self) -> bool:
        """Whether the test split holds normal images (``test/good``)."""
        return any(s.defect_type == NORMAL for s in self.test)

    def anomalies(self, defect_type: str) -> list[Sample]:
        """The test anomalies of one defect type, sorted by file name."""
        if defect_type == NORMAL or defect_type not in self.defect_types:
            raise ValueError(f"`defect_type` must be one of {self.defect_types}, got {defect_type!r}")
        return [s for s in self.test if s.defect_type == defect_type]


def read_mvtec(root: str | os.PathLike) -> MVTecFolder:
    """Index one category folder: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.*``.

    The mask of ``test/<type>/<stem>.*`` is ``ground_truth/<type>/<stem>_mask.*``, or ``<stem>.*`` there.

    Args:
        root: The category folder.

    Returns:
        The `MVTecFolder`.

    Raises:
        FileNotFoundError: ``train/good`` or ``test`` is missing, or an anomaly has no mask.
        ValueError: A folder of images is empty.
    """
    root = Path(root)
    if not (root / "train" / NORMAL).is_dir() or not (root / "test").is_dir():
        raise FileNotFoundError(f"`root` is not in the MVTec AD layout (train/good, test/<type>): {root}")
    test = []
    for folder in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        images = list_images(folder, name=f"test/{folder.name}")
        if folder.name == NORMAL:
            test += [Sample(path, None, NORMAL) for path in images]
        else:
            masks = _masks_by_stem(root / "ground_truth" / folder.name)
            test += [Sample(path, _mask_of(path, masks), folder.name) for path in images]
    train = tuple(list_images(root / "train" / NORMAL, name="train/good"))
    return MVTecFolder(root=root, category=root.name, train=train, test=tuple(test))


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no mask folder {folder} for defect type {folder.name!r}")
    return {path.stem: path for path in list_images(folder, name=f"ground_truth/{folder.name}")}


def _mask_of(image_path: Path, masks: dict[str, Path]) -> Path:
    for stem in (f"{image_path.stem}_mask", image_path.stem):
        if stem in masks:
            return masks[stem]
    expected = image_path.parents[2] / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"
    raise FileNotFoundError(f"no mask for {image_path}: expected {expected}")


def split_support(
    test: tuple[Sample, ...] | list[Sample], *, k: int = 3, seed: int = 0
) -> tuple[dict[str, list[Sample]], list[Sample]]:
    """Draw ``k`` support anomalies per defect type and remove them from the evaluation set.

    Args:
        test: The test split (`MVTecFolder.test`).
        k: Support anomalies per defect type (a type with ``k`` images or fewer gives all but one of them, so
            every type keeps a test image).
        seed: Seed of the draw (same seed, same support set); the draw uses its own RNG, never a global one.

    Returns:
        ``(support, evaluation)``: ``{defect_type: [Sample, ...]}`` and the remaining test samples, in order.
    """
    check_int(k, "k")
    rng = random.Random(seed)
    support: dict[str, list[Sample]] = {}
    for defect_type in sorted({s.defect_type for s in test if s.defect_type != NORMAL}):
        candidates = [s for s in test if s.defect_type == defect_type]
        support[defect_type] = rng.sample(candidates, min(k, max(len(candidates) - 1, 1)))
    taken = {s.image_path for samples in support.values() for s in samples}
    return support, [s for s in test if s.image_path not in taken]
