"""Bank generation sharded over processes, GPUs or nodes with Hugging Face ``accelerate``.

``accelerate launch --num_processes 4 -m anogen_aug.cli generate ...`` on GPUs, ``torchrun --nproc_per_node 4
-m anogen_aug.cli generate ...`` on CPUs (or `write_bank_sharded` from a script started either way): each rank
generates every ``world``-th source image into its own shard folder ``OUT/shards/shard-<rank>``; when all ranks
are done, the main process merges the shards into ``OUT`` by manifest.
Ids and seeds depend only on the source image, the seed and the box/sample index, so a sharded bank holds the
same samples as a single-process one, and a re-run (with any number of processes) skips what exists.
The main process holds ``OUT``'s lock (`anogen_aug.locking`) from before the shards are written until the merge
is done, and each rank holds its shard's, so a second run on the same folder fails at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .bank import AnomalyBank, merge_banks, write_bank
from .locking import FolderLock

logger = logging.getLogger(__name__)


def process_state():
    """accelerate's `PartialState`; on a machine without CUDA it joins CPU ranks (gloo), as ``torchrun`` starts."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def write_bank_sharded(
    generator, images: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs
) -> AnomalyBank:
    """`write_bank` split over the processes of an ``accelerate launch`` (one process: plain `write_bank`).

    Args:
        generator: The anomaly generator, already on this process's device (``PartialState().device``).
        images: All source images; each rank takes ``images[rank::num_processes]``.
        out: The merged bank folder; shards are written under ``out/shards/``.
        **kwargs: `write_bank`'s options (category, defect_type, box_sampler, seed, ...).

    Returns:
        The merged bank (on every rank, after the merge).
    """
    state = process_state()
    out = Path(out)
    if state.num_processes == 1:
        return write_bank(generator, images, out, **kwargs)
    shard = out / "shards" / f"shard-{state.process_index}"
    mine = list(images)[state.process_index :: state.num_processes]
    logger.info(
        "rank %d/%d: %d of %d images -> %s",
        state.process_index,
        state.num_processes,
        len(mine),
        len(images),
        shard,
    )
    progress = kwargs.pop("progress", True) and state.is_local_main_process
    with FolderLock(out, what="bank") if state.is_main_process else contextlib.nullcontext():
        state.wait_for_everyone()  # no rank writes before the main process holds the lock
        write_bank(generator, mine, shard, progress=progress, **kwargs)
        state.wait_for_everyone()
        if state.is_main_process:
            merge_banks([out / "shards" / f"shard-{rank}" for rank in range(state.num_processes)], out)
    state.wait_for_everyone()
    return AnomalyBank(out)
