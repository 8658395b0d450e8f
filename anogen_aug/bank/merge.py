"""Merging bank shards (e.g. one per ``accelerate launch`` rank) into one bank, by manifest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_atomic
from .manifest import ManifestWriter
from .reader import AnomalyBank
from .records import FILE_FIELDS, record_file


def merge_banks(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> AnomalyBank:
    """Merge bank folders (e.g. ``out/shard-<rank>`` written by ``accelerate launch`` ranks) into ``out``.

    Files are hard-linked (copied across file systems); records already in ``out`` are skipped, so merging is
    resumable and idempotent. Each rank writes its own shard: ``write_bank(..., images[rank::world], out /
    f"shard-{rank}")``; after all ranks finish, one process calls ``merge_banks(shard_dirs, out)``. ``out`` is
    locked while merging (`anogen_aug.locking`).

    Raises:
        ValueError: A shard record names a file outside its shard (or would land outside ``out``): checked for
            every record of every shard before a file is linked.
        FolderLockedError: Another process is writing ``out``.
    """
    if isinstance(shards, (str, os.PathLike)) or not isinstance(shards, Sequence):
        raise TypeError(f"`shards` must be a list of bank folders, got {type(shards).__name__}")
    out = Path(out)
    for shard in map(Path, shards):
        if shard.resolve() == out.resolve():
            raise ValueError(f"`shards` must not contain the output bank itself ({out})")
    plan = [  # (record, {field: (shard file, merged file)}), every path checked before a file is touched
        (
            record,
            {
                key: (record_file(bank.root, record, key), record_file(out, record, key))
                for key in FILE_FIELDS
            },
        )
        for bank in map(AnomalyBank, shards)
        for record in bank.records
    ]
    with ManifestWriter(out) as writer:
        for record, files in plan:
            if record["id"] in writer.done:
                continue
            for source, target in files.values():
                _link_or_copy(source, target)
            writer.append(record)  # after the files: a crash never leaves a record without them
    return AnomalyBank(out)


def _link_or_copy(source: Path, target: Path) -> None:
    """Put the shard's (complete) file at ``target``: a hard link appears whole at once; across file systems
    the copy goes through `anogen_aug.atomic`. A leftover ``target`` of an interrupted merge is replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with open(source, "rb") as stream:
            write_atomic(target, lambda copy: shutil.copyfileobj(stream, copy))
