"""The segmentation protocol: data sets x seeds x arms of supervised segmentation (a small U-Net)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from anogen_aug.bank import AnomalyBank, resize_source
from anogen_aug.images import load_image
from anogen_aug.mvtec import MVTecFolder, split_support

from .arms import ARMS, build_bank, run_arm
from .evaluation import EvaluationSet, cap, cap_anomalies
from .record import run_protocol, store_run


def run_cpu_protocol(args) -> dict:
    """The segmentation protocol, saved after every run (``--resume`` skips those already in ``--out``)."""
    return run_protocol(args, lambda *a: _run_seed(*a, args=args), config=_config(args))


def _run_seed(folder: MVTecFolder, seed: int, pending: list[str], entries: dict, save, *, args) -> None:
    # 1. Support set out of the test split; the capped evaluation set; the train images.
    support, evaluation = split_support(folder.test, k=args.k, seed=seed)
    evaluation = EvaluationSet(cap_anomalies(evaluation, args.eval_anomalies, seed=seed), args.image_size)
    train_paths = cap(list(folder.train), args.train_images, seed=seed)
    train_images = [resize_source(load_image(p), (args.image_size,) * 2) for p in train_paths]
    # 2. The bank (resumable: a re-run reuses it).
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
    # 3. Every arm, saved as soon as it is done.
    for name in pending:
        arm_bank = bank
        if name == "diffusion":
            arm_bank = AnomalyBank(str(args.diffusion_bank).format(category=folder.category, seed=seed))
        result = run_arm(ARMS[name], train_images, arm_bank, evaluation, seed=seed, args=args)
        result["support"] = {d: [s.image_path.name for s in v] for d, v in support.items()}
        store_run(entries, name, asdict(ARMS[name]), seed, result)
        save()


def _config(args) -> dict:
    keys = ("image_size", "epochs", "train_images", "eval_anomalies", "seeds", "arms", "k", "batch_size",
            "lr", "base_channels", "prior", "loss", "boxes_per_image", "image_score", "threads")  # fmt: skip
    config = {key: getattr(args, key) for key in keys}
    config["data"] = [str(p) for p in args.data]
    return config
