"""`generate_all`: a bank per learned defect embedding, on its category's normal images, spread over processes."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..backbone import Backbone
from ..bank import write_bank
from ..boxes import BoxSampler
from ..checks import check_choice, check_int, is_int
from ..contact_sheet import bank_contact_sheet
from ..embedding import DefectEmbedding
from ..generation import AnomalyGenerator, GenerationConfig
from ..images import list_images
from ..mvtec import NORMAL
from .launch import Launch, finish_launch, start_launch
from .learn import EMBEDDINGS
from .plan import read_support_json
from .report import JobRecord, Summary, read_record, write_record, write_summary

logger = logging.getLogger(__name__)

BANKS, SHEETS = "banks", "sheets"


@dataclass(frozen=True)
class _Job:
    """One bank to write: the embedding of ``<category>_<defect_type>`` onto the category's normal images."""

    name: str
    category: str
    defect_type: str
    folder: Path  # the category folder


def generate_all(
    backbone: Backbone,
    out: str | os.PathLike,
    *,
    config: GenerationConfig | None = None,
    boxes_per_image: int = 2,
    samples_per_box: int = 2,
    seed: int = 0,
    size: int | None = None,
    region: str = "auto",
    progress: bool = True,
) -> Summary:
    """Write a bank for every embedding `learn_all` learned in ``out``, onto its category's ``train/good`` images.

    Boxes come from the packaged per-defect size table (`BoxSampler.from_table`, the ``default`` row for a pair it
    lacks), inside the object's foreground (``region="auto"``) or anywhere (``"none"``). Run it once or in every
    process of an ``accelerate launch`` / ``torchrun`` start: each rank writes one bank at a time. Output::

        OUT/banks/<job>/            the bank (`AnomalyBank`; resumable: a re-run skips the samples it holds)
        OUT/sheets/<job>.png        a contact sheet of the bank (source | result + box | mask)
        OUT/jobs/generate/<job>.json, OUT/summary-generate.md

    A job is finished when its record says done with the same settings and the same embedding; a failing job is
    recorded and the others go on. Defect types without a learned embedding are listed as skipped.

    Args:
        backbone: The frozen LDM the embeddings were learned on, on this process's device.
        out: The output folder of `learn_all`.
        config: Stage-2 settings (default: the reference settings, `GenerationConfig()`).
        boxes_per_image, samples_per_box: The paper's 2 x 2 per normal image.
        seed: The banks' seed (`write_bank`).
        size: Resize the normal images to ``size x size`` first; None keeps their size.
        region: ``"auto"`` (Otsu foreground) or ``"none"``.
        progress: A tqdm bar per rank (its banks, the current one).

    Returns:
        The `Summary` of every defect type in ``OUT/support.json``, on every rank, once all ranks are done.
    """
    # 1. Check the settings; the jobs: every defect type of support.json that has a learned embedding.
    config, settings = _check_arguments(
        backbone, config, boxes_per_image=boxes_per_image, samples_per_box=samples_per_box, seed=seed, size=size,
        region=region,
    )  # fmt: skip
    out = Path(out)
    jobs = _jobs(out)
    learned = [name for name, job in jobs.items() if (out / EMBEDDINGS / name / "config.json").is_file()]
    # 2. Spread the banks not yet written with these settings and these embeddings over the ranks.
    launch = start_launch(out, learned, lambda name: _is_generated(out, name, settings))
    # 3. Write this rank's banks, one at a time, each with its contact sheet; a failure is recorded.
    bar = tqdm(
        total=len(launch.mine),
        position=launch.rank,
        desc=f"rank {launch.rank}",
        unit="bank",
        disable=not progress,
    )
    with bar:
        for name in launch.mine:
            bar.set_postfix(job=name)
            write_record(out, _generate_job(backbone, jobs[name], out, config, settings, rank=launch.rank))
            bar.update(1)
    # 4. Wait for every rank; the summary of all jobs from their records.
    finish_launch(launch)
    return write_summary(out, "generate", _records(jobs, learned, launch), write=launch.is_main)


def _check_arguments(backbone, config, **settings) -> tuple[GenerationConfig, dict[str, Any]]:
    config = GenerationConfig() if config is None else config
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"`config` must be a GenerationConfig, got {type(config).__name__}")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"`backbone` must be a Backbone (see load_backbone), got {type(backbone).__name__}")
    check_int(settings["boxes_per_image"], "boxes_per_image")
    check_int(settings["samples_per_box"], "samples_per_box")
    check_choice(settings["region"], "region", ("auto", "none"))
    if not is_int(settings["seed"]):
        raise ValueError(f"`seed` must be an integer, got {settings['seed']!r}")
    if settings["size"] is not None:
        check_int(settings["size"], "size", low=8)
    return config, {**settings, "config": config.to_dict()}


def _jobs(out: Path) -> dict[str, _Job]:
    """Every defect type of ``OUT/support.json``, by job name (sorted)."""
    record = read_support_json(out)
    jobs = {}
    for category, entry in record["categories"].items():
        for defect_type in entry["support"]:
            name = f"{category}_{defect_type}"
            jobs[name] = _Job(name, category, defect_type, Path(entry["folder"]))
    return dict(sorted(jobs.items()))


def _embedding_id(out: Path, name: str) -> str | None:
    try:
        return DefectEmbedding.from_pretrained(out / EMBEDDINGS / name).id
    except (OSError, ValueError, KeyError):
        return None


def _is_generated(out: Path, name: str, settings: dict[str, Any]) -> bool:
    record = read_record(out, "generate", name)
    wanted = json.loads(json.dumps({**settings, "embedding_id": _embedding_id(out, name)}))
    return record is not None and record.status == "done" and record.settings == wanted


def _generate_job(
    backbone: Backbone, job: _Job, out: Path, config: GenerationConfig, settings: dict[str, Any], *, rank: int
) -> JobRecord:
    """Write (or complete) one bank and its contact sheet; a raised error becomes a failed record."""
    started = time.perf_counter()
    try:
        embedding = DefectEmbedding.from_pretrained(out / EMBEDDINGS / job.name)
        region = None if settings["region"] == "none" else settings["region"]
        bank = write_bank(
            AnomalyGenerator(backbone, embedding, config=config),
            list_images(job.folder / "train" / NORMAL, name=f"{job.category}/train/{NORMAL}"),
            out / BANKS / job.name,
            category=job.category,
            defect_type=job.defect_type,
            box_sampler=BoxSampler.from_table(job.category, job.defect_type, fallback=True, region=region),
            boxes_per_image=settings["boxes_per_image"],
            samples_per_box=settings["samples_per_box"],
            seed=settings["seed"],
            embedding_id=embedding.id,
            size=settings["size"],
            progress=False,
        )
        bank_contact_sheet(bank, out=out / SHEETS / f"{job.name}.png")
    except Exception as error:  # one bad defect type must not stop the others: recorded, reported, retried
        logger.error(
            "generate %s failed: %s: %s",
            job.name,
            type(error).__name__,
            error,
            exc_info=logger.isEnabledFor(logging.INFO),  # the traceback with -v
        )
        message = f"{type(error).__name__}: {error}"
        return JobRecord(job.name, "generate", "failed", seconds=_since(started), rank=rank, error=message)
    return JobRecord(
        job.name,
        "generate",
        "done",
        samples=len(bank),
        seconds=_since(started),
        rank=rank,
        settings=json.loads(json.dumps({**settings, "embedding_id": embedding.id})),
    )


def _records(jobs: dict[str, _Job], learned: list[str], launch: Launch) -> list[JobRecord]:
    """Every defect type's record: this start's as written, earlier starts' skipped, unlearned ones skipped."""
    records = []
    for name in jobs:
        record = read_record(launch.out, "generate", name)
        if name not in learned:
            record = JobRecord(
                name, "generate", "skipped", error="no embedding: learning failed or has not run"
            )
        elif name not in launch.pending:
            record = replace(record or JobRecord(name, "generate", "done"), status="skipped", error=None)
        elif record is None:
            record = JobRecord(
                name, "generate", "failed", error="no record: its rank stopped before writing one"
            )
        records.append(record)
    return records


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
