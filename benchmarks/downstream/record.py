"""What every downstream protocol shares: its resumable JSON record, the loop over data sets and seeds, and the
summary (mean and std over seeds) and table of its metrics."""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from anogen_aug.atomic import write_bytes_atomic
from anogen_aug.mvtec import MVTecFolder, read_mvtec
from benchmarks.harness import environment

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")
HEADERS = ("image AUROC", "pixel AUROC", "pixel AP", "F1-max", "AUPRO")
#: Packages recorded with the results besides the harness's.
EXTRA_PACKAGES = ("torchmetrics", "kornia")

#: ``run_seed(folder, seed, pending_arms, entries, save)``: runs the pending arms of one data set and seed,
#: storing each in ``entries`` with `store_run` and calling ``save()`` after each.
SeedRunner = Callable[[MVTecFolder, int, list[str], dict, Callable[[], None]], None]


def run_protocol(args, run_seed: SeedRunner, *, config: dict) -> dict:
    """Data sets x seeds x ``args.arms``, saved to ``args.out`` after every run (``--resume`` skips those)."""
    out = Path(args.out)
    record = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    call = {
        "config": config,
        "environment": environment(extra_packages=EXTRA_PACKAGES),
        "command": shlex.join(sys.argv),
    }
    if record:  # a resumed (or extended) run keeps the first call's provenance and lists the later ones
        record.setdefault("resumed", []).append(call)
    else:
        record.update(call)
    results = record.setdefault("results", {})
    for root in args.data:
        folder = read_mvtec(root)
        entries = results.setdefault(folder.category, {})
        for seed in args.seeds:
            pending = [a for a in args.arms if str(seed) not in entries.get(a, {}).get("seeds", {})]
            if pending:
                run_seed(folder, seed, pending, entries, lambda: save(record, out))
    save(record, out)  # also a resumed call that found nothing to run is recorded
    print(markdown_table(results))
    return record


def store_run(entries: dict, name: str, arm: dict, seed: int, result: dict) -> None:
    """Put one arm's run of ``seed`` into ``entries``, refresh its summary and print its metrics."""
    entry = entries.setdefault(name, {"arm": arm, "seeds": {}})
    entry["seeds"][str(seed)] = result
    entry["summary"] = summarize(entry["seeds"])
    shown = ", ".join(f"{m} {'-' if result[m] is None else format(result[m], '.3f')}" for m in METRICS)
    print(f"  {name:12s} {shown}  ({result['train_seconds']:.0f} s train)", flush=True)


def summarize(runs: dict[str, dict]) -> dict:
    """Mean and (sample) standard deviation of each metric over seeds."""
    summary = {}
    for metric in METRICS:
        values = [r[metric] for r in runs.values() if r.get(metric) is not None]
        summary[metric] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values),
        }
    return summary


def markdown_table(results: dict) -> str:
    """``| data set | arm | metrics (mean ± std) |`` for every arm with at least one seed."""
    lines = [
        "| data set | arm | " + " | ".join(HEADERS) + " |",
        "|---|---|" + "---|" * len(HEADERS),
    ]
    for dataset, arms in results.items():
        for arm, entry in arms.items():
            if not entry["seeds"]:
                continue
            cells = []
            for metric in METRICS:
                stats = entry["summary"][metric]
                mean = "-" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"
                cells.append(mean)
            lines.append(f"| {dataset} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(record: dict, path: Path) -> None:
    """Write the record as JSON, atomically."""
    write_bytes_atomic(json.dumps(record, indent=2).encode() + b"\n", path)
