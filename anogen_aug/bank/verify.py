"""`verify_bank`: check every record of a bank against its files, and optionally repair what is broken.

A record is good when its line is a whole JSON record with every field the library reads (`records`), its three
files stay inside the bank (`anogen_aug.paths`), exist and decode, their sizes are the record's ``width`` x
``height``, the box mask is the union of the record's ``boxes`` and the pixel mask lies inside it (the
`Synthesis` contract), and the source hash in its id agrees with ``source.hash``. Orphans are the files under
``images/`` and ``masks/`` no good record names (a sample written but never recorded, files of broken records)
and the temp files of interrupted writes.

Repair rewrites the manifest with the good records' lines unchanged (atomically), then removes the orphans; good
records and their files are never touched. The bank's lock is held throughout (`anogen_aug.locking`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..boxes.geometry import boxes_to_mask
from ..images import load_image, load_mask
from ..locking import FolderLock, FolderLockedError
from .manifest import MANIFEST, check_layout, find_litter, sample_folders, scan_manifest
from .records import FILE_FIELDS, describe, record_file

_ID = re.compile(r"^[A-Za-z0-9_.]+-(?P<hash>[0-9a-f]{10})-b(?P<box>\d+)-s(?P<sample>\d+)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_bank` found.

    Attributes:
        root: The bank folder.
        records: How many records passed every check.
        broken: One line per broken manifest line: where (line, record, field) and what is wrong.
        orphans: Files no good record names, and temp files of interrupted writes.
        repaired: True when the broken records were dropped and the orphans removed.
    """

    root: Path
    records: int
    broken: tuple[str, ...]
    orphans: tuple[Path, ...]
    repaired: bool

    @property
    def ok(self) -> bool:
        """True when nothing was broken and nothing orphaned."""
        return not self.broken and not self.orphans

    def __str__(self) -> str:
        lines = [
            f"bank {self.root}: {self.records} good record(s), {len(self.broken)} broken, "
            f"{len(self.orphans)} orphan file(s)"
        ]
        lines += [f"  broken: {problem}" for problem in self.broken]
        lines += [f"  orphan: {path.relative_to(self.root)}" for path in self.orphans]
        if self.repaired and not self.ok:
            lines.append(
                f"repaired: dropped {len(self.broken)} record line(s), removed {len(self.orphans)} file(s)"
            )
        elif not self.ok:
            lines.append(f"run `anogen-aug verify {self.root} --repair` to drop them (good records are kept)")
        return "\n".join(lines)


def verify_bank(path: str | os.PathLike, *, repair: bool = False) -> VerifyReport:
    """Check every record of the bank at ``path``; with ``repair``, drop broken records and remove orphans.

    Raises:
        FileNotFoundError: ``path`` holds no ``manifest.jsonl``.
        FolderLockedError: Another process is writing the bank.
    """
    root = Path(path)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"`path`: {root} is not an anomaly bank (no {MANIFEST})")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(FolderLock(root, what="bank"))
        except FolderLockedError:
            raise
        except OSError as error:  # a read-only bank: nobody can be writing it, so a check needs no lock
            if repair or error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
        return _verify(root, repair=repair)


def _verify(root: Path, *, repair: bool) -> VerifyReport:
    check_layout(root)
    good, broken = [], []
    for line in scan_manifest(root / MANIFEST):
        problem = line.problem if line.kind != "record" else _sample_problem(root, line.record, line.number)
        if problem is None:
            good.append(line)
        else:
            broken.append(problem)
    named = {root.resolve() / line.record[key] for line in good for key in FILE_FIELDS}
    named |= {record_file(root, line.record, key) for line in good for key in FILE_FIELDS}
    files = [
        f for folder in sample_folders(root) for f in folder.rglob("*") if f.is_symlink() or not f.is_dir()
    ]
    orphans = [f for f in files if root.resolve() / f.relative_to(root) not in named]
    orphans = sorted(set(orphans) | set(find_litter(root)))
    if repair:
        if broken:
            write_text_atomic("".join(line.text + "\n" for line in good), root / MANIFEST)
        for orphan in orphans:
            orphan.unlink(missing_ok=True)
    return VerifyReport(root, len(good), tuple(broken), tuple(orphans), repaired=repair)


def _sample_problem(root: Path, record: dict[str, Any], number: int) -> str | None:
    """What is wrong with a (well-formed) record's files, or None."""
    try:
        files = {key: record_file(root, record, key) for key in FILE_FIELDS}
    except ValueError as error:
        return str(error)
    size = (record["height"], record["width"])
    loaded = {}
    for key, path in files.items():
        where = describe(record, key, number)
        if not path.is_file():
            return f"{where}: the file {record[key]} is missing"
        try:
            loaded[key] = (load_image if key == "image" else load_mask)(path, name=record[key])
        except (ValueError, OSError) as error:
            return f"{where}: the file {record[key]} does not decode ({error})"
        if tuple(loaded[key].shape[-2:]) != size:
            found = "x".join(map(str, loaded[key].shape[-1:-3:-1]))
            return f"{where}: the file is {found} pixels, the record says {size[1]}x{size[0]}"
    boxes = torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
    if not torch.equal(loaded["box_mask"], boxes_to_mask(boxes, *size)):
        return f"{describe(record, 'box_mask', number)}: the box mask is not the union of the record's boxes"
    if (loaded["mask"].bool() & ~loaded["box_mask"].bool()).any():
        return f"{describe(record, 'mask', number)}: the pixel mask reaches outside the box mask"
    return _id_problem(record, number)


def _id_problem(record: dict[str, Any], number: int) -> str | None:
    """The id written by `write_bank` names the source hash, box and sample: they must agree with the fields."""
    match = _ID.match(record["id"])
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    if match is None or not isinstance(source.get("hash"), str):
        return None
    if not source["hash"].startswith(match["hash"]):
        return f"{describe(record, 'source', number)}: hash {source['hash']!r} disagrees with the id's {match['hash']!r}"
    for field in ("box", "sample"):
        value = record.get(f"{field}_index")
        if value is not None and value != int(match[field]):
            return f"{describe(record, f'{field}_index', number)}: {value!r} disagrees with the id"
    return None
