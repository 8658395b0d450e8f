"""Spreading jobs over the ranks of an ``accelerate launch`` / ``torchrun`` start, and waiting for all of them.

The main process lists the unfinished jobs (sorted by name) and broadcasts that list once; rank ``r`` of ``w``
takes ``pending[r::w]``, one job at a time. A job's "finished" test reads only its output folder, so a relaunch
(with any number of ranks, on one node or several sharing the output folder) skips what is done and spreads
only what is left.

The end is awaited through marker files ``OUT/.launches/<id>/rank-<r>``, not a collective barrier: ranks
finish up to one job apart (a GPU-hour at the paper's settings), far past NCCL's and gloo's default collective
timeouts (10 and 30 minutes), which would kill a run whose work is all done.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text_atomic
from ..distributed import process_state

logger = logging.getLogger(__name__)

LAUNCHES = ".launches"
#: Seconds between looks at the marker files while waiting for the other ranks.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Launch:
    """This process's share of one start of a whole-data-set command.

    Attributes:
        out: The run's output folder.
        launch_id: The id of this start, the same on every rank.
        rank, world: This process's index and the number of processes.
        pending: The jobs no earlier start finished, in order, over all ranks.
        mine: This rank's jobs: ``pending[rank::world]``.
    """

    out: Path
    launch_id: str
    rank: int
    world: int
    pending: tuple[str, ...]
    mine: tuple[str, ...]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_launch(out: Path, names: Sequence[str], is_finished: Callable[[str], bool]) -> Launch:
    """Agree on the unfinished jobs (the main process decides and broadcasts) and take this rank's share."""
    state = process_state()
    rank, world = state.process_index, state.num_processes
    decided = [None, None]
    if state.is_main_process:
        decided = [uuid.uuid4().hex, [name for name in names if not is_finished(name)]]
        _remove_old_launches(out)
    if world > 1:
        from accelerate.utils import broadcast_object_list

        decided = broadcast_object_list(decided, from_process=0)
    launch_id, pending = decided
    mine = tuple(pending[rank::world])
    logger.info("rank %d/%d: %d of %d unfinished jobs: %s", rank, world, len(mine), len(pending), list(mine))
    return Launch(out=out, launch_id=launch_id, rank=rank, world=world, pending=tuple(pending), mine=mine)


def finish_launch(launch: Launch) -> None:
    """Mark this rank done and wait until every rank of the launch is (a no-op wait for one process)."""
    folder = launch.out / LAUNCHES / launch.launch_id
    write_text_atomic(f"{time.time()}\n", folder / f"rank-{launch.rank}")
    markers = [folder / f"rank-{rank}" for rank in range(launch.world)]
    waited = 0.0
    while not all(marker.is_file() for marker in markers):
        if waited % 600 < POLL_SECONDS:
            done = sum(marker.is_file() for marker in markers)
            logger.info(
                "rank %d: waiting for the other ranks (%d of %d done)", launch.rank, done, launch.world
            )
        time.sleep(POLL_SECONDS)
        waited += POLL_SECONDS


def _remove_old_launches(out: Path) -> None:
    """Marker folders of earlier starts (no rank of theirs is still waiting when a new start begins)."""
    for folder in (out / LAUNCHES).glob("*") if (out / LAUNCHES).is_dir() else ():
        shutil.rmtree(folder, ignore_errors=True)
