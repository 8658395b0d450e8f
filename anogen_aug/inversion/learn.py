"""`learn_defect_embedding`: AnoGen stage 1 as one story in numbered steps.

Its parts live next door: one optimisation step in `.step`, resumable checkpoints in `.checkpoints`, the settings
in `.config`; the support set is loaded and checked by `anogen_aug.support`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..backbone import Backbone
from ..embedding import DefectEmbedding
from ..images import resize_image
from ..masks import resize_mask
from ..precision import warn_if_slow_bf16
from ..support import SupportSet, load_support_set
from .checkpoints import latest_checkpoint, load_checkpoint, locked_output_dir, save_checkpoint
from .config import InversionConfig
from .step import SupportLatents, encode_support, init_vectors, template_ids, train_step

logger = logging.getLogger(__name__)


def learn_defect_embedding(
    backbone: Backbone,
    images: Sequence[Any],
    masks: Sequence[Any],
    *,
    config: InversionConfig | None = None,
    generator: torch.Generator | None = None,
    placeholder_token: str | None = None,
    category: str | None = None,
    defect_type: str | None = None,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> DefectEmbedding:
    """Learn a defect token from a few real defect images and their pixel masks (AnoGen stage 1).

    Only the token vector(s) train; every backbone parameter is left bit-identical.

    Args:
        backbone: The frozen LDM (`load_backbone`).
        images: The support defects (1-3 recommended): a list of paths, PIL images, arrays or ``(3, H, W)``
            tensors in [0, 1], or one ``(K, 3, H, W)`` tensor (`anogen_aug.support`; not a single image).
        masks: One pixel mask per image, the same height and width as it; any non-zero pixel is defect.
        config: Settings (default: the reference settings, `InversionConfig()`).
        generator: The only source of randomness (default ``torch.Generator().manual_seed(0)``). Same seed, same
            vector, bit for bit. On resume its state is restored from the checkpoint.
        placeholder_token: The learned token's name (default ``f"<{defect_type or 'defect'}>"``).
        category, defect_type: Metadata stored in the embedding.
        output_dir: Folder for checkpoints ``checkpoint-<step>/`` (every ``config.checkpointing_steps`` steps and
            at the end); None writes nothing. Locked while the run writes it: a second run on the same folder
            raises `FolderLockedError` at once, naming the holder's pid.
        resume: Continue from the latest checkpoint in ``output_dir``; the result equals an uninterrupted run.
        progress: Show a tqdm progress bar with the loss.
        callback: Called as ``callback(step, loss)`` after each step (``step`` counts from 1).

    Returns:
        The learned `DefectEmbedding` ``(num_vectors, token_dim)`` with its provenance.
    """
    # 1. Check inputs: the support set, the settings against the backbone, the token, where checkpoints go.
    config = _check_arguments(backbone, config, resume=resume, output_dir=output_dir)
    support_set = _load_support(images, masks)
    resolution = _check_backbone(backbone, config)
    init = init_vectors(backbone, config)  # (n, D)
    token = _check_token(placeholder_token, defect_type)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    # 2. Resize to the model's resolution (bicubic, the mask too, kept binary), as the authors' data loader.
    pixels, pixel_masks = _resize_support(support_set, resolution)  # (K, 3, R, R), (K, 1, R, R)
    # 3. Encode the support set and its horizontal flips once; each step samples the cached VAE posterior.
    support = encode_support(backbone, pixels, pixel_masks, mixed_precision=config.mixed_precision)
    # 4. The only trainable tensor: v, initialised from the init word's embedding; AdamW on it alone.
    vectors = init.to(backbone.device).clone().requires_grad_(True)  # (n, D), float32
    optimizer = torch.optim.AdamW(
        [vectors], lr=config.effective_learning_rate, weight_decay=config.adam_weight_decay
    )
    meta = _checkpoint_meta(backbone, config, support_set, resolution)
    run = _Run(vectors, optimizer, generator, meta, None if output_dir is None else Path(output_dir))
    # 5. Lock the output folder (one writer at a time); resume: the vector, AdamW's moments and the generator's
    #    state continue where the checkpoint stopped.
    with locked_output_dir(run.output_dir):
        start = _resume(run) if resume else 0
        # 6. Minimise the masked denoising loss ||(eps - eps_theta(z_t, t, c(v))) * M||^2, one batch per step.
        _optimise(backbone, support, run, config=config, start=start, token=token, progress=progress,
                  callback=callback)  # fmt: skip
    # 7. The embedding and where it came from.
    return _embedding(backbone, run, token, config, category=category, defect_type=defect_type)


@dataclass(frozen=True)
class _Run:
    """What one run trains, draws from and checkpoints: the state a checkpoint saves and restores.

    Attributes:
        vectors: The learned vectors ``(n, D)``, float32, the only trainable tensor.
        optimizer: AdamW on ``vectors`` alone.
        generator: The source of every draw of the steps.
        meta: The checkpoints' metadata (`anogen_aug.inversion.checkpoints`).
        output_dir: Where checkpoints go; None writes none.
    """

    vectors: torch.Tensor
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    meta: dict[str, Any]
    output_dir: Path | None


# --- step 1: checks -------------------------------------------------------------------------------------------
def _check_arguments(
    backbone: Backbone, config: InversionConfig | None, *, resume: bool, output_dir: Any
) -> InversionConfig:
    """The config (the reference settings when None), after checking the arguments' types and ``resume``."""
    config = InversionConfig() if config is None else config
    if not isinstance(config, InversionConfig):
        raise TypeError(f"`config` must be an InversionConfig, got {type(config).__name__}")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"`backbone` must be a Backbone (see load_backbone), got {type(backbone).__name__}")
    if resume and output_dir is None:
        raise ValueError("`resume=True` needs the `output_dir` that holds the checkpoints")
    warn_if_slow_bf16(backbone.device, config.mixed_precision)
    return config


def _load_support(images: Any, masks: Any) -> SupportSet:
    support_set = load_support_set(images, masks)
    if len(support_set) > 3:
        logger.warning("AnoGen is designed for 1-3 support images; got %d (accepted)", len(support_set))
    return support_set


def _check_backbone(backbone: Backbone, config: InversionConfig) -> int:
    """The training resolution, after checking that the backbone can train at it."""
    resolution = config.resolution or backbone.resolution
    if resolution % backbone.vae_scale_factor:
        raise ValueError(
            f"`config.resolution` must be a multiple of the backbone's VAE scale factor "
            f"{backbone.vae_scale_factor}, got {resolution}"
        )
    prediction_type = backbone.make_noise_scheduler().config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"the backbone's scheduler predicts {prediction_type!r}; textual inversion supports "
            "'epsilon' and 'v_prediction'"
        )
    return resolution


def _check_token(token: str | None, defect_type: str | None) -> str:
    name = token or f"<{defect_type or 'defect'}>"
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        source = "`placeholder_token`" if token else "the token made from `defect_type`"
        raise ValueError(
            f"{source} must be a non-empty string without spaces, got {name!r}; pass placeholder_token="
        )
    return name


# --- step 2: the support set at the training resolution ---------------------------------------------------------
def _resize_support(support_set: SupportSet, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair resized to ``size x size``: images ``(K, 3, R, R)`` bicubic, masks ``(K, 1, R, R)`` alike."""
    images, masks = [], []
    for i, (image, mask) in enumerate(zip(support_set.images, support_set.masks)):
        if image.shape[-2:] != (size, size):
            image = resize_image(image, (size, size))
            resized = resize_mask(mask, size, rule="bicubic")
            if not resized.any():
                raise ValueError(
                    f"`masks[{i}]` has no pixel left after resizing {mask.shape[-2]}x{mask.shape[-1]} to "
                    f"{size}x{size}: crop the image around the defect or set a larger `config.resolution`"
                )
            mask = resized
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


# --- steps 5 and 6: resume, then the optimisation loop ------------------------------------------------------------
def _checkpoint_meta(
    backbone: Backbone, config: InversionConfig, support_set: SupportSet, resolution: int
) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (see `anogen_aug.inversion.checkpoints`)."""
    return {
        "config": config.to_dict(),
        "support_hashes": list(support_set.hashes),
        "backbone": backbone.name_or_path,
        "token_dim": backbone.token_dim,
        "resolution": resolution,
    }


def _resume(run: _Run) -> int:
    """The step to start from: the latest checkpoint's (restored into ``run`` in place), or 0 when there is none."""
    latest = latest_checkpoint(run.output_dir)
    if latest is None:
        logger.warning("resume=True but %s holds no checkpoint: starting at step 0", run.output_dir)
        return 0
    start = load_checkpoint(latest, run.vectors, run.optimizer, run.generator, run.meta)
    logger.info("resumed from %s (step %d)", latest, start)
    return start


def _optimise(
    backbone: Backbone,
    support: SupportLatents,
    run: _Run,
    *,
    config: InversionConfig,
    start: int,
    token: str,
    progress: bool,
    callback: Callable[[int, float], None] | None,
) -> None:
    """Take steps ``start + 1 .. max_train_steps``; save a checkpoint (when ``run.output_dir`` is set) every
    ``checkpointing_steps`` steps and at the end. A non-finite loss stops the run."""
    logger.info(
        "learning %s on %d support image(s) at %d px: %d steps, batch %d, lr %g",
        token,
        support.num_images,
        run.meta["resolution"],
        config.max_train_steps,
        config.train_batch_size,
        config.effective_learning_rate,
    )
    noise_scheduler = backbone.make_noise_scheduler()
    prompt_ids = template_ids(backbone, config)  # (T, L): tokenised once, not at every step
    bar = tqdm(
        total=config.max_train_steps,
        initial=start,
        disable=not progress,
        desc=f"learning {token}",
        unit="step",
    )
    with bar:
        for step in range(start + 1, config.max_train_steps + 1):
            loss = train_step(
                backbone,
                support,
                run.vectors,
                run.optimizer,
                noise_scheduler,
                config=config,
                generator=run.generator,
                prompt_ids=prompt_ids,
            )
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the loss is {loss} at step {step}; lower `learning_rate` or use mixed_precision='no'"
                )
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if run.output_dir is not None and (
                step % config.checkpointing_steps == 0 or step == config.max_train_steps
            ):
                save_checkpoint(run.output_dir, step, run.vectors, run.optimizer, run.generator, run.meta)
            if callback is not None:
                callback(step, loss)


# --- step 7: the result ---------------------------------------------------------------------------------------
def _embedding(
    backbone: Backbone,
    run: _Run,
    token: str,
    config: InversionConfig,
    *,
    category: str | None,
    defect_type: str | None,
) -> DefectEmbedding:
    """The learned vectors with their provenance."""
    return DefectEmbedding(
        run.vectors.detach().cpu(),
        token,
        backbone=backbone.name_or_path,
        backbone_revision=backbone.revision,
        init_word=config.init_word,
        category=category,
        defect_type=defect_type,
        steps=config.max_train_steps,
        config=config.to_dict(),
        support_hashes=list(run.meta["support_hashes"]),
        resolution=run.meta["resolution"],
    )
