"""Reading a bank: `AnomalyBank`, a torch `Dataset` of `BankSample`, and the one rule for "a bank or its path"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..checks import check_bool
from ..images import content_hash, load_image, load_mask
from . import export
from .manifest import MANIFEST, check_layout, read_bank_info, read_manifest, resize_source
from .records import FILE_FIELDS, record_file


@dataclass(frozen=True)
class BankSample:
    """One bank sample.

    Attributes:
        image: ``(3, H, W)`` float in [0, 1], the image with the anomaly.
        box_mask: ``(1, H, W)`` {0, 1}. mask: ``(1, H, W)`` {0, 1}, the pixel mask (exact when ``mask_exact``).
        mask_exact: True for crop-and-paste (exact), False for diffusion (estimated).
        boxes: ``(N, 4)`` XYXY pixels.
        source_path: The clean source image's path (None if not recorded). source_hash: its file hash.
        record: The manifest record.
    """

    image: torch.Tensor
    box_mask: torch.Tensor
    mask: torch.Tensor
    mask_exact: bool
    boxes: torch.Tensor
    source_path: str | None
    source_hash: str
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return self.record["id"]


class AnomalyBank(Dataset):
    """Read a bank folder as a torch `Dataset` of `BankSample`.

    Args:
        path: The bank folder (holding ``manifest.jsonl``).
        category, defect_type: Keep only records with these values.
        boxes_only: Hide the pixel masks: every sample's ``mask`` is its box mask and ``mask_exact`` is False,
            so a crop-and-paste bank is labelled as the paper's diffusion generator labels its output (by the
            box alone) and consumers treat its box region as the generated change. For testing box labels and
            tau on a bank whose exact masks are known.

    Raises:
        FileNotFoundError: ``path`` holds no manifest.
        ValueError: A record is broken: a field missing or of the wrong type, or a file path that is absolute or
            leaves the bank (the error names the manifest, line, record and field; `verify_bank` repairs).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        category: str | None = None,
        defect_type: str | None = None,
        boxes_only: bool = False,
    ) -> None:
        self.root = Path(path)
        self.boxes_only = check_bool(boxes_only, "boxes_only")
        if not (self.root / MANIFEST).is_file():
            raise FileNotFoundError(
                f"`path`: {self.root} is not an anomaly bank (no {MANIFEST}); write one with `write_bank` or "
                "`anogen-aug generate --out FOLDER`"
            )
        self.category, self.defect_type = category, defect_type
        check_layout(self.root)
        every = read_manifest(self.root / MANIFEST)
        self.records = [
            r
            for r in every
            if (category is None or r.get("category") == category)
            and (defect_type is None or r.get("defect_type") == defect_type)
        ]
        if every and not self.records:
            present = sorted({f"{r.get('category')}/{r.get('defect_type')}" for r in every})
            raise ValueError(
                f"bank {self.root} holds no record with category={category!r}, defect_type={defect_type!r}; "
                f"it holds {', '.join(present)}"
            )
        self.info = read_bank_info(self.root)
        self._by_source: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            source = record.get("source") or {}
            for key in {source.get("hash"), source.get("pixel_hash")} - {None}:
                self._by_source.setdefault(key, []).append(index)
        self._verified: set[str] = set()

    @classmethod
    def open(
        cls,
        bank: AnomalyBank | str | os.PathLike,
        *,
        category: str | None = None,
        defect_type: str | None = None,
        boxes_only: bool | None = None,
    ) -> AnomalyBank:
        """An `AnomalyBank` from a bank or the path of one: the library's one rule wherever it takes either.

        - a path: the bank folder, read with the filters (``boxes_only`` None is False);
        - an `AnomalyBank` and no filter: that very bank;
        - an `AnomalyBank` and a filter: its folder read again, each filter given replacing the bank's own for
          that field and the bank's other filters kept (``boxes_only`` counts as a filter when it differs).

        Raises:
            TypeError: ``bank`` is neither. ValueError: no record passes the filters (naming what the bank holds).
        """
        if isinstance(bank, (str, os.PathLike)):
            return cls(
                bank,
                category=category,
                defect_type=defect_type,
                boxes_only=False if boxes_only is None else boxes_only,
            )
        if not isinstance(bank, AnomalyBank):
            raise TypeError(f"`bank` must be an AnomalyBank or a bank folder path, got {type(bank).__name__}")
        boxes_only = bank.boxes_only if boxes_only is None else check_bool(boxes_only, "boxes_only")
        if category is None and defect_type is None and boxes_only == bank.boxes_only:
            return bank
        return cls(
            bank.root,
            category=bank.category if category is None else category,
            defect_type=bank.defect_type if defect_type is None else defect_type,
            boxes_only=boxes_only,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        hidden = ", boxes_only=True" if self.boxes_only else ""
        return f"AnomalyBank({str(self.root)!r}, n={len(self)}{hidden})"

    def _record(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"bank index {index} out of range for a bank of {len(self)} samples")
        return self.records[index]

    def file(self, index: int, field: str) -> Path:
        """The file of sample ``index`` named by ``field`` (``"image"``, ``"box_mask"`` or ``"mask"``), resolved
        inside the bank; a path leading out of it (a symlink included) raises ``ValueError`` naming the record.
        With ``boxes_only`` the ``"mask"`` of a sample is its box mask file."""
        if field not in FILE_FIELDS:
            raise ValueError(f"`field` must be one of {list(FILE_FIELDS)}, got {field!r}")
        if self.boxes_only and field == "mask":
            field = "box_mask"
        return record_file(self.root, self._record(index), field)

    def __getitem__(self, index: int) -> BankSample:
        record = self._record(index)
        source = record.get("source") or {}
        files = {field: self.file(index, field) for field in FILE_FIELDS}  # all checked before a byte is read
        return BankSample(
            image=load_image(files["image"], name=f"bank sample {record['id']!r} image"),
            box_mask=load_mask(files["box_mask"], name=f"bank sample {record['id']!r} box_mask"),
            mask=load_mask(files["mask"], name=f"bank sample {record['id']!r} mask"),
            mask_exact=bool(record.get("mask_exact", False)) and not self.boxes_only,
            boxes=torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
            source_path=source.get("path"),
            source_hash=source.get("hash", ""),
            record=record,
        )

    def indices_for_source(self, hash: str) -> list[int]:  # noqa: A002 (the documented name)
        """Indices of the samples generated from a source, by its file hash or its pixel hash."""
        return list(self._by_source.get(hash, []))

    def load_source(self, index: int) -> torch.Tensor:
        """The clean source image of sample ``index``, ``(3, H, W)``, resized to the sample's size.

        ``source.path`` is the one path of a record outside the bank (the machine that wrote it): it is read
        only when its file's hash equals ``source.hash``, so a manifest cannot make this read any other file.
        """
        record = self._record(index)
        source = record.get("source") or {}
        path, expected = source.get("path"), source.get("hash")
        where = f"{self.root / MANIFEST}: record {record['id']!r}, field 'source'"
        if not isinstance(path, str) or not Path(path).is_absolute() or not isinstance(expected, str):
            raise ValueError(f"{where} must hold an absolute 'path' and its 'hash', got {source!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{where}: the source image {path!r} is not there (moved?)")
        if path not in self._verified:
            if content_hash(path) != expected:
                raise ValueError(f"{where}: source {path} changed since the bank was written (hash)")
            self._verified.add(path)
        return resize_source(load_image(path), (record["height"], record["width"]))

    def to_hf_dataset(self):
        """A Hugging Face ``datasets.Dataset`` with Image features (needs the extra ``anogen-aug[datasets]``)."""
        return export.to_hf_dataset(self)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        split: str = "train",
        commit_message: str | None = None,
    ):
        """Push the bank as a Hub dataset repo: ``data/<split>-NNNNN-of-NNNNN.parquet`` (the PNGs embedded) and a
        dataset card, the layout the Hub's dataset viewer and ``datasets.load_dataset(repo_id)`` open, with the
        columns of `to_hf_dataset`. Re-pushing a split replaces its files. Returns the commit info.

        Needs the extra ``anogen-aug[datasets]``. Every file is checked inside the bank before one is read.
        """
        message = commit_message or f"Upload anomaly bank ({len(self)} samples) with anogen-aug"
        return export.push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            split=split,
            commit_message=message,
        )
