"""The DRAEM protocol: `WeakDraem` at reduced input size and width, trained and tested by `train_detector` (what
``anogen-aug train`` runs), Perlin only against Perlin + a crop-and-paste bank labelled three ways.

Per data set and seed: k support anomalies per defect type are drawn (`plan_dataset`, the draw of
``anogen-aug learn-all`` and of the segmentation protocol), written to ``support.json`` and excluded from the test
set (``TrainConfig.exclude_support``); the bank is made from them on every normal train image; each arm trains a
fresh DRAEM for the same number of optimiser steps and is tested on the rest of the real test images.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from anogen_aug.atomic import write_text_atomic
from anogen_aug.integrations.anomalib import TrainConfig, train_detector
from anogen_aug.mvtec import MVTecFolder
from anogen_aug.whole_dataset import plan_dataset

from .arms import build_bank
from .record import run_protocol, store_run


@dataclass(frozen=True)
class DraemArm:
    """One DRAEM recipe: with or without the bank, how the bank is labelled, and tau."""

    name: str
    bank: bool  # False: anomalib's own recipe, a Perlin anomaly (or, half the time, none) on every row
    bank_labels: str  # TrainConfig.bank_labels: "boxes" (pixel masks hidden) or "auto" (exact pixel masks)
    tau: float


DRAEM_ARMS = {
    arm.name: arm
    for arm in (
        DraemArm("perlin", bank=False, bank_labels="auto", tau=1.0),
        DraemArm("box_tau1.0", bank=True, bank_labels="boxes", tau=1.0),
        DraemArm("box_tau0.9", bank=True, bank_labels="boxes", tau=0.9),
        DraemArm("pixel_mask", bank=True, bank_labels="auto", tau=1.0),
    )
}

#: `train_detector`'s metric names -> the protocol's.
METRIC_KEYS = {
    "image_AUROC": "image_auroc",
    "pixel_AUROC": "pixel_auroc",
    "pixel_AUPR": "pixel_ap",
    "pixel_F1Max": "pixel_f1_max",
    "pixel_AUPRO": "pixel_aupro",
}


def run_draem_protocol(args) -> dict:
    """The DRAEM protocol, saved after every run (``--resume`` skips those already in ``--out``)."""
    return run_protocol(args, lambda *a: _run_seed(*a, args=args), config=_config(args))


def _run_seed(folder: MVTecFolder, seed: int, pending: list[str], entries: dict, save, *, args) -> None:
    # 1. The support draw, recorded so that `train_detector` takes it out of the test set.
    work = Path(args.work_dir) / "draem" / folder.category / f"size{args.image_size}-k{args.k}-seed{seed}"
    plan = plan_dataset(folder.root, k=args.k, seed=seed)
    support_json = write_text_atomic(json.dumps(plan.support_record(), indent=2), work / "support.json")
    support = {job.defect_type: list(job.support) for job in plan.jobs}
    # 2. The bank on every normal train image, at the model's input size (resumable).
    bank = build_bank(
        folder, support, list(folder.train), size=args.image_size, seed=seed, out=work / "bank",
        boxes_per_image=args.boxes_per_image,
    )  # fmt: skip
    print(
        f"{folder.category} seed {seed}: {len(folder.train)} train images, {len(bank)} bank samples",
        flush=True,
    )
    # 3. Every arm: a fresh DRAEM, the same steps, tested on the real test images less the support.
    for name in pending:
        arm = DRAEM_ARMS[name]
        config = TrainConfig(
            model="draem", tau=arm.tau, epochs=10**6, max_steps=args.steps, image_size=args.image_size,
            batch_size=args.batch_size, seed=seed, accelerator="cpu", exclude_support=str(support_json),
            save_checkpoint=False, num_maps=args.maps, bank_labels=arm.bank_labels,
            model_options={"reconstruction_width": args.reconstruction_width,
                           "discrimination_width": args.discrimination_width, "learning_rate": args.lr},
        )  # fmt: skip
        started = time.perf_counter()
        outcome = train_detector(
            folder.root.parent,
            folder.category,
            bank if arm.bank else None,
            config=config,
            out_dir=work / name,
        )
        result = {key: outcome["metrics"][name_] for name_, key in METRIC_KEYS.items()}
        result["train_seconds"] = round(time.perf_counter() - started, 1)  # train and test
        result["excluded_images"] = len(outcome["config"]["excluded_images"])
        result["support"] = {d: [s.image_path.name for s in v] for d, v in support.items()}
        store_run(entries, name, asdict(arm), seed, result)
        save()


def _config(args) -> dict:
    keys = ("image_size", "steps", "batch_size", "lr", "reconstruction_width", "discrimination_width", "seeds",
            "arms", "k", "boxes_per_image", "threads")  # fmt: skip
    config = {key: getattr(args, key) for key in keys}
    config["data"] = [str(p) for p in args.data]
    return config
