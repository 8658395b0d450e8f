"""`train_detector`: train and test a weakly supervised detector on an MVTec-layout folder plus a bank.

This backs ``anogen-aug train --data DIR --category C --bank BANK --model draem|destseg --tau 0.9 --epochs N``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from anomalib.data import Folder
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anogen_aug.atomic import write_bytes_atomic
from anogen_aug.images import list_images, save_png

from .datamodule import AnoGenDataModule
from .destseg import DeSTSeg
from .draem import WeakDraem
from .evaluator import METRIC_NAMES

logger = logging.getLogger(__name__)

MODELS = ("draem", "destseg")
DEFAULT_P = {"draem": 0.5, "destseg": 1.0}  # the paper's mixes (see WeakDraem and DeSTSeg)
DEFAULT_BATCH = {"draem": 16, "destseg": 32}


def check_mvtec_layout(data_root: str | os.PathLike, category: str) -> tuple[Path, list[str], bool]:
    """Validate ``<data_root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.*}``.

    anomalib's ``Folder`` pairs anomalous images with masks by sorted position, so the pairing is checked here
    name by name (``<stem>`` with ``<stem>_mask`` or ``<stem>``) in the order ``Folder`` will use.

    Returns:
        ``(category folder, defect types, whether test/good exists)``.
    """
    root = Path(data_root) / category
    if not (root / "train" / "good").is_dir():
        raise FileNotFoundError(f"`data_root`/`category`: {root / 'train' / 'good'} is not a folder")
    test = root / "test"
    defects = (
        sorted(d.name for d in test.iterdir() if d.is_dir() and d.name != "good") if test.is_dir() else []
    )
    if not defects:
        raise ValueError(f"{test} holds no defect folder (test/<defect>/): nothing to evaluate on")
    images = sorted(str(path) for defect in defects for path in list_images(test / defect))
    masks = []
    for defect in defects:
        if not (root / "ground_truth" / defect).is_dir():
            raise FileNotFoundError(f"no mask folder {root / 'ground_truth' / defect} for defect {defect!r}")
        masks += list_images(root / "ground_truth" / defect)
    masks = sorted(str(path) for path in masks)
    if len(images) != len(masks):
        raise ValueError(f"{root}: {len(images)} defect images but {len(masks)} masks in ground_truth/")
    for image, mask in zip(images, masks):
        stem, mask_stem = Path(image).stem, Path(mask).stem
        if mask_stem not in (stem, f"{stem}_mask") or Path(image).parent.name != Path(mask).parent.name:
            raise ValueError(
                f"mask {mask} does not belong to image {image} (expected <stem>_mask.png beside it)"
            )
    return root, defects, (test / "good").is_dir()


def _train_steps(n_train: int, batch_size: int, epochs: int, max_steps, limit_train_batches) -> int:
    per_epoch = math.ceil(n_train / batch_size)
    if isinstance(limit_train_batches, float):
        per_epoch = max(1, int(per_epoch * limit_train_batches))
    elif isinstance(limit_train_batches, int):
        per_epoch = min(per_epoch, limit_train_batches)
    total = epochs * per_epoch
    return min(total, max_steps) if max_steps else total


def _heat(values: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` in [0, 1] -> ``(3, H, W)`` jet-like colours."""
    x = values.clamp(0, 1)[None]
    return torch.cat([(1.5 - (4 * x - c).abs()).clamp(0, 1) for c in (3, 2, 1)])


def save_anomaly_maps(model, dataset, out: Path, *, count: int = 4) -> list[Path]:
    """Write ``count`` PNGs ``image | ground truth | anomaly map`` for test items, anomalous first."""
    labels = [int(v) for v in dataset.samples.label_index]
    order = [i for i, v in enumerate(labels) if v == 1] + [i for i, v in enumerate(labels) if v != 1]
    paths = []
    model.eval()
    device = next(model.parameters()).device
    for index in order[:count]:
        item = dataset[index]
        with torch.no_grad():
            anomaly_map = model(item.image[None].to(device)).anomaly_map.reshape(-1, *item.image.shape[-2:])
        gt = item.gt_mask if item.gt_mask is not None else torch.zeros(item.image.shape[-2:])
        panel = torch.cat(
            [
                item.image.float(),
                gt.float().reshape(1, *gt.shape[-2:]).expand(3, -1, -1),
                _heat(anomaly_map[0].cpu()),
            ],
            dim=2,
        )  # (3, H, 3W)
        paths.append(
            save_png(panel, out / f"{Path(item.image_path).parent.name}_{Path(item.image_path).stem}.png")
        )
    return paths


def train_detector(
    data_root: str | os.PathLike,
    category: str,
    bank,
    *,
    model: str = "draem",
    tau: float = 0.9,
    epochs: int = 1,
    image_size: int = 256,
    batch_size: int | None = None,
    max_steps: int | None = None,
    limit_train_batches: int | float | None = None,
    out_dir: str | os.PathLike = "results",
    seed: int = 0,
    accelerator: str = "auto",
    p: float | None = None,
    defect_type: str | None = None,
    de_st_steps: int | None = None,
    pretrained: bool = True,
    dtd_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    num_maps: int = 4,
    model_options: dict | None = None,
) -> dict:
    """Train ``WeakDraem`` or ``DeSTSeg`` on normal images + bank anomalies, test, write metrics and maps.

    Args:
        data_root: Folder holding ``<category>/{train/good, test/<defect>, ground_truth/<defect>}``.
        category: The category folder name.
        bank: An `AnomalyBank` or a bank folder.
        model: ``"draem"`` (`WeakDraem`) or ``"destseg"`` (`DeSTSeg`).
        tau: Weak-supervision threshold in (0, 1].
        epochs: Training epochs. image_size: Side of the square model input.
        batch_size: Train and eval batch size (default 16 for DRAEM, 32 for DeSTSeg, as the paper).
        max_steps, limit_train_batches: Passed to the Lightning trainer (None: no limit).
        out_dir: Output folder: ``metrics.json``, ``maps/*.png``, ``anomalib/`` (checkpoints).
        seed: Seeds Lightning's global RNGs (anomalib's Perlin generator draws from them) and the bank draws.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``).
        p: Probability of a bank sample per train item (default 0.5 for DRAEM, 1.0 for DeSTSeg).
        defect_type: Use only bank samples of this defect type (a bank folder only).
        de_st_steps: DeSTSeg student steps (default: the first 20 % of the training steps, as 1000 of 5000).
        pretrained: DeSTSeg: ImageNet teacher from the local torchvision cache (never downloaded).
        dtd_dir: Existing texture folder for the Perlin anomalies (None: Perlin noise textures).
        num_workers: DataLoader workers. num_maps: Anomaly-map PNGs to write.
        model_options: More keyword arguments for the model (e.g. ``{"reconstruction_width": 32}`` for a
            smaller DRAEM, ``{"teacher_weights": FILE}`` for DeSTSeg).

    Returns:
        The content of ``metrics.json`` (``metrics``: image / pixel AUROC, AUPR, F1Max and pixel AUPRO;
        ``config``; ``seconds``) plus ``metrics_path``, ``maps`` and ``checkpoint``.
    """
    # 1. Check the arguments and the folder layout.
    if model not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {model!r}")
    for name, value in (("epochs", epochs), ("image_size", image_size), ("batch_size", batch_size or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    root, defects, has_test_good = check_mvtec_layout(data_root, category)
    batch_size = batch_size or DEFAULT_BATCH[model]
    p = DEFAULT_P[model] if p is None else p
    out = Path(out_dir)
    seed_everything(seed, workers=True, verbose=False)
    started = time.perf_counter()

    # 2. Data: anomalib's Folder (test = every defect + test/good), its train set mixed with the bank.
    folder = Folder(
        name=category,
        root=root,
        normal_dir="train/good",
        abnormal_dir=[f"test/{defect}" for defect in defects],
        normal_test_dir="test/good" if has_test_good else None,
        mask_dir=[f"ground_truth/{defect}" for defect in defects],
        train_batch_size=batch_size,
        eval_batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
    )
    datamodule = AnoGenDataModule(folder, bank, p=p, defect_type=defect_type, seed=seed)

    # 3. Model with a pre-processor at `image_size`; no anomalib visualizer (maps are written below).
    size = (image_size, image_size)
    options = dict(model_options or {})
    if model == "draem":
        pre_processor = WeakDraem.configure_pre_processor(size)
        detector = WeakDraem(dtd_dir, tau=tau, pre_processor=pre_processor, visualizer=False, **options)
    else:
        if de_st_steps is None:
            n_train = len(list_images(root / "train" / "good"))
            total = _train_steps(n_train, batch_size, epochs, max_steps, limit_train_batches)
            de_st_steps = max(1, total // 5)
        pre_processor = DeSTSeg.configure_pre_processor(size)
        detector = DeSTSeg(
            tau=tau,
            de_st_steps=de_st_steps,
            dtd_dir=dtd_dir,
            pretrained=pretrained,
            pre_processor=pre_processor,
            visualizer=False,
            **options,
        )

    # 4. Train and test with anomalib's Engine.
    engine = Engine(
        max_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        limit_train_batches=limit_train_batches,
        accelerator=accelerator,
        devices=1,
        default_root_dir=out / "anomalib",
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(detector, datamodule=datamodule)
    results = engine.test(detector, datamodule=datamodule, verbose=False)
    logged = results[0] if results else {}

    # 5. Metrics (non-finite values written as null), maps, and the record.
    metrics = {}
    for name in METRIC_NAMES:
        value = float(logged[name]) if name in logged else float("nan")
        if not math.isfinite(value):
            logger.warning("metric %s is not finite (%s): written as null", name, value)
        metrics[name] = value if math.isfinite(value) else None
    maps = save_anomaly_maps(detector, datamodule.test_data, out / "maps", count=num_maps)
    record = {
        "metrics": metrics,
        "config": {
            "data_root": str(Path(data_root)),
            "category": category,
            "bank": str(getattr(datamodule.bank, "root", bank)),
            "bank_samples": len(datamodule.bank),
            "defect_types": defects,
            "model": model,
            "tau": tau,
            "p": p,
            "epochs": epochs,
            "max_steps": max_steps,
            "limit_train_batches": limit_train_batches,
            "image_size": image_size,
            "batch_size": batch_size,
            "de_st_steps": de_st_steps if model == "destseg" else None,
            "seed": seed,
            "model_options": options,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    metrics_path = write_bytes_atomic(
        json.dumps(record, indent=2, default=str).encode(), out / "metrics.json"
    )
    checkpoint = engine.best_model_path
    return {
        **record,
        "metrics_path": str(metrics_path),
        "maps": [str(m) for m in maps],
        "checkpoint": checkpoint,
    }
