"""Stage 1 of AnoGen: learn a defect embedding from 1-3 real defects by mask-guided textual inversion.

The latent diffusion model stays frozen; one new token vector ``v`` (or a few) is the only thing trained, with
the masked denoising objective of AnoGen (Gui, Gao et al., ECCV 2024, arXiv 2505.09263, stage 1):

    v* = argmin_v  E_{z = E(I_a), eps, t} || (eps - eps_theta(z_t, t, c(prompt with v))) * M_a ||^2

where ``M_a`` is the defect mask at latent resolution. The mask keeps ``v`` from learning "bottle" instead of
"broken". `InversionConfig`'s defaults are the settings of the authors' released code.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from .atomic import write_bytes_atomic
from .backbone import Backbone, warn_if_slow_bf16
from .embedding import DefectEmbedding
from .images import content_hash, load_image, load_mask

logger = logging.getLogger(__name__)

_PHOTO_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)
#: The standard textual-inversion prompts (``imagenet_templates_small`` of rinongal/textual_inversion, which the
#: AnoGen code samples from): the 27 photo templates, then the same with a leading "a photo of" read as "an
#: illustration of" and as "a depiction of". 81 entries; the repeats are kept, they weight the draw.
IMAGENET_TEMPLATES_SMALL = tuple(
    template.replace("a photo of", variant, 1) if template.startswith("a photo of") else template
    for variant in ("a photo of", "an illustration of", "a depiction of")
    for template in _PHOTO_TEMPLATES
)

_STATE_FILE, _META_FILE = "state.safetensors", "checkpoint.json"
#: Config fields that may change when resuming (train longer, checkpoint at other steps).
_RESUMABLE_CHANGES = ("max_train_steps", "checkpointing_steps")


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any, low: float, *, strict: bool = False) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > low if strict else value >= low


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
        if self.templates is not None and not isinstance(self.templates, str):
            object.__setattr__(self, "templates", tuple(self.templates))
        for name, (ok, expected) in _FIELD_CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"`{name}` must be {expected}, got {value!r}")

    @property
    def effective_learning_rate(self) -> float:
        """The AdamW learning rate: ``learning_rate * train_batch_size`` when ``scale_lr``."""
        return self.learning_rate * (self.train_batch_size if self.scale_lr else 1)

    @property
    def prompt_templates(self) -> tuple[str, ...]:
        return self.templates or IMAGENET_TEMPLATES_SMALL

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (templates as a list)."""
        data = asdict(self)
        data["templates"] = None if self.templates is None else list(self.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown InversionConfig fields {unknown}")
        return cls(**data)


def _is_template(template: Any) -> bool:
    if not isinstance(template, str) or template.count("{}") != 1:
        return False
    try:
        template.format("*")
    except (IndexError, KeyError, ValueError):
        return False
    return True


#: Each config field's test and the expectation its error states.
_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_train_steps": (lambda v: _is_int(v, 1), "a positive integer"),
    "train_batch_size": (lambda v: _is_int(v, 1), "a positive integer"),
    "learning_rate": (lambda v: _is_number(v, 0, strict=True), "a positive finite number"),
    "scale_lr": (lambda v: isinstance(v, bool), "True or False"),
    "resolution": (
        lambda v: v is None or _is_int(v, 8),
        "None (the backbone's resolution) or an integer >= 8",
    ),
    "init_word": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty word"),
    "num_vectors": (lambda v: _is_int(v, 1), "a positive integer"),
    "flip_p": (lambda v: _is_number(v, 0) and v <= 1, "in [0, 1]"),
    "templates": (
        lambda v: v is None or (isinstance(v, tuple) and bool(v) and all(map(_is_template, v))),
        "None or a non-empty list of strings with exactly one '{}' each",
    ),
    "loss_normalizer": (lambda v: v in ("latent", "mask"), "'latent' or 'mask'"),
    "adam_weight_decay": (lambda v: _is_number(v, 0), "a finite number >= 0"),
    "checkpointing_steps": (lambda v: _is_int(v, 1), "a positive integer"),
    "mixed_precision": (lambda v: v in ("no", "bf16"), "'no' or 'bf16'"),
}


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
        images: The support defects (1-3 recommended): paths, PIL images, arrays or ``(3, H, W)`` tensors in
            [0, 1], or one ``(K, 3, H, W)`` tensor.
        masks: One pixel mask per image, the same height and width as it; any non-zero pixel is defect.
        config: Settings (default: the reference settings, `InversionConfig()`).
        generator: The only source of randomness (default ``torch.Generator().manual_seed(0)``). Same seed, same
            vector, bit for bit. On resume its state is restored from the checkpoint.
        placeholder_token: The learned token's name (default ``f"<{defect_type or 'defect'}>"``).
        category, defect_type: Metadata stored in the embedding.
        output_dir: Folder for checkpoints ``checkpoint-<step>/`` (every ``config.checkpointing_steps`` steps and
            at the end); None writes nothing.
        resume: Continue from the latest checkpoint in ``output_dir``; the result equals an uninterrupted run.
        progress: Show a tqdm progress bar with the loss.
        callback: Called as ``callback(step, loss)`` after each step (``step`` counts from 1).

    Returns:
        The learned `DefectEmbedding` ``(num_vectors, token_dim)`` with its provenance.
    """
    # 1. Check inputs: the support set, the settings against the backbone, where checkpoints go.
    config = InversionConfig() if config is None else config
    if not isinstance(config, InversionConfig):
        raise TypeError(f"`config` must be an InversionConfig, got {type(config).__name__}")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"`backbone` must be a Backbone (see load_backbone), got {type(backbone).__name__}")
    support_images, support_masks, support_hashes = _load_support(images, masks)
    resolution = _check_backbone(backbone, config)
    init = _init_vectors(backbone, config)  # (n, D)
    token = _check_token(placeholder_token, defect_type)
    if resume and output_dir is None:
        raise ValueError("`resume=True` needs the `output_dir` that holds the checkpoints")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    warn_if_slow_bf16(backbone, config.mixed_precision)

    # 2. Resize to the model's resolution (bicubic, the mask too, kept binary), as the authors' data loader.
    pairs = [
        _resize(image, mask, resolution, i)
        for i, (image, mask) in enumerate(zip(support_images, support_masks))
    ]
    support_images = torch.stack([image for image, _ in pairs])  # (K, 3, R, R)
    support_masks = torch.stack([mask for _, mask in pairs])  # (K, 1, R, R)

    # 3. Encode the support set and its horizontal flips once; each step samples the cached VAE posterior.
    support = _encode_support(backbone, support_images, support_masks, mixed_precision=config.mixed_precision)

    # 4. The only trainable tensor: v, initialised from the init word's embedding; AdamW on it alone.
    vectors = init.to(backbone.device).clone().requires_grad_(True)  # (n, D), float32
    optimizer = torch.optim.AdamW(
        [vectors], lr=config.effective_learning_rate, weight_decay=config.adam_weight_decay
    )
    noise_scheduler = backbone.make_noise_scheduler()
    meta = {
        "config": config.to_dict(),
        "support_hashes": support_hashes,
        "backbone": backbone.name_or_path,
        "token_dim": backbone.token_dim,
        "resolution": resolution,
    }

    # 5. Resume: the vector, AdamW's moments and the generator's state continue where the checkpoint stopped.
    start = 0
    if resume:
        latest = _latest_checkpoint(Path(output_dir))
        if latest is None:
            logger.warning("resume=True but %s holds no checkpoint: starting at step 0", output_dir)
        else:
            start = _load_checkpoint(latest, vectors, optimizer, generator, meta)
            logger.info("resumed from %s (step %d)", latest, start)

    # 6. Minimise the masked denoising loss ||(eps - eps_theta(z_t, t, c(v))) * M||^2, one batch per step.
    logger.info(
        "learning %s on %d support image(s) at %d px: %d steps, batch %d, lr %g",
        token,
        len(support_hashes),
        resolution,
        config.max_train_steps,
        config.train_batch_size,
        config.effective_learning_rate,
    )
    bar = tqdm(
        total=config.max_train_steps,
        initial=start,
        disable=not progress,
        desc=f"learning {token}",
        unit="step",
    )
    try:
        for step in range(start + 1, config.max_train_steps + 1):
            loss = _train_step(
                backbone, support, vectors, optimizer, noise_scheduler, config=config, generator=generator
            )
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the loss is {loss} at step {step}; lower `learning_rate` or use mixed_precision='no'"
                )
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if output_dir is not None and (
                step % config.checkpointing_steps == 0 or step == config.max_train_steps
            ):
                _save_checkpoint(Path(output_dir), step, vectors, optimizer, generator, meta)
            if callback is not None:
                callback(step, loss)
    finally:
        bar.close()

    # 7. The embedding and where it came from.
    return DefectEmbedding(
        vectors.detach().cpu(),
        token,
        backbone=backbone.name_or_path,
        backbone_revision=backbone.revision,
        init_word=config.init_word,
        category=category,
        defect_type=defect_type,
        steps=config.max_train_steps,
        config=config.to_dict(),
        support_hashes=support_hashes,
        resolution=resolution,
    )


# --- step 1: checks -------------------------------------------------------------------------------------------
def _as_list(value: Any, name: str) -> list[Any]:
    """A sequence as a list; a batch ``(K, C, H, W)`` as K items; anything else as one item."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4:
        return list(value)
    if value is None:
        raise TypeError(f"`{name}` must be a list of images, got None")
    return [value]


def _load_support(images: Any, masks: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Load and check the support set: images ``(3, H, W)``, masks ``(1, H, W)`` and the inputs' content hashes."""
    images, masks = _as_list(images, "images"), _as_list(masks, "masks")
    if not images:
        raise ValueError("`images` must hold at least one defect image, got none")
    if len(masks) != len(images):
        raise ValueError(
            f"`masks` must hold one mask per image: got {len(images)} image(s) and {len(masks)} mask(s)"
        )
    if len(images) > 3:
        logger.warning("AnoGen is designed for 1-3 support images; got %d (accepted)", len(images))
    loaded_images, loaded_masks = [], []
    for i, (image, mask) in enumerate(zip(images, masks)):
        image, mask = load_image(image, name=f"images[{i}]"), load_mask(mask, name=f"masks[{i}]")
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"`masks[{i}]` must have the same height and width as `images[{i}]` "
                f"({image.shape[-2]}x{image.shape[-1]}), got {mask.shape[-2]}x{mask.shape[-1]}"
            )
        if not mask.any():
            raise ValueError(
                f"`masks[{i}]` is empty (no non-zero pixel): the loss is taken inside the defect mask, "
                "so every support image needs its defect marked"
            )
        loaded_images.append(image)
        loaded_masks.append(mask)
    return loaded_images, loaded_masks, [content_hash(image) for image in images]


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


def _init_vectors(backbone: Backbone, config: InversionConfig) -> torch.Tensor:
    """``(num_vectors, D)`` float32 copies of the init word's input embedding."""
    vector = backbone.init_vector(config.init_word)  # ValueError unless a single token
    ids = backbone.tokenizer(config.init_word, add_special_tokens=False)["input_ids"]
    unknown = getattr(backbone.tokenizer, "unk_token_id", None)
    if unknown is not None and ids == [unknown]:
        raise ValueError(
            f"`init_word` {config.init_word!r} is not in the tokenizer's vocabulary (it encodes to the unknown "
            "token); choose a word the text encoder knows, e.g. 'defect'"
        )
    return vector.float().repeat(config.num_vectors, 1)  # (n, D)


def _check_token(token: str | None, defect_type: str | None) -> str:
    name = token or f"<{defect_type or 'defect'}>"
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        source = "`placeholder_token`" if token else "the token made from `defect_type`"
        raise ValueError(
            f"{source} must be a non-empty string without spaces, got {name!r}; pass placeholder_token="
        )
    return name


# --- steps 2 and 3: the support set at latent resolution, encoded once -------------------------------------------
def _resize(
    image: torch.Tensor, mask: torch.Tensor, size: int, index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic resize to ``size x size``: image ``(3, R, R)``, mask ``(1, R, R)`` binarised at 0.5."""
    if image.shape[-2:] == (size, size):
        return image, mask
    image = F.interpolate(image[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)
    resized = F.interpolate(mask[None], size=(size, size), mode="bicubic", antialias=True)[0]
    resized = (resized > 0.5).float()
    if not resized.any():
        raise ValueError(
            f"`masks[{index}]` has no pixel left after resizing {mask.shape[-2]}x{mask.shape[-1]} to "
            f"{size}x{size}: crop the image around the defect or set a larger `config.resolution`"
        )
    return image, resized


@dataclass(frozen=True)
class _SupportLatents:
    """The support set encoded once: row ``k`` is image ``k``, row ``K + k`` its horizontal flip.

    Attributes:
        mean, std: Scaled VAE posterior mean and standard deviation, ``(2K, C, h, w)``.
        mask: Latent defect masks in {0, 1}, ``(2K, 1, h, w)``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor

    @property
    def num_images(self) -> int:
        return self.mean.shape[0] // 2


def _autocast(backbone: Backbone, mixed_precision: str):
    return torch.autocast(backbone.device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


@torch.no_grad()
def _encode_support(
    backbone: Backbone, images: torch.Tensor, masks: torch.Tensor, *, mixed_precision: str = "no"
) -> _SupportLatents:
    """Encode images ``(K, 3, R, R)`` and masks ``(K, 1, R, R)``, each unflipped and flipped.

    The flips are encoded, not flipped in latent space: the VAE is not flip-equivariant. Sampling
    ``mean + std * randn`` per step is ``latent_dist.sample()`` without re-running the encoder.
    """
    pixels = torch.cat([images, images.flip(-1)])  # (2K, 3, R, R)
    pixel_masks = torch.cat([masks, masks.flip(-1)]).to(backbone.device)  # (2K, 1, R, R)
    with _autocast(backbone, mixed_precision):
        posterior = backbone.encode_distribution(pixels)
    scale = backbone.vae.config.scaling_factor
    mean, std = posterior.mean.float() * scale, posterior.std.float() * scale  # (2K, C, h, w)
    # The authors' latent mask: bilinear resize to the latent size, then any overlap counts.
    mask = (F.interpolate(pixel_masks, size=mean.shape[-2:], mode="bilinear") != 0).float()  # (2K, 1, h, w)
    return _SupportLatents(mean=mean, std=std, mask=mask)


# --- step 6: one optimisation step ---------------------------------------------------------------------------
def _train_step(
    backbone: Backbone,
    support: _SupportLatents,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    noise_scheduler,
    *,
    config: InversionConfig,
    generator: torch.Generator,
) -> float:
    """Draw a batch, take the masked denoising loss, backpropagate to ``vectors``, step the optimiser.

    Draws from ``generator``, in this order: support images ``(B,)``, flips ``(B,)``, timesteps
    ``t ~ U{0..T-1}`` ``(B,)``, templates ``(B,)``, the posterior sample and the diffusion noise
    ``(B, C, h, w)`` each. After the call ``vectors.grad`` holds this step's gradient.

    Returns:
        The loss of the batch.
    """
    size, where, device = config.train_batch_size, generator.device, backbone.device
    templates = config.prompt_templates
    image = torch.randint(0, support.num_images, (size,), generator=generator, device=where)
    flip = torch.rand(size, generator=generator, device=where) < config.flip_p
    rows = (image + support.num_images * flip.long()).to(device)  # (B,)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_train_timesteps, (size,), generator=generator, device=where).to(device)
    choice = torch.randint(0, len(templates), (size,), generator=generator, device=where).tolist()
    shape = (size, *support.mean.shape[1:])
    posterior_noise = torch.randn(shape, generator=generator, device=where).to(device)
    noise = torch.randn(shape, generator=generator, device=where).to(device)

    latents = support.mean[rows] + support.std[rows] * posterior_noise  # (B, C, h, w): z = E(I_a)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # z_t
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    placeholder = backbone.placeholder_text(vectors.shape[0])
    with backbone.placed(vectors):
        hidden = backbone.encode_text([templates[j].format(placeholder) for j in choice])  # (B, L, D)
    with _autocast(backbone, config.mixed_precision):
        prediction = backbone.unet(
            noisy.to(backbone.dtype),
            timesteps,
            encoder_hidden_states=hidden.to(backbone.dtype),
            return_dict=False,
        )[0]
    loss = _masked_mse(prediction.float(), target.float(), support.mask[rows], config.loss_normalizer)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalizer: str
) -> torch.Tensor:
    """AnoGen's ``||(target - prediction) * M||^2`` per sample, averaged over the batch.

    Args:
        prediction, target: ``(B, C, h, w)``.
        mask: ``(B, 1, h, w)`` in {0, 1}.
        normalizer: ``"latent"`` divides by all ``C*h*w`` elements (the authors' code), ``"mask"`` by
            ``C * |M|`` (the mean inside the mask).
    """
    squared = (prediction - target) ** 2 * mask  # (B, C, h, w)
    if normalizer == "latent":
        per_sample = squared.mean(dim=(1, 2, 3))  # (B,)
    else:
        per_sample = squared.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * squared.shape[1])  # (B,)
    return per_sample.mean()


# --- checkpoints (step 5 reads them, step 6 writes them) -------------------------------------------------------
def _save_checkpoint(
    output_dir: Path,
    step: int,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> Path:
    """Write ``output_dir/checkpoint-<step>/`` whole or not at all (staged in a temp folder, then renamed)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    moments = optimizer.state_dict()["state"][0]  # step, exp_avg, exp_avg_sq
    tensors = {
        "vectors": vectors.detach().cpu().contiguous(),
        "generator_state": generator.get_state(),
        **{
            f"optimizer.{key}": torch.as_tensor(value).detach().cpu().contiguous()
            for key, value in moments.items()
        },
    }
    final = output_dir / f"checkpoint-{step}"
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".checkpoint-{step}."))
    try:
        write_bytes_atomic(save_safetensors(tensors), staging / _STATE_FILE)
        write_bytes_atomic(json.dumps({"step": step, **meta}, indent=2).encode(), staging / _META_FILE)
        if final.exists():  # a rerun of the same step: swap, so a whole checkpoint is always there
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def _latest_checkpoint(output_dir: Path) -> Path | None:
    steps = {}
    for folder in output_dir.glob("checkpoint-*") if output_dir.is_dir() else ():
        suffix = folder.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (folder / _STATE_FILE).is_file() and (folder / _META_FILE).is_file():
            steps[int(suffix)] = folder
    return steps[max(steps)] if steps else None


def _load_checkpoint(
    folder: Path,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> int:
    """Restore the vector, AdamW's state and the generator's state in place; return the checkpoint's step."""
    saved = json.loads((folder / _META_FILE).read_text())
    if saved["token_dim"] != meta["token_dim"] or saved["support_hashes"] != meta["support_hashes"]:
        raise ValueError(
            f"cannot resume from {folder}: it was learned with a different support set or text-encoder width"
        )
    changed = sorted(
        key
        for key in set(saved["config"]) | set(meta["config"])
        if key not in _RESUMABLE_CHANGES and saved["config"].get(key) != meta["config"].get(key)
    )
    if changed or saved.get("resolution") != meta["resolution"]:
        raise ValueError(
            f"cannot resume from {folder}: settings {changed or ['resolution']} differ from the checkpoint's "
            f"(only {list(_RESUMABLE_CHANGES)} may change)"
        )
    if saved.get("backbone") != meta["backbone"]:
        logger.warning("resuming a run of backbone %r with %r", saved.get("backbone"), meta["backbone"])
    tensors = load_file(str(folder / _STATE_FILE))
    with torch.no_grad():
        vectors.copy_(tensors["vectors"])
    state = optimizer.state_dict()
    state["state"] = {
        0: {key.removeprefix("optimizer."): v for key, v in tensors.items() if key.startswith("optimizer.")}
    }
    optimizer.load_state_dict(state)
    generator.set_state(tensors["generator_state"])
    return int(saved["step"])
