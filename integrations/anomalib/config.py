"""`TrainConfig`: the settings of `train_detector`, validated once and written into its ``metrics.json``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from anogen_aug.checks import (
    check_bool,
    check_choice,
    check_int,
    check_probability,
    check_str,
    is_int,
    is_number,
)
from anogen_aug.losses import check_tau

MODELS = ("draem", "destseg")
DEFAULT_P = {"draem": 0.5, "destseg": 1.0}  # the paper's mixes (see WeakDraem and DeSTSeg)
DEFAULT_BATCH = {"draem": 16, "destseg": 32}  # the papers' batch sizes
BANK_LABELS = ("auto", "boxes")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of `train_detector`; the defaults are a short run, the paper's are DRAEM 700 epochs, batch 16,
    DeSTSeg 5000 steps, batch 32, both at 256 px and tau 0.9.

    Attributes:
        model: The detector: "draem" (`WeakDraem`) or "destseg" (`DeSTSeg`).
        tau: Weak-supervision threshold on P(normal), in (0, 1].
        epochs: Training epochs.
        image_size: Side of the square model input in pixels.
        batch_size: Train and eval batch size; None = the paper's (16 for draem, 32 for destseg).
        max_steps: Stop training after this many optimiser steps; None = no limit.
        limit_train_batches: Train batches per epoch: a count, or a fraction in (0, 1]; None = all.
        seed: Seeds Lightning's global RNGs (anomalib's Perlin generator draws from them) and the bank draws.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        p: Probability that a train item is a bank sample; None = the paper's (0.5 draem, 1.0 destseg).
        defect_type: Use only bank samples of this defect type; None = all.
        de_st_steps: DeSTSeg steps that train the denoising student first; None = the first 20 % of the steps.
        pretrained: DeSTSeg teacher with ImageNet weights from the local torchvision cache (never downloaded).
        dtd_dir: Existing folder of texture images for the Perlin anomalies; None = Perlin noise textures.
        num_workers: DataLoader workers.
        num_maps: Anomaly-map PNGs (image | ground truth | map) to write.
        exclude_support: A support.json (as ``anogen-aug learn-all`` writes it, or its folder): the support
            images it lists for this category are removed from the test (and validation) images, so the
            detector is not tested on the anomalies its bank was made from; None = test on every image.
        save_checkpoint: Write the trained detector's Lightning checkpoint (weights and optimiser state, about
            1.1 GB for the full-width DRAEM at any image size) to
            OUT/anomalib/<Model>/<category>/v<N>/weights/lightning/model.ckpt; --no-save-checkpoint skips it.
        bank_labels: How bank samples are labelled: "auto" (crop-and-paste samples by their exact pixel masks,
            diffusion samples by their boxes) or "boxes" (every sample by its box, the pixel masks hidden:
            `AnomalyBank` ``boxes_only``), which labels a crop-and-paste bank as the paper's diffusion generator
            labels its output, so box labels and tau can be tested where the exact masks are known.
        model_options: More keyword arguments for the model, e.g. {"reconstruction_width": 32} for a narrower
            DRAEM or {"teacher_weights": FILE} for DeSTSeg.
    """

    model: str = "draem"
    tau: float = 0.9
    epochs: int = 1
    image_size: int = 256
    batch_size: int | None = None
    max_steps: int | None = None
    limit_train_batches: int | float | None = None
    seed: int = 0
    accelerator: str = "auto"
    p: float | None = None
    defect_type: str | None = None
    de_st_steps: int | None = None
    pretrained: bool = True
    dtd_dir: str | None = None
    num_workers: int = 0
    num_maps: int = 4
    exclude_support: str | None = None
    save_checkpoint: bool = True
    bank_labels: str = "auto"
    model_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Checked in field order, so the first bad field is the one reported.
        check_choice(self.model, "model", MODELS)
        check_tau(self.tau)
        check_int(self.epochs, "epochs")
        check_int(self.image_size, "image_size")
        _optional(check_int, self.batch_size, "batch_size")
        _optional(check_int, self.max_steps, "max_steps")
        _check_limit(self.limit_train_batches)
        check_int(self.seed, "seed", low=0)
        check_str(self.accelerator, "accelerator")
        _optional(check_probability, self.p, "p")
        _optional(check_str, self.defect_type, "defect_type")
        _optional(check_int, self.de_st_steps, "de_st_steps", low=0)
        check_bool(self.pretrained, "pretrained")
        _optional_path(self, "dtd_dir")
        check_int(self.num_workers, "num_workers", low=0)
        check_int(self.num_maps, "num_maps", low=0)
        _optional_path(self, "exclude_support")
        check_bool(self.save_checkpoint, "save_checkpoint")
        check_choice(self.bank_labels, "bank_labels", BANK_LABELS)
        object.__setattr__(self, "model_options", _check_options(self.model_options))

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the paper's batch size of ``model`` when None."""
        return self.batch_size or DEFAULT_BATCH[self.model]

    @property
    def effective_p(self) -> float:
        """``p``, or the paper's share of bank samples for ``model`` when None."""
        return DEFAULT_P[self.model] if self.p is None else float(self.p)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config `to_dict` wrote; unknown fields are refused, not ignored."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**data)


def _optional(check, value, name: str, **bounds) -> None:
    if value is not None:
        check(value, name, **bounds)


def _optional_path(config: TrainConfig, name: str) -> None:
    """None or a path; a path object is kept as its string, so the config stays JSON."""
    value = getattr(config, name)
    if value is not None:
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise ValueError(f"`{name}` must be a path or None, got {value!r}")
        object.__setattr__(config, name, os.fspath(value))


def _check_limit(value) -> None:
    """None, a count >= 1 or a fraction in (0, 1] (Lightning's ``limit_train_batches``)."""
    if (
        value is None
        or is_int(value, 1)
        or (is_number(value) and isinstance(value, float) and 0 < value <= 1)
    ):
        return
    raise ValueError(f"`limit_train_batches` must be an integer >= 1 or a fraction in (0, 1], got {value!r}")


def _check_options(options) -> dict[str, Any] | None:
    """None, or a copy of a dict with string keys (so the frozen config does not share the caller's dict)."""
    if options is None:
        return None
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise ValueError(f"`model_options` must be a dict of keyword arguments or None, got {options!r}")
    return dict(options)
