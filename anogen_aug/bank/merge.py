"""Merging bank shards (e.g. one per ``accelerate launch`` rank) into one bank, by manifest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_atomic
from .manifest import FILE_FIELDS, ManifestWriter
from .reader import AnomalyBank


def merge_banks(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> AnomalyBank:
    """Merge bank folders (e.g. ``out/shard-<rank>`` written by ``accelerate launch`` ranks) into ``out``.

    Files are hard-linked (copied across file systems); records already in ``out`` are skipped, so merging is
    resumable and idempotent. Each rank writes its own shard: ``write_bank(..., images[rank::world], out /
    f"shard-{rank}")``; after all ranks finish, one process calls ``merge_banks(shard_dirs, out)``.
    """
    if isinstance(shards, (str, os.PathLike)) or not isinstance(shards, Sequence):
        raise TypeError(f"`shards` must be a list of bank folders, got {type(shards).__name__}")
    out = Path(out)
    with ManifestWriter(out) as writer:
        for shard in map(Path, shards):
            if shard.resolve() == out.resolve():
                raise ValueError(f"`shards` must not contain the output bank itself ({out})")
            for record in AnomalyBank(shard).records:
                if record["id"] in writer.done:
                    continue
                for key in FILE_FIELDS:
                    _link_or_copy(shard / record[key], out / record[key])
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
