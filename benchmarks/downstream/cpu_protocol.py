"""The CPU protocol: data sets x seeds x arms of supervised segmentation, saved after every run."""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from anogen_aug.atomic import write_bytes_atomic
from anogen_aug.bank import AnomalyBank, resize_source
from anogen_aug.images import load_image
from anogen_aug.mvtec import MVTecFolder, read_mvtec, split_support
from benchmarks.harness import environment

from .arms import ARMS, build_bank, run_arm
from .evaluation import EvaluationSet, cap, cap_anomalies

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")
HEADERS = ("image AUROC", "pixel AUROC", "pixel AP", "F1-max", "AUPRO")
#: Packages recorded with the results besides the harness's.
EXTRA_PACKAGES = ("torchmetrics", "kornia")


def run_cpu_protocol(args) -> dict:
    """The benchmark's story: data sets x seeds x arms, saved after every run (``--resume`` skips those)."""
    out = Path(args.out)
    record = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    call = {
        "config": _config(args),
        "environment": environment(extra_packages=EXTRA_PACKAGES),
        "command": shlex.join(sys.argv),
    }
    if record:  # a resumed (or extended) run keeps the first call's provenance and lists the later ones
        record.setdefault("resumed", []).append(call)
    else:
        record.update(call)
    results = record.setdefault("results", {})
    for root in args.data:
        folder = read_mvtec(root)  # 1. Index the data set.
        entries = results.setdefault(folder.category, {})
        for seed in args.seeds:
            pending = [a for a in args.arms if str(seed) not in entries.get(a, {}).get("seeds", {})]
            if pending:
                _run_seed(folder, seed, pending, entries, args, save_to=(record, out))
    print(markdown_table(results))
    return record


def _run_seed(folder: MVTecFolder, seed: int, pending: list[str], entries: dict, args, *, save_to) -> None:
    # 2. Support set out of the test split; the capped evaluation set; the train images.
    support, evaluation = split_support(folder.test, k=args.k, seed=seed)
    evaluation = EvaluationSet(cap_anomalies(evaluation, args.eval_anomalies, seed=seed), args.image_size)
    train_paths = cap(list(folder.train), args.train_images, seed=seed)
    train_images = [resize_source(load_image(p), (args.image_size,) * 2) for p in train_paths]
    # 3. The bank (resumable: a re-run reuses it).
    bank_dir = Path(args.work_dir) / folder.category / f"size{args.image_size}-k{args.k}-seed{seed}"
    bank = build_bank(
        folder, support, train_paths, size=args.image_size, seed=seed, out=bank_dir / "bank",
        boxes_per_image=args.boxes_per_image,
    )  # fmt: skip
    print(
        f"{folder.category} seed {seed}: {len(train_images)} train images, {len(bank)} bank samples, "
        f"{len(evaluation)} test images ({sum(s.gt_label for s in evaluation.samples)} anomalous); "
        f"support {sum(len(v) for v in support.values())} images removed from the test split",
        flush=True,
    )
    # 4. Every arm, saved as soon as it is done.
    for name in pending:
        arm_bank = bank
        if name == "diffusion":
            arm_bank = AnomalyBank(str(args.diffusion_bank).format(category=folder.category, seed=seed))
        result = run_arm(ARMS[name], train_images, arm_bank, evaluation, seed=seed, args=args)
        result["support"] = {d: [s.image_path.name for s in v] for d, v in support.items()}
        entry = entries.setdefault(name, {"arm": asdict(ARMS[name]), "seeds": {}})
        entry["seeds"][str(seed)] = result
        entry["summary"] = summarize(entry["seeds"])
        save(*save_to)
        shown = ", ".join(f"{m} {result[m]:.3f}" for m in METRICS)
        print(f"  {name:12s} {shown}  ({result['train_seconds']:.0f} s train)", flush=True)


def summarize(runs: dict[str, dict]) -> dict:
    """Mean and (sample) standard deviation of each metric over seeds."""
    summary = {}
    for metric in METRICS:
        values = [r[metric] for r in runs.values()]
        summary[metric] = {
            "mean": statistics.fmean(values),
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
                cells.append(f"{stats['mean']:.3f} ± {stats['std']:.3f}")
            lines.append(f"| {dataset} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(record: dict, path: Path) -> None:
    """Write the record as JSON, atomically."""
    write_bytes_atomic(json.dumps(record, indent=2).encode() + b"\n", path)


def _config(args) -> dict:
    keys = ("image_size", "epochs", "train_images", "eval_anomalies", "seeds", "arms", "k", "batch_size",
            "lr", "base_channels", "loss", "boxes_per_image", "image_score", "threads")  # fmt: skip
    config = {key: getattr(args, key) for key in keys}
    config["data"] = [str(p) for p in args.data]
    return config
