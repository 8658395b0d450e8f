"""The plan of a whole-data-set run: one job per (category, defect type), and the support draw it learns from.

The support anomalies of every defect type are drawn by `anogen_aug.mvtec.split_support` (k per type, seeded):
the draw the downstream benchmark uses to keep them out of the test split. It is recorded in ``OUT/support.json``
so an evaluation can exclude exactly those files, and so a relaunch refuses to learn from another draw::

    {"format_version": 1, "k": 3, "seed": 0,
     "categories": {"bottle": {"folder": "/data/mvtec/bottle",
                               "support": {"broken_large": [{"image": "test/broken_large/003.png",
                                                             "mask": "ground_truth/broken_large/003_mask.png"}]}}},
     "unreadable": {"cable": "no mask for ..."}}

Paths inside a category are relative to its folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..checks import check_int, is_int
from ..mvtec import NORMAL, Sample, read_mvtec, split_support

SUPPORT_FILE = "support.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DefectJob:
    """One defect type of one category: what stage 1 learns from and stage 2 generates onto.

    Attributes:
        category: The category (its folder's name).
        defect_type: The defect type (its ``test/`` folder's name).
        folder: The category folder.
        support: The support anomalies drawn by `split_support` (image and mask files).
        normals: The category's normal train images (``train/good``), the sources of its bank.
    """

    category: str
    defect_type: str
    folder: Path
    support: tuple[Sample, ...]
    normals: tuple[Path, ...]

    @property
    def name(self) -> str:
        """``<category>_<defect_type>``: the job's folder name under ``embeddings/``, ``banks/``, ``sheets/``."""
        return f"{self.category}_{self.defect_type}"


@dataclass(frozen=True)
class DatasetPlan:
    """Every job of a data set, sorted by name, with the draw they share.

    Attributes:
        k: Support anomalies per defect type.
        seed: Seed of the support draw.
        jobs: One `DefectJob` per defect type, sorted by name (rank ``r`` of ``w`` takes every ``w``-th).
        unreadable: ``{category: error}`` for category folders that are not in the MVTec AD layout.
    """

    k: int
    seed: int
    jobs: tuple[DefectJob, ...]
    unreadable: dict[str, str]

    def support_record(self) -> dict[str, Any]:
        """The content of ``support.json`` (see the module docstring)."""
        categories: dict[str, Any] = {}
        for job in self.jobs:
            entry = categories.setdefault(job.category, {"folder": str(job.folder.resolve()), "support": {}})
            entry["support"][job.defect_type] = [
                {"image": _relative(s.image_path, job.folder), "mask": _relative(s.mask_path, job.folder)}
                for s in job.support
            ]
        return {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "seed": self.seed,
            "categories": categories,
            "unreadable": dict(self.unreadable),
        }


def plan_dataset(
    root: str | os.PathLike, *, k: int = 3, seed: int = 0, categories: Sequence[str] | None = None
) -> DatasetPlan:
    """One job per defect type of an MVTec-AD-layout folder: one category, or a folder of categories.

    A folder of categories is every sub-folder holding ``train/`` or ``test/`` (others, e.g. licence files, are
    ignored). A category that `read_mvtec` cannot read (a missing mask, no ``train/good``) is reported in
    ``unreadable`` and the other categories are planned.

    Args:
        root: A category folder (it holds ``train/good``) or a folder of them.
        k: Support anomalies per defect type (`split_support`: a type with ``k`` images or fewer gives all but one).
        seed: Seed of the support draw.
        categories: Only these categories (names of sub-folders); None for all.

    Returns:
        The `DatasetPlan`.
    """
    check_int(k, "k")
    if not is_int(seed):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    folders = _category_folders(Path(root), categories)
    jobs, unreadable = [], {}
    for folder in folders:
        try:
            mvtec = read_mvtec(folder)
        except (FileNotFoundError, ValueError, OSError) as error:
            unreadable[folder.name] = f"{type(error).__name__}: {error}"
            continue
        support, _ = split_support(mvtec.test, k=k, seed=seed)
        jobs += [
            DefectJob(mvtec.category, defect_type, folder, tuple(samples), mvtec.train)
            for defect_type, samples in support.items()
        ]
    return DatasetPlan(k=k, seed=seed, jobs=tuple(sorted(jobs, key=lambda j: j.name)), unreadable=unreadable)


def _category_folders(root: Path, categories: Sequence[str] | None) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"`root`: no such folder: {root}")
    if (root / "train" / NORMAL).is_dir():  # one category
        found = {root.name: root}
    else:
        found = {
            p.name: p
            for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and ((p / "train").is_dir() or (p / "test").is_dir())
        }
    if not found:
        raise FileNotFoundError(
            f"`root` is neither an MVTec AD category (train/good, test/<type>) nor a folder of them: {root}"
        )
    if categories is None:
        return list(found.values())
    if isinstance(categories, str) or not all(isinstance(c, str) for c in categories):
        raise TypeError(f"`categories` must be a list of category names, got {categories!r}")
    missing = sorted(set(categories) - set(found))
    if missing:
        raise ValueError(f"`categories`: {missing} not found under {root}; found {sorted(found)}")
    return [found[name] for name in sorted(set(categories))]


def _relative(path: Path | None, folder: Path) -> str | None:
    return None if path is None else path.relative_to(folder).as_posix()


def record_support(plan: DatasetPlan, out: str | os.PathLike, *, write: bool) -> Path:
    """Check ``plan``'s draw against ``OUT/support.json`` and merge it in (write it when ``write``).

    Every rank checks; only the main process writes. Categories already recorded must have been drawn the same
    way (same k, seed and files): learning from another draw into the same folder would mix two support sets.

    Raises:
        ValueError: ``support.json`` records another draw.
    """
    path = Path(out) / SUPPORT_FILE
    record = plan.support_record()
    if path.is_file():
        saved = read_support_json(path)
        clash = [
            name
            for name, entry in record["categories"].items()
            if name in saved["categories"] and saved["categories"][name] != entry
        ]
        if (saved["k"], saved["seed"]) != (plan.k, plan.seed) or clash:
            raise ValueError(
                f"{path} records another support draw (k={saved['k']}, seed={saved['seed']}"
                f"{', categories ' + str(clash) if clash else ''}) than this run's (k={plan.k}, seed={plan.seed}): "
                "pass the same k and support seed, or use another output folder"
            )
        record["categories"] = {**saved["categories"], **record["categories"]}
        record["unreadable"] = {
            name: error
            for name, error in {**saved.get("unreadable", {}), **record["unreadable"]}.items()
            if name not in record["categories"]
        }
    if write:
        write_text_atomic(json.dumps(record, indent=2, sort_keys=True) + "\n", path)
    return path


def read_support_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``support.json`` (or the one in a run's output folder), e.g. to exclude its files from a test set.

    Returns:
        The record (module docstring); ``support_files(record)`` lists its image files as absolute paths.
    """
    path = Path(path)
    path = path / SUPPORT_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no {SUPPORT_FILE} at {path}: run `anogen-aug learn-all` first")
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a support.json of format {FORMAT_VERSION}")
    return record


def support_files(record: dict[str, Any]) -> dict[str, dict[str, list[Path]]]:
    """``{category: {defect_type: [image file, ...]}}`` of a `read_support_json` record, as absolute paths.

    A path that would leave its category folder (``..``, an absolute path) is refused.
    """
    files: dict[str, dict[str, list[Path]]] = {}
    for category, entry in record["categories"].items():
        folder = Path(entry["folder"]).resolve()
        for defect_type, samples in entry["support"].items():
            paths = [(folder / s["image"]).resolve() for s in samples]
            outside = [str(p) for p in paths if not p.is_relative_to(folder)]
            if outside:
                raise ValueError(
                    f"support.json: {category}/{defect_type} names files outside {folder}: {outside}"
                )
            files.setdefault(category, {})[defect_type] = paths
    return files
