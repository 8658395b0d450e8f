"""Frozen text-conditioned latent diffusion backbones, and placing a learned vector at a placeholder token.

Two families load through the real diffusers/transformers ``from_pretrained`` path:

- ``"ldm"``: the ``LDMTextToImagePipeline`` layout (``bert/``, ``tokenizer/``, ``unet/``, ``vqvae/``, ``scheduler/``),
  e.g. ``CompVis/ldm-text2im-large-256`` (LDM-BERT, width 1280, 256 px) — the AnoGen paper's backbone.
- ``"sd"``: the Stable Diffusion 1.x/2.x layout (``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/``,
  ``scheduler/``), CLIP text encoders of width 768 or 1024.

A learned vector is never written into the shared vocabulary or embedding matrix: a forward hook on the text
encoder's input embeddings replaces the output at the placeholder token's positions, and removing the hook
leaves the backbone exactly as loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors import SafetensorError

from .families import DEFAULT_BACKBONE, LAYOUTS, PLACEHOLDER, detect_family
from .hub import hub_errors, read_json
from .precision import autocast

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Backbone:
    """A frozen text-conditioned LDM: components plus the few facts the rest of the library needs.

    Attributes:
        family: ``"ldm"`` (LDM-BERT) or ``"sd"`` (Stable Diffusion / CLIP).
        text_encoder, tokenizer, unet, vae: the diffusers/transformers components, all parameters frozen.
        scheduler_config: the backbone's noise-schedule config; callers build their own schedulers from it
            (`make_ddim_scheduler`, `make_noise_scheduler`) so no call mutates shared state.
        name_or_path, revision: where it was loaded from (stored in embeddings' metadata).
    """

    family: str
    text_encoder: torch.nn.Module
    tokenizer: object
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict
    name_or_path: str = ""
    revision: str | None = None
    _placeholder_id: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in LAYOUTS:
            raise ValueError(f"`family` must be one of {sorted(LAYOUTS)}, got {self.family!r}")
        for module in (self.text_encoder, self.unet, self.vae):
            module.requires_grad_(False)
            module.eval()
        ids = self.tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"the tokenizer must encode the placeholder {PLACEHOLDER!r} as one token, got {ids}"
            )
        self._placeholder_id = ids[0]

    # --- facts -------------------------------------------------------------------------------------------
    @property
    def token_dim(self) -> int:
        """Width of the text encoder's token embeddings (1280 for LDM-BERT, 768/1024 for SD)."""
        return self.text_encoder.get_input_embeddings().weight.shape[-1]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Pixel side the UNet was trained at (``unet.config.sample_size * vae_scale_factor``)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def _vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype  # diffusers' `.dtype` walks every submodule (ms per call)

    @property
    def max_length(self) -> int:
        limit = getattr(self.text_encoder.config, "max_position_embeddings", 77)
        return int(min(getattr(self.tokenizer, "model_max_length", limit) or limit, limit))

    def placeholder_text(self, num_vectors: int = 1) -> str:
        """The prompt text standing for an embedding of ``num_vectors`` vectors (``"*"``, ``"* *"``, ...)."""
        return " ".join([PLACEHOLDER] * num_vectors)

    def init_vector(self, word: str) -> torch.Tensor:
        """The input embedding of ``word``, which must be a single token: ``(token_dim,)``."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"`init_word` must be a single token of the tokenizer, {word!r} encodes to {len(ids)}: {ids}"
            )
        return self.text_encoder.get_input_embeddings().weight[ids[0]].detach().clone()

    def make_ddim_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.scheduler_config)

    def make_noise_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler.from_config(self.scheduler_config)

    # --- text --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def placed(self, vectors: torch.Tensor) -> Iterator[None]:
        """Within the block, the placeholder token's input embedding is ``vectors`` (``(n, dim)``).

        The k-th placeholder occurrence in a prompt gets ``vectors[k % n]``. Gradients flow to ``vectors``.
        Nothing of the backbone is modified: the hook is removed on exit, even on error.
        """
        if vectors.ndim != 2 or vectors.shape[-1] != self.token_dim:
            raise ValueError(
                f"`vectors` must have shape (n, {self.token_dim}) for this backbone (token width {self.token_dim}), "
                f"got {tuple(vectors.shape)}"
            )

        def hook(module, inputs, output):
            ids = inputs[0]  # (B, L)
            where = ids == self._placeholder_id
            if not where.any():
                return output
            occurrence = (where.cumsum(dim=-1) - 1) % vectors.shape[
                0
            ]  # (B, L): k-th placeholder in its prompt
            chosen = vectors.to(output.dtype)[occurrence]  # (B, L, D)
            return torch.where(where[..., None], chosen, output)

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Token ids ``(B, L)`` of prompts, padded to the model's max length, on the text encoder's device."""
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)

    def encode_text(self, prompts: list[str] | torch.Tensor) -> torch.Tensor:
        """Text-encoder hidden states ``(B, L, D)`` of prompts, or of their `token_ids` ``(B, L)``."""
        ids = prompts if isinstance(prompts, torch.Tensor) else self.token_ids(prompts)  # (B, L)
        return self.text_encoder(ids)[0]

    # --- images ------------------------------------------------------------------------------------------
    def encode_distribution(self, images: torch.Tensor, *, mixed_precision: str = "no"):
        """VAE posterior of images ``(B, 3, H, W)`` in [0, 1] (unscaled latents' mean and std).

        The VAE gets channels-last pixels: on the CPU its convolutions over wide images with few channels run
        1.1-1.5x faster so (``benchmarks/README.md``), with the same values to float rounding. ``mixed_precision``
        ``"bf16"`` runs the encoder under bf16 autocast.
        """
        pixels = (images * 2 - 1).to(device=self.device, dtype=self._vae_dtype)
        with autocast(self.device, mixed_precision):
            return self.vae.encode(pixels.contiguous(memory_format=torch.channels_last)).latent_dist

    def encode(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        sample: bool = False,
        mixed_precision: str = "no",
    ):
        """Scaled latents ``(B, C, h, w)`` of images in [0, 1]: the posterior mean, or a sample."""
        distribution = self.encode_distribution(images, mixed_precision=mixed_precision)
        latents = distribution.sample(generator=generator) if sample else distribution.mean
        return (latents * self.vae.config.scaling_factor).contiguous()

    def decode(self, latents: torch.Tensor, *, mixed_precision: str = "no") -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] from scaled latents (channels-last, as `encode_distribution`)."""
        latents = (latents.to(self._vae_dtype) / self.vae.config.scaling_factor).contiguous(
            memory_format=torch.channels_last
        )
        with autocast(self.device, mixed_precision):
            pixels = self.vae.decode(latents).sample
        return ((pixels.float() + 1) / 2).clamp(0, 1).contiguous()


def _read_model_index(path: str, revision: str | None) -> tuple[dict, bool]:
    local = Path(path)
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"unknown backbone layout: {local} has no model_index.json (a diffusers pipeline folder)"
            )
        return read_json(index, owner=f"backbone {local}"), True
    if local.exists():
        raise ValueError(f"unknown backbone layout: {local} is a file, not a diffusers pipeline folder")
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(
            f"`pretrained_model_name_or_path`: no such folder {path}, and not a Hub repo id"
        )
    from huggingface_hub import hf_hub_download

    with hub_errors(path, name="pretrained_model_name_or_path", revision=revision):
        index = hf_hub_download(path, "model_index.json", revision=revision)
    return read_json(index, owner=f"backbone {path}"), False


@contextlib.contextmanager
def _component_errors(path: str, family: str, local: bool) -> Iterator[None]:
    """A pipeline folder or repo whose components diffusers cannot load: one error naming it."""
    components = ", ".join(f"{c}/" for c in ("tokenizer", "unet", "scheduler", *LAYOUTS[family].values()))
    try:
        yield
    except (OSError, ValueError, TypeError, SafetensorError) as error:
        problem = (
            f"`pretrained_model_name_or_path` {path}: cannot load its {family} pipeline components ({error})"
        )
        if local:
            raise ValueError(
                f"{problem}; a diffusers pipeline folder needs {components} each with its config and weights"
            ) from error
        raise FileNotFoundError(
            f"{problem}; offline (HF_HUB_OFFLINE=1 or no network) only what is cached loads: download the "
            f"backbone once with network access (`hf download {path}`) or pass a local folder"
        ) from error


def _own_memory(module: torch.nn.Module) -> None:
    """Copy weights still mapped from their safetensors file into memory of their own.

    Mapped tensors are only 8-byte aligned, and CPU kernels round differently on differently aligned inputs
    (about 1e-7 per UNet call): a process that loads a backbone and one that also moves it (``device="cpu:0"``,
    as a rank does) would otherwise disagree in the last bits.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()


def load_backbone(
    pretrained_model_name_or_path: str | os.PathLike = DEFAULT_BACKBONE,
    *,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Backbone:
    """Load a frozen text-conditioned LDM from a Hub repo id or a local diffusers folder.

    Args:
        pretrained_model_name_or_path: Hub id (default ``CompVis/ldm-text2im-large-256``) or pipeline folder.
        revision: Hub revision (branch, tag or commit).
        dtype: Component dtype (default float32, the safe choice on CPU).
        device: Where to place the components (default CPU).

    Raises:
        FileNotFoundError: No such folder or Hub repo, or offline with nothing cached (the message says how).
        ValueError: Not a diffusers pipeline of a known family, a corrupt ``model_index.json``, or components
            that do not load; each names the folder or id.
    """
    path = str(pretrained_model_name_or_path)
    model_index, local = _read_model_index(path, revision)
    try:
        family = detect_family(model_index)
    except ValueError as error:
        raise ValueError(f"`pretrained_model_name_or_path` {path}: {error}") from None
    dtype = dtype or torch.float32
    with _component_errors(path, family, local):
        pipe = _load_pipeline(path, family, revision=revision, dtype=dtype)
    text_encoder, vae = (pipe.bert, pipe.vqvae) if family == "ldm" else (pipe.text_encoder, pipe.vae)
    stays_on_cpu = device is None or torch.device(device).type == "cpu"
    for module in (text_encoder, pipe.unet, vae):
        if stays_on_cpu:  # moving to an accelerator copies anyway
            _own_memory(module)
        if device is not None:
            module.to(device)
    logger.info("loaded %s backbone from %s", family, path)
    return Backbone(
        family=family,
        text_encoder=text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        vae=vae,
        scheduler_config=dict(pipe.scheduler.config),
        name_or_path=path,
        revision=revision,
    )


def _load_pipeline(path: str, family: str, *, revision: str | None, dtype: torch.dtype):
    if family == "ldm":
        from diffusers import LDMTextToImagePipeline

        return LDMTextToImagePipeline.from_pretrained(path, revision=revision, dtype=dtype)
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        path,
        revision=revision,
        dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
