"""What each job did, kept on disk (``OUT/jobs/<stage>/<job>.json``), and the summary table of a whole run.

A record is written (atomically) when its job ends, done or failed, by the rank that ran it; the summary is
read back from the records once every rank has finished, so it covers all ranks and all nodes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

#: ``done``: finished by this start; ``failed``: raised (the others went on); ``skipped``: finished by an
#: earlier start, or (generation) nothing to generate from because no embedding was learned.
STATUSES = ("done", "failed", "skipped")


@dataclass(frozen=True)
class JobRecord:
    """The outcome of one job.

    Attributes:
        job: ``<category>_<defect_type>``.
        stage: ``"learn"`` or ``"generate"``.
        status: One of `STATUSES`.
        steps: Stage 1: the embedding's optimisation steps.
        final_loss: Stage 1: the loss of the last step taken by this start (None when it took none).
        resumed_from: Stage 1: the checkpoint step the job continued from (0: from scratch).
        samples: Stage 2: samples in the job's bank.
        seconds: Wall time of the job in the start that ran it.
        rank: The rank that ran it.
        error: ``"<ErrorType>: <message>"`` of a failed job, or why it was skipped.
        settings: What the job was asked to do (stage 2: a bank with other settings is not finished).
    """

    job: str
    stage: str
    status: str
    steps: int | None = None
    final_loss: float | None = None
    resumed_from: int | None = None
    samples: int | None = None
    seconds: float | None = None
    rank: int | None = None
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"`status` must be one of {STATUSES}, got {self.status!r}")


def record_path(out: str | Path, stage: str, job: str) -> Path:
    """Where the record of ``job`` at ``stage`` lives."""
    return Path(out) / "jobs" / stage / f"{job}.json"


def write_record(out: str | Path, record: JobRecord) -> Path:
    """Save a record atomically (over the job's earlier one)."""
    text = json.dumps(dataclasses.asdict(record), indent=2, sort_keys=True) + "\n"
    return write_text_atomic(text, record_path(out, record.stage, record.job))


def read_record(out: str | Path, stage: str, job: str) -> JobRecord | None:
    """The saved record of ``job``, or None when there is none (or it cannot be read)."""
    path = record_path(out, stage, job)
    try:
        return JobRecord(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Summary:
    """The records of every job of a whole-data-set command, after all ranks finished.

    Attributes:
        stage: ``"learn"`` or ``"generate"``.
        records: One per job, sorted by job name (categories that could not be read are failed ``<name>_*``).
        path: The Markdown table on disk (``OUT/summary-<stage>.md``).
    """

    stage: str
    records: tuple[JobRecord, ...]
    path: Path

    @property
    def failed(self) -> list[JobRecord]:
        return [r for r in self.records if r.status == "failed"]

    def table(self) -> str:
        """The Markdown table: job, steps, final loss, time, status (stage 2: samples instead of steps, loss)."""
        return summary_table(self.records)


def summary_table(records: Sequence[JobRecord]) -> str:
    """A Markdown table of job records, then a line counting them by status."""
    learn = all(r.stage == "learn" for r in records)
    header = (
        ["job", "steps", "final loss", "time", "status"] if learn else ["job", "samples", "time", "status"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        status = r.status if r.error is None else f"{r.status}: {r.error}"
        cells = [r.job, _text(r.steps), _loss(r.final_loss)] if learn else [r.job, _text(r.samples)]
        cells += [_time(r.seconds), status.replace("|", "/").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    lines.append("")
    lines.append(f"{len(records)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def write_summary(out: Path, stage: str, records: Sequence[JobRecord], *, write: bool = True) -> Summary:
    """The `Summary` of ``records``; with ``write``, its table is saved as ``OUT/summary-<stage>.md``."""
    records = tuple(sorted(records, key=lambda r: r.job))
    summary = Summary(stage=stage, records=records, path=out / f"summary-{stage}.md")
    if write:
        write_text_atomic(summary.table() + "\n", summary.path)
    return summary


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"
