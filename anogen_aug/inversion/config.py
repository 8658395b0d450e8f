"""`InversionConfig`: the settings of stage 1, validated once, saved as JSON with the embedding they produced."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_probability,
    check_str,
)
from .templates import IMAGENET_TEMPLATES_SMALL


@dataclass(frozen=True)
class InversionConfig:
    """Settings of `learn_defect_embedding`; the defaults are AnoGen's reference settings.

    Field names follow diffusers' ``examples/textual_inversion``. Saved as JSON in the embedding's metadata.

    Attributes:
        max_train_steps: Optimisation steps (6100).
        train_batch_size: Samples per step, drawn with replacement from the support set (4).
        learning_rate: Base AdamW learning rate (5e-3).
        scale_lr: Multiply the learning rate by the batch size like the authors' ``--scale_lr`` (0.02 at batch 4).
        resolution: Square side the support images are resized to; None = the backbone's resolution.
        init_word: A single token whose input embedding initialises the vector(s) ("defect").
        num_vectors: Vectors of the learned token (1).
        flip_p: Probability of the joint horizontal flip of image and mask (0.5).
        templates: Prompt templates, each with one ``{}``; None = `IMAGENET_TEMPLATES_SMALL`.
        loss_normalizer: ``"latent"``: the masked error's mean over the whole latent (the authors' code);
            ``"mask"``: its mean over the mask.
        adam_weight_decay: AdamW weight decay (1e-2: torch's default, which the authors used).
        checkpointing_steps: Save a resumable checkpoint every this many steps (when ``output_dir`` is given).
        mixed_precision: ``"no"`` or ``"bf16"`` (bf16 autocast of the VAE and UNet forward passes; the learned
            vector, the optimiser and the loss stay float32, the text encoder runs outside autocast).
    """

    max_train_steps: int = 6100
    train_batch_size: int = 4
    learning_rate: float = 5e-3
    scale_lr: bool = True
    resolution: int | None = None
    init_word: str = "defect"
    num_vectors: int = 1
    flip_p: float = 0.5
    templates: tuple[str, ...] | None = None
    loss_normalizer: str = "latent"
    adam_weight_decay: float = 1e-2
    checkpointing_steps: int = 500
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        # Checked in field order, so the first bad field is the one reported. Values are checked, not converted:
        # what the user passed is what `to_dict` saves.
        check_int(self.max_train_steps, "max_train_steps")
        check_int(self.train_batch_size, "train_batch_size")
        check_number(self.learning_rate, "learning_rate", low=0, low_open=True)
        check_bool(self.scale_lr, "scale_lr")
        if self.resolution is not None:
            check_int(self.resolution, "resolution", low=8)
        check_str(self.init_word, "init_word")
        check_int(self.num_vectors, "num_vectors")
        check_probability(self.flip_p, "flip_p")
        object.__setattr__(self, "templates", _check_templates(self.templates))
        check_choice(self.loss_normalizer, "loss_normalizer", ("latent", "mask"))
        check_number(self.adam_weight_decay, "adam_weight_decay", low=0)
        check_int(self.checkpointing_steps, "checkpointing_steps")
        check_choice(self.mixed_precision, "mixed_precision", ("no", "bf16"))

    @property
    def effective_learning_rate(self) -> float:
        """The AdamW learning rate: ``learning_rate * train_batch_size`` when ``scale_lr``."""
        return self.learning_rate * (self.train_batch_size if self.scale_lr else 1)

    @property
    def prompt_templates(self) -> tuple[str, ...]:
        """The templates each step draws from: ``templates``, or `IMAGENET_TEMPLATES_SMALL` when None."""
        return self.templates or IMAGENET_TEMPLATES_SMALL

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (templates as a list)."""
        data = asdict(self)
        data["templates"] = None if self.templates is None else list(self.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionConfig:
        """The config `to_dict` wrote; unknown fields are refused, not ignored."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown InversionConfig fields {unknown}")
        return cls(**data)


def _check_templates(templates: Any) -> tuple[str, ...] | None:
    """None, or the templates as a non-empty tuple of strings with exactly one ``{}`` each (from any iterable)."""
    if templates is None:
        return None
    if isinstance(templates, Iterable) and not isinstance(templates, str):
        templates = tuple(templates)
        if templates and all(map(_is_template, templates)):
            return templates
    raise ValueError(
        f"`templates` must be None or a non-empty list of strings with exactly one '{{}}' each, got {templates!r}"
    )


def _is_template(template: Any) -> bool:
    if not isinstance(template, str) or template.count("{}") != 1:
        return False
    try:
        template.format("*")
    except (IndexError, KeyError, ValueError):
        return False
    return True
