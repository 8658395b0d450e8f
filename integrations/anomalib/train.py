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

from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Folder
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anogen_aug.atomic import write_bytes_atomic
from anogen_aug.images import list_images
from anogen_aug.mvtec import MVTecFolder, read_mvtec

from .config import TrainConfig
from .datamodule import AnoGenDataModule
from .destseg import DeSTSeg
from .draem import WeakDraem
from .evaluator import METRIC_NAMES
from .maps import save_anomaly_maps

logger = logging.getLogger(__name__)


def check_mvtec_layout(data_root: str | os.PathLike, category: str) -> MVTecFolder:
    """Read ``<data_root>/<category>`` (`read_mvtec`) and check what anomalib's ``Folder`` needs of it.

    ``Folder`` pairs anomalous images with masks by sorted position, not by name: every mask file under
    ``ground_truth/`` must be the mask of the image at its position, so stray masks are refused here.

    Returns:
        The `MVTecFolder`, with at least one defect type.
    """
    root = Path(data_root) / category
    folder = read_mvtec(root)  # FileNotFoundError naming the folder when it is not in the MVTec layout
    if not folder.defect_types:
        raise ValueError(f"{root / 'test'} holds no defect folder (test/<defect>/): nothing to evaluate on")
    anomalies = sorted((s for s in folder.test if s.gt_label), key=lambda s: str(s.image_path))
    masks = sorted(
        str(path)
        for defect in folder.defect_types
        for path in list_images(root / "ground_truth" / defect, name=f"ground_truth/{defect}")
    )
    if len(anomalies) != len(masks):
        raise ValueError(f"{root}: {len(anomalies)} defect images but {len(masks)} masks in ground_truth/")
    for sample, mask in zip(anomalies, masks):
        if str(sample.mask_path) != mask:
            raise ValueError(
                f"mask {mask} does not belong to image {sample.image_path} (expected <stem>_mask.png beside it)"
            )
    return folder


def train_detector(
    data_root: str | os.PathLike,
    category: str,
    bank=None,
    *,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike = "results",
) -> dict:
    """Train ``WeakDraem`` or ``DeSTSeg`` on normal images + bank anomalies, test, write metrics and maps.

    Args:
        data_root: Folder holding ``<category>/{train/good, test/<defect>, ground_truth/<defect>}``.
        category: The category folder name.
        bank: An `AnomalyBank` or a bank folder; None trains the baseline without generated anomalies: Perlin
            anomalies on every row, anomalib's own DRAEM / DeSTSeg recipe (``config.p`` must then be None or 0).
        config: The settings (`TrainConfig`; None = its defaults).
        out_dir: Output folder: ``metrics.json``, ``maps/*.png``, ``anomalib/`` (the checkpoint, unless
            ``config.save_checkpoint`` is False).

    Returns:
        The content of ``metrics.json`` (``metrics``: image / pixel AUROC, AUPR, F1Max and pixel AUPRO;
        ``config``; ``seconds``) plus ``metrics_path``, ``maps`` and ``checkpoint`` (its path, or None).
    """
    # 1. Check the settings and the folder layout; seed.
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig or None, got {type(config).__name__}")
    folder = check_mvtec_layout(data_root, category)
    out = Path(out_dir)
    seed_everything(config.seed, workers=True, verbose=False)
    started = time.perf_counter()

    # 2. Data: anomalib's Folder (test = every defect + test/good, less the support images when asked), its
    #    train set mixed with the bank.
    datamodule = _datamodule(folder, config, bank)

    # 3. Model with a pre-processor at `image_size`; no anomalib visualizer (maps are written below).
    de_st_steps = _de_st_steps(config, len(folder.train)) if config.model == "destseg" else None
    detector = _detector(config, de_st_steps, baseline=bank is None)

    # 4. Train and test with anomalib's Engine.
    engine = _engine(config, out / "anomalib")
    engine.fit(detector, datamodule=datamodule)
    results = engine.test(detector, datamodule=datamodule, verbose=False)

    # 5. Metrics, maps, and the record.
    maps = save_anomaly_maps(detector, datamodule.test_data, out / "maps", count=config.num_maps)
    record = {
        "metrics": _metrics(results[0] if results else {}),
        "config": {
            **_run_config(config, data_root, folder, datamodule.bank, bank, de_st_steps),
            "perlin_p": detector.perlin_p,
            "excluded_images": datamodule.excluded_images,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    metrics_path = write_bytes_atomic(
        json.dumps(record, indent=2, default=str).encode(), out / "metrics.json"
    )
    return {
        **record,
        "metrics_path": str(metrics_path),
        "maps": [str(m) for m in maps],
        "checkpoint": engine.best_model_path or None,
    }


def _datamodule(folder: MVTecFolder, config: TrainConfig, bank) -> AnoGenDataModule:
    if bank is None and config.p:
        raise ValueError(
            f"`config.p` is {config.p}, but no bank was given: give a bank, or p=0 for the baseline"
        )
    return AnoGenDataModule(
        _folder_datamodule(folder, config),
        bank,
        p=0.0 if bank is None else config.effective_p,
        defect_type=config.defect_type,
        boxes_only=config.bank_labels == "boxes",
        seed=config.seed,
        exclude_images=_support_images(config.exclude_support, folder.category),
    )


def _support_images(support_json: str | None, category: str) -> list[str] | None:
    """The support images of ``category`` listed in a support.json (`TrainConfig.exclude_support`)."""
    if support_json is None:
        return None
    from anogen_aug.whole_dataset import read_support_json, support_files

    files = support_files(read_support_json(support_json))
    if category not in files:
        raise ValueError(
            f"`exclude_support`: {support_json} holds no support draw for category {category!r} "
            f"(it holds {sorted(files)})"
        )
    return [str(path) for paths in files[category].values() for path in paths]


def _folder_datamodule(folder: MVTecFolder, config: TrainConfig) -> Folder:
    defects = folder.defect_types
    return Folder(
        name=folder.category,
        root=folder.root,
        normal_dir="train/good",
        abnormal_dir=[f"test/{defect}" for defect in defects],
        normal_test_dir="test/good" if folder.has_test_normals else None,
        mask_dir=[f"ground_truth/{defect}" for defect in defects],
        train_batch_size=config.effective_batch_size,
        eval_batch_size=config.effective_batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
    )


def _de_st_steps(config: TrainConfig, n_train: int) -> int:
    """DeSTSeg's student steps: as configured, or the first 20 % of the training steps (1000 of 5000)."""
    if config.de_st_steps is not None:
        return config.de_st_steps
    per_epoch = math.ceil(n_train / config.effective_batch_size)
    limit = config.limit_train_batches
    if isinstance(limit, float):
        per_epoch = max(1, int(per_epoch * limit))
    elif isinstance(limit, int):
        per_epoch = min(per_epoch, limit)
    total = config.epochs * per_epoch
    total = min(total, config.max_steps) if config.max_steps else total
    return max(1, total // 5)


def _detector(config: TrainConfig, de_st_steps: int | None, *, baseline: bool):
    size = (config.image_size, config.image_size)
    options = dict(config.model_options or {})
    if baseline:  # no bank: every row is a Perlin row (half of them left anomaly-free), anomalib's own recipe
        options.setdefault("perlin_p", 1.0)
    if config.model == "draem":
        pre_processor = WeakDraem.configure_pre_processor(size)
        return WeakDraem(
            config.dtd_dir, tau=config.tau, pre_processor=pre_processor, visualizer=False, **options
        )
    return DeSTSeg(
        tau=config.tau,
        de_st_steps=de_st_steps,
        dtd_dir=config.dtd_dir,
        pretrained=config.pretrained,
        pre_processor=DeSTSeg.configure_pre_processor(size),
        visualizer=False,
        **options,
    )


def _engine(config: TrainConfig, root: Path) -> Engine:
    # anomalib's Engine adds a checkpoint callback unless it is given one: one that keeps no checkpoint
    # (save_top_k=0) is how a run writes none (Lightning refuses enable_checkpointing=False beside it).
    callbacks = [] if config.save_checkpoint else [ModelCheckpoint(save_top_k=0)]
    return Engine(
        callbacks=callbacks,
        max_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        limit_train_batches=config.limit_train_batches,
        accelerator=config.accelerator,
        devices=1,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
    )


def _metrics(logged: dict) -> dict[str, float | None]:
    """The `METRIC_NAMES` values logged at test time; a non-finite value (or a missing one) becomes None."""
    metrics = {}
    for name in METRIC_NAMES:
        value = float(logged[name]) if name in logged else float("nan")
        if not math.isfinite(value):
            logger.warning("metric %s is not finite (%s): written as null", name, value)
        metrics[name] = value if math.isfinite(value) else None
    return metrics


def _run_config(config: TrainConfig, data_root, folder: MVTecFolder, opened_bank, bank, de_st_steps) -> dict:
    """The ``config`` of ``metrics.json``: the data, the bank, and the settings with their defaults resolved."""
    return {
        "data_root": str(Path(data_root)),
        "category": folder.category,
        "bank": None if opened_bank is None else str(getattr(opened_bank, "root", bank)),
        "bank_samples": 0 if opened_bank is None else len(opened_bank),
        "defect_types": folder.defect_types,
        **config.to_dict(),
        "p": 0.0 if opened_bank is None else config.effective_p,
        "batch_size": config.effective_batch_size,
        "de_st_steps": de_st_steps,
        "model_options": dict(config.model_options or {}),
    }
