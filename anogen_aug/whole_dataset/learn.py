"""`learn_all`: stage 1 for every defect type of a data set, spread over processes, resumable, failure-tolerant."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import fsync_dir, replace_dir
from ..backbone import Backbone
from ..checks import check_int, is_int
from ..distributed import process_state
from ..embedding import CONFIG_NAME, WEIGHTS_NAME, DefectEmbedding
from ..inversion import InversionConfig, latest_checkpoint, learn_defect_embedding
from .launch import Launch, finish_launch, start_launch
from .plan import DatasetPlan, DefectJob, plan_dataset, record_support
from .report import JobRecord, Summary, read_record, write_record, write_summary

logger = logging.getLogger(__name__)

EMBEDDINGS, CHECKPOINTS = "embeddings", "checkpoints"


def learn_all(
    backbone: Backbone,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: InversionConfig | None = None,
    k: int = 3,
    support_seed: int = 0,
    seed: int = 0,
    categories: Sequence[str] | None = None,
    progress: bool = True,
) -> Summary:
    """Learn one defect embedding per defect type of an MVTec-AD-layout folder (AnoGen stage 1, at scale).

    Run it once, or in every process of an ``accelerate launch`` / ``torchrun`` start (with ``backbone`` on that
    process's device, `anogen_aug.distributed.process_state`): each rank learns one defect type at a time.
    Output, per job ``<category>_<defect_type>``::

        OUT/support.json                    the support draw (`anogen_aug.whole_dataset.read_support_json`)
        OUT/embeddings/<job>/               the embedding in the Hub layout with its model card (`DefectEmbedding`)
        OUT/checkpoints/<job>/checkpoint-N/ resumable stage-1 checkpoints
        OUT/jobs/learn/<job>.json           the job's record; OUT/summary-learn.md: the table of all jobs

    A job is finished when its embedding folder holds a result of this ``config`` and text-encoder width (the
    folder appears whole, by a rename): a relaunch, with any number of ranks, skips it; an interrupted job resumes from its latest
    checkpoint and ends with the same vector as an uninterrupted one. A job that raises (a bad mask, an unreadable
    file) is recorded as failed and the others go on; a relaunch retries it.

    Args:
        backbone: The frozen LDM (`load_backbone`), on this process's device.
        root: One category folder or a folder of categories, in the MVTec AD layout (`plan_dataset`).
        out: The run's output folder.
        config: Stage-1 settings of every job (default: the reference settings, `InversionConfig()`).
        k: Support anomalies per defect type, drawn by `anogen_aug.mvtec.split_support`.
        support_seed: Seed of the support draw (the downstream benchmark's ``seed``).
        seed: Seed of every job's training draws (as ``anogen-aug learn --seed``).
        categories: Only these categories (sub-folder names of ``root``); None for all.
        progress: A tqdm bar per rank (steps of its jobs, the current job and loss).

    Returns:
        The `Summary` of every job, on every rank, once all ranks are done.
    """
    # 1. Check the settings; plan the jobs and the support draw (the same on every rank: it only reads files).
    config = _check_arguments(backbone, config, k=k, support_seed=support_seed, seed=seed)
    out = Path(out)
    plan = plan_dataset(root, k=k, seed=support_seed, categories=categories)
    # 2. Record the draw in OUT/support.json (the main process writes; every rank refuses another draw).
    record_support(plan, out, write=process_state().is_main_process)
    # 3. Spread the unfinished jobs over the ranks: rank r of w takes every w-th.
    jobs = {job.name: job for job in plan.jobs}
    launch = start_launch(
        out, list(jobs), lambda name: _is_learned(out / EMBEDDINGS / name, config, backbone.token_dim)
    )
    # 4. Learn this rank's jobs, one at a time; each resumes from its checkpoints, a failure is recorded.
    total = len(launch.mine) * config.max_train_steps
    with tqdm(
        total=total, position=launch.rank, desc=f"rank {launch.rank}", unit="step", disable=not progress
    ) as bar:
        for name in launch.mine:
            write_record(
                out,
                _learn_job(backbone, jobs[name], out, config=config, seed=seed, rank=launch.rank, bar=bar),
            )
    # 5. Wait for every rank; the summary of all jobs from their records.
    finish_launch(launch)
    return write_summary(out, "learn", _records(plan, launch), write=launch.is_main)


def _is_learned(folder: Path, config: InversionConfig, token_dim: int) -> bool:
    """Whether ``folder`` holds an embedding of this width learned with ``config`` (a finished job)."""
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        return False
    try:
        saved = json.loads((folder / CONFIG_NAME).read_text())
    except (ValueError, OSError):
        return False
    wanted = json.loads(json.dumps(config.to_dict()))
    return saved.get("dim") == token_dim and _same_result(saved.get("config")) == _same_result(wanted)


def _same_result(config: dict | None) -> dict | None:
    """The settings that change the learned vector (when checkpoints are written does not)."""
    if not isinstance(config, dict):
        return None
    return {key: value for key, value in config.items() if key != "checkpointing_steps"}


def _check_arguments(backbone: Backbone, config: InversionConfig | None, **numbers: int) -> InversionConfig:
    check_int(numbers.pop("k"), "k")
    for name, value in numbers.items():
        if not is_int(value):
            raise ValueError(f"`{name}` must be an integer, got {value!r}")
    config = InversionConfig() if config is None else config
    if not isinstance(config, InversionConfig):
        raise TypeError(f"`config` must be an InversionConfig, got {type(config).__name__}")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"`backbone` must be a Backbone (see load_backbone), got {type(backbone).__name__}")
    return config


def _learn_job(
    backbone: Backbone, job: DefectJob, out: Path, *, config: InversionConfig, seed: int, rank: int, bar
) -> JobRecord:
    """Learn (or resume) one defect type and save its embedding; a raised error becomes a failed record."""
    started = time.perf_counter()
    checkpoints = out / CHECKPOINTS / job.name
    latest = latest_checkpoint(checkpoints)
    resumed_from = (
        0 if latest is None else min(int(latest.name.removeprefix("checkpoint-")), config.max_train_steps)
    )
    losses: list[float] = []
    logger.info("rank %d learns %s (from step %d)", rank, job.name, resumed_from)
    bar.update(resumed_from)
    bar.set_postfix(job=job.name)

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(job=job.name, loss=f"{loss:.4f}")

    try:
        embedding = learn_defect_embedding(
            backbone,
            [sample.image_path for sample in job.support],
            [sample.mask_path for sample in job.support],
            config=config,
            generator=torch.Generator().manual_seed(seed),
            placeholder_token=f"<{job.category}-{job.defect_type}>",
            category=job.category,
            defect_type=job.defect_type,
            output_dir=checkpoints,
            resume=latest is not None,
            progress=False,
            callback=on_step,
        )
        # Provenance in config.json and the model card: which files of the category it learned from, the seed.
        embedding.extra["support_images"] = [
            s.image_path.relative_to(job.folder).as_posix() for s in job.support
        ]
        embedding.extra["seed"] = seed
        _save_embedding(embedding, out / EMBEDDINGS / job.name)
    except Exception as error:  # one bad defect type must not stop the others: recorded, reported, retried
        logger.error(
            "learn %s failed: %s: %s",
            job.name,
            type(error).__name__,
            error,
            exc_info=logger.isEnabledFor(logging.INFO),  # the traceback with -v
        )
        bar.update(config.max_train_steps - resumed_from - len(losses))
        message = f"{type(error).__name__}: {error}"
        return JobRecord(
            job.name,
            "learn",
            "failed",
            resumed_from=resumed_from,
            seconds=_since(started),
            rank=rank,
            error=message,
        )
    return JobRecord(
        job.name,
        "learn",
        "done",
        steps=config.max_train_steps,
        final_loss=losses[-1] if losses else None,
        resumed_from=resumed_from,
        seconds=_since(started),
        rank=rank,
    )


def _save_embedding(embedding: DefectEmbedding, folder: Path) -> None:
    """Write the embedding folder whole or not at all: staged next to it, then renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # staging left by a killed start of this job
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        embedding.save_pretrained(staging)
        replace_dir(staging, folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _records(plan: DatasetPlan, launch: Launch) -> list[JobRecord]:
    """Every job's record: this start's as written, earlier starts' marked skipped; unreadable categories failed."""
    records = []
    for job in plan.jobs:
        record = read_record(launch.out, "learn", job.name)
        if job.name not in launch.pending:
            record = JobRecord(job.name, "learn", "done") if record is None else record
            record = dataclasses.replace(record, status="skipped", error=None)
        elif record is None:
            record = JobRecord(
                job.name, "learn", "failed", error="no record: its rank stopped before writing one"
            )
        records.append(record)
    records += [
        JobRecord(f"{name}_*", "learn", "failed", error=error) for name, error in plan.unreadable.items()
    ]
    return records


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
