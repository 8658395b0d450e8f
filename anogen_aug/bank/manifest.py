"""The bank's on-disk format: its layout, the record fields, the append-only manifest and ``bank.json``.

Layout of a bank folder::

    bank.json                 bank-level info (format, version, created-by)
    manifest.jsonl            one JSON record per sample, appended only after the sample's files exist
    images/<id>.png           the image with the anomaly
    masks/<id>_box.png        the box mask
    masks/<id>_mask.png       the pixel mask (exact for crop-and-paste, estimated for diffusion)

Record fields: ``id``, ``image``, ``box_mask``, ``mask`` (paths relative to the bank), ``mask_exact``,
``source`` (``path``, ``hash`` of the file, ``pixel_hash`` of the 8-bit pixels as stored, see `resize_source`),
``category``, ``defect_type``, ``boxes`` (XYXY pixels of the stored image), ``width``, ``height``, ``generator``
(``name``, ``settings``), ``seed`` (of this sample's generator), ``embedding_id``, ``box_index``,
``sample_index``, ``bank_seed``, ``box_sampler`` (its settings, or null), and since 0.1 ``mask_area`` and
``contrast`` (optional; `anogen_aug.visibility`).

The manifest is append-only JSON lines: a crash mid-append leaves at worst a torn last line, which the reader
skips and the next writer cuts (`repair_manifest`) before it appends. A writer holds the bank's lock
(``.anogen-aug.lock``, `anogen_aug.locking`) and removes the temp files interrupted writes left (`remove_litter`).
Records are checked as read (`anogen_aug.bank.records`): a record missing a field, or naming a file outside the
bank, is refused with an error naming the file, the line, the record and the field.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import fsync_dir, write_bytes_atomic
from ..images import quantize, resize_image
from ..locking import LOCK_FILE, FolderLock
from ..paths import resolve_inside
from .records import FILE_FIELDS, describe, record_problem, repair_hint

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
BANK_INFO = "bank.json"
FORMAT_VERSION = 1
LITTER = (".*.tmp", "*.merge.tmp")  # temp files of interrupted atomic writes (and of merges before 0.1)


def resize_source(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a source ``(3, H, W)`` to ``size`` (bicubic, antialiased) on the 8-bit grid (as the bank stores it)."""
    if size is not None:
        image = resize_image(image, size, mode="bicubic")
    return quantize(image)


@dataclass(frozen=True)
class ManifestLine:
    """One line of a manifest as read: ``kind`` is ``"record"`` (usable), ``"torn"`` (the last line, cut short
    by a crash), ``"duplicate"`` (an id seen on an earlier line) or ``"invalid"`` (``problem`` says why)."""

    number: int
    text: str
    record: Any
    kind: str
    problem: str | None = None


def scan_manifest(path: str | os.PathLike) -> list[ManifestLine]:
    """Every non-blank line of a ``manifest.jsonl``, classified; never raises on content (`verify_bank` uses it).

    ``problem`` names the line, the record and the field, never the file (callers add it).
    """
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    scanned, first_line = [], {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the append was cut short
                problem = f"line {number} is a torn last line (an interrupted write)"
                scanned.append(ManifestLine(number, text, None, "torn", problem))
            else:
                problem = f"line {number} is not valid JSON: {text[:80]!r}"
                scanned.append(ManifestLine(number, text, None, "invalid", problem))
            continue
        bad = record_problem(record)
        if bad is not None:
            scanned.append(
                ManifestLine(number, text, record, "invalid", f"{describe(record, bad[0], number)} {bad[1]}")
            )
        elif record["id"] in first_line:
            problem = f"line {number}: record {record['id']!r} duplicates line {first_line[record['id']]}"
            scanned.append(ManifestLine(number, text, record, "duplicate", problem))
        else:
            first_line[record["id"]] = number
            scanned.append(ManifestLine(number, text, record, "record"))
    return scanned


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``manifest.jsonl``; a torn last line (a crash mid-append) and later duplicates of an id are
    skipped with a warning.

    Raises:
        ValueError: A line is not valid JSON or not a usable record (naming the file, line, record and field,
            and what to do).
    """
    records = []
    for line in scan_manifest(path):
        if line.kind == "record":
            records.append(line.record)
        elif line.kind == "invalid":
            raise ValueError(f"{path}: {line.problem}; {repair_hint(Path(path).parent)}")
        else:
            logger.warning("%s: %s; it is ignored", path, line.problem)
    return records


def repair_manifest(path: str | os.PathLike) -> None:
    """Cut a torn last line (or terminate a complete one) so that appends start on a fresh line."""
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
        repaired = data + b"\n"
    except json.JSONDecodeError:
        logger.warning("%s: removing a torn last line (an interrupted write); it is regenerated", path)
        repaired = data[:cut]
    write_bytes_atomic(repaired, path)


def read_bank_info(root: str | os.PathLike) -> dict[str, Any]:
    """The ``bank.json`` of a bank folder (``{}`` when it has none)."""
    path = Path(root) / BANK_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it and it is rewritten") from None
    if not isinstance(info, dict):
        raise ValueError(
            f"{path} must hold a JSON object, got {type(info).__name__}; delete it to rewrite it"
        )
    return info


def _write_bank_info(root: Path) -> None:
    from .. import __version__

    info = {"format": "anogen-aug-bank", "version": FORMAT_VERSION, "created_by": f"anogen-aug {__version__}"}
    write_bytes_atomic(json.dumps(info, indent=2).encode() + b"\n", root / BANK_INFO)


def check_layout(root: str | os.PathLike) -> None:
    """Refuse (``ValueError``) a bank whose own files or folders (``bank.json``, ``manifest.jsonl``, ``images/``,
    ``masks/``) are symlinks leading out of it: nothing is read, written or removed through them."""
    for name in (BANK_INFO, MANIFEST, "images", "masks"):
        resolve_inside(root, name, name=f"the bank's {name} ({Path(root) / name})")


def sample_folders(root: str | os.PathLike) -> list[Path]:
    """The bank's ``images/`` and ``masks/`` (those present), after `check_layout`."""
    check_layout(root)
    return [Path(root) / name for name in ("images", "masks") if (Path(root) / name).is_dir()]


def find_litter(root: str | os.PathLike) -> list[Path]:
    """The temp files interrupted writes left in a bank (its root, ``images/``, ``masks/``), sorted."""
    root = Path(root)
    found = {
        f for folder in (root, *sample_folders(root)) for pattern in LITTER for f in folder.glob(pattern)
    }
    return sorted(f for f in found if f.is_file() or f.is_symlink())


def remove_litter(root: str | os.PathLike) -> list[Path]:
    """Remove `find_litter`'s files and return them. Only call it holding the bank's lock: a live writer's temp
    files look the same."""
    litter = find_litter(root)
    for path in litter:
        path.unlink(missing_ok=True)
    if litter:
        logger.info("%s: removed %d temp file(s) of interrupted writes", root, len(litter))
    return litter


class ManifestWriter:
    """Opens a bank folder for appending: the bank's lock taken (`anogen_aug.locking`), temp files of interrupted
    writes removed, ``bank.json`` written once, a torn last line repaired, the records already there read
    (``records``, ``done`` ids); then appends records as single lines, each fsynced.

    Used as a context manager by `write_bank` and `merge_banks`. Leaving it on an error before any record exists
    removes what it created (no empty skeleton bank is left behind).

    Raises:
        FolderLockedError: Another process is writing the bank.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = root = Path(root)
        self._created = [p for p in (root, *root.parents) if not p.exists()]  # the folders the lock creates
        self._lock = FolderLock(root, what="bank")
        self._lock.__enter__()
        try:
            self._fresh = not any(p.name != LOCK_FILE for p in root.iterdir())
            check_layout(root)  # nothing is written through a symlink leading out of the bank
            remove_litter(root)
            if not (root / BANK_INFO).is_file():
                _write_bank_info(root)
            repair_manifest(root / MANIFEST)
            self.records = read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else []
            self.done = {r["id"] for r in self.records}
            self._stream = open(root / MANIFEST, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record``, whose files must already be written (their folders are fsynced first)."""
        for folder in {self.root / Path(record[key]).parent for key in FILE_FIELDS}:
            fsync_dir(folder)  # the renames of the sample's files are durable before the record is
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self.done.add(record["id"])

    def close(self, failed: bool = False) -> None:
        """Close the manifest and release the lock; ``failed`` with no record written removes the skeleton."""
        if self._stream.closed:
            return
        self._stream.close()
        skeleton = failed and self._fresh and not self.done
        if skeleton:
            for name in (BANK_INFO, MANIFEST):
                (self.root / name).unlink(missing_ok=True)
            for name in ("images", "masks"):  # only this failed call's files: the folder was empty
                shutil.rmtree(self.root / name, ignore_errors=True)
        self._lock.__exit__(None, None, None)
        for folder in self._created if skeleton else ():
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
