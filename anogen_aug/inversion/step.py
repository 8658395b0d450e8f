"""One stage-1 optimisation step, as public parts: encode the support set once, initialise v, step, the loss.

`learn_defect_embedding` is these parts in a loop with checkpoints. They are public so that a benchmark or a test
can drive the very same step one call at a time (``benchmarks/speed_stage1.py`` interleaves it with diffusers'
loop):

    >>> support = encode_support(backbone, images, masks)  # (K, 3, R, R), (K, 1, R, R) at the training size
    >>> vectors = init_vectors(backbone, config).to(backbone.device).requires_grad_(True)
    >>> optimizer = torch.optim.AdamW([vectors], lr=config.effective_learning_rate)
    >>> prompts = template_ids(backbone, config)  # (T, L): every template tokenised once
    >>> loss = train_step(backbone, support, vectors, optimizer, backbone.make_noise_scheduler(),
    ...                   config=config, generator=torch.Generator().manual_seed(0), prompt_ids=prompts)

Everything a step repeats that does not depend on the step's draws is done once, outside it: the VAE posterior
of the support set and of its flips, the latent masks (`encode_support`), the templates' token ids
(`template_ids`). A step is then the text encoder and the UNet, forward and backward, and elementwise work
(``benchmarks/README.md`` holds the profile).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbone import Backbone
from ..checks import check_choice
from ..masks import resize_mask
from ..precision import autocast
from .config import InversionConfig


@dataclass(frozen=True)
class SupportLatents:
    """The support set encoded once: row ``k`` is image ``k``, row ``K + k`` its horizontal flip.

    Attributes:
        mean, std: Scaled VAE posterior mean and standard deviation, ``(2K, C, h, w)`` float32.
        mask: Latent defect masks in {0, 1}, ``(2K, 1, h, w)`` float32.
    """

    mean: torch.Tensor
    std: torch.Tensor
    mask: torch.Tensor

    @property
    def num_images(self) -> int:
        """K, the number of support images (each is held twice: as given and flipped)."""
        return self.mean.shape[0] // 2


@torch.no_grad()
def encode_support(
    backbone: Backbone, images: torch.Tensor, masks: torch.Tensor, *, mixed_precision: str = "no"
) -> SupportLatents:
    """Encode the support set and its horizontal flips once; each step then samples the cached posterior.

    The flips are encoded, not flipped in latent space: the VAE is not flip-equivariant. Sampling
    ``mean + std * randn`` per step is ``latent_dist.sample()`` without re-running the encoder. The latent mask
    is the authors': the pixel mask resized bilinearly, any overlap counts (`resize_mask` rule ``"overlap"``).

    Args:
        backbone: The frozen LDM.
        images: ``(K, 3, R, R)`` in [0, 1], already at the training resolution.
        masks: ``(K, 1, R, R)`` in {0, 1}, the same height and width.
        mixed_precision: ``"no"`` or ``"bf16"`` (autocast of the VAE encoder).

    Returns:
        `SupportLatents` with ``2K`` rows.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be (K, 3, R, R), got shape {tuple(images.shape)}")
    if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[0] != images.shape[0]:
        raise ValueError(f"`masks` must be (K, 1, R, R) with K = {images.shape[0]}, got {tuple(masks.shape)}")
    if masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"`masks` must have the height and width of `images` {tuple(images.shape[-2:])}, "
            f"got {tuple(masks.shape[-2:])}"
        )
    check_choice(mixed_precision, "mixed_precision", ("no", "bf16"))
    pixels = torch.cat([images, images.flip(-1)])  # (2K, 3, R, R)
    pixel_masks = torch.cat([masks, masks.flip(-1)]).to(backbone.device)  # (2K, 1, R, R)
    posterior = backbone.encode_distribution(pixels, mixed_precision=mixed_precision)
    scale = backbone.vae.config.scaling_factor
    mean = (posterior.mean.float() * scale).contiguous()  # (2K, C, h, w)
    std = (posterior.std.float() * scale).contiguous()  # (2K, C, h, w)
    mask = resize_mask(pixel_masks, mean.shape[-2:], rule="overlap")  # (2K, 1, h, w)
    return SupportLatents(mean=mean, std=std, mask=mask)


def init_vectors(backbone: Backbone, config: InversionConfig) -> torch.Tensor:
    """The starting point of v: ``(num_vectors, D)`` float32 copies of the init word's input embedding.

    Raises:
        ValueError: ``config.init_word`` is not a single token, or is the tokenizer's unknown token.
    """
    vector = backbone.init_vector(config.init_word)  # ValueError unless a single token
    ids = backbone.tokenizer(config.init_word, add_special_tokens=False)["input_ids"]
    unknown = getattr(backbone.tokenizer, "unk_token_id", None)
    if unknown is not None and ids == [unknown]:
        raise ValueError(
            f"`init_word` {config.init_word!r} is not in the tokenizer's vocabulary (it encodes to the unknown "
            "token); choose a word the text encoder knows, e.g. 'defect'"
        )
    return vector.float().repeat(config.num_vectors, 1)  # (n, D)


def template_ids(
    backbone: Backbone, config: InversionConfig, *, num_vectors: int | None = None
) -> torch.Tensor:
    """Token ids ``(T, L)`` of ``config.prompt_templates`` with the placeholder of ``num_vectors`` vectors (default
    ``config.num_vectors``) in place: what `train_step` feeds the text encoder, tokenised once for all steps."""
    placeholder = backbone.placeholder_text(num_vectors or config.num_vectors)
    return backbone.token_ids([template.format(placeholder) for template in config.prompt_templates])


def train_step(
    backbone: Backbone,
    support: SupportLatents,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    noise_scheduler,
    *,
    config: InversionConfig,
    generator: torch.Generator,
    prompt_ids: torch.Tensor | None = None,
) -> float:
    """Draw a batch, take the masked denoising loss, backpropagate to ``vectors``, step the optimiser.

    Draws from ``generator``, in this order: support images ``(B,)``, flips ``(B,)``, timesteps
    ``t ~ U{0..T-1}`` ``(B,)``, templates ``(B,)``, the posterior sample and the diffusion noise
    ``(B, C, h, w)`` each. After the call ``vectors.grad`` holds this step's gradient.

    Args:
        backbone: The frozen LDM; nothing of it changes.
        support: `encode_support`'s result.
        vectors: The learned token's vectors ``(n, D)``, float32, ``requires_grad``.
        optimizer: The optimiser of ``vectors`` alone.
        noise_scheduler: ``backbone.make_noise_scheduler()``: the forward process and the prediction type.
        config: Batch size, flip probability, templates, loss normaliser, mixed precision.
        generator: The source of every draw above.
        prompt_ids: `template_ids` of this backbone and config, computed once by the caller (None: computed
            here; the same ids, so the same loss).

    Returns:
        The loss of the batch.
    """
    size, where, device, dtype = config.train_batch_size, generator.device, backbone.device, backbone.dtype
    templates = config.prompt_templates
    prompt_ids = _checked_prompt_ids(backbone, config, vectors, prompt_ids)  # (T, L)
    image = torch.randint(0, support.num_images, (size,), generator=generator, device=where)
    flip = torch.rand(size, generator=generator, device=where) < config.flip_p
    rows = (image + support.num_images * flip.long()).to(device)  # (B,)
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_train_timesteps, (size,), generator=generator, device=where).to(device)
    choice = torch.randint(0, len(templates), (size,), generator=generator, device=where)
    shape = (size, *support.mean.shape[1:])
    posterior_noise = torch.randn(shape, generator=generator, device=where).to(device)
    noise = torch.randn(shape, generator=generator, device=where).to(device)

    latents = support.mean[rows] + support.std[rows] * posterior_noise  # (B, C, h, w): z = E(I_a)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # z_t
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    with backbone.placed(vectors):
        hidden = backbone.encode_text(prompt_ids[choice.to(prompt_ids.device)])  # (B, L, D)
    with autocast(device, config.mixed_precision):
        prediction = backbone.unet(
            noisy.to(dtype),
            timesteps,
            encoder_hidden_states=hidden.to(dtype),
            return_dict=False,
        )[0]
    loss = masked_mse(
        prediction.float(), target.float(), support.mask[rows], normalizer=config.loss_normalizer
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _checked_prompt_ids(backbone, config, vectors, prompt_ids) -> torch.Tensor:
    """``prompt_ids`` after checking its shape against the templates, or `template_ids` when None."""
    if prompt_ids is None:
        return template_ids(backbone, config, num_vectors=vectors.shape[0])
    count = len(config.prompt_templates)
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] != count:
        raise ValueError(
            f"`prompt_ids` must be (T, L) with one row per template (T = {count}; see template_ids), "
            f"got {tuple(prompt_ids.shape)}"
        )
    return prompt_ids


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, normalizer: str = "latent"
) -> torch.Tensor:
    """AnoGen's masked denoising loss ``||(target - prediction) * M||^2`` per sample, averaged over the batch.

    Args:
        prediction, target: ``(B, C, h, w)``.
        mask: ``(B, 1, h, w)`` in {0, 1}.
        normalizer: ``"latent"`` divides by all ``C*h*w`` elements (the authors' code), ``"mask"`` by
            ``C * |M|`` (the mean inside the mask).

    Returns:
        The scalar loss.
    """
    check_choice(normalizer, "normalizer", ("latent", "mask"))
    squared = (prediction - target) ** 2 * mask  # (B, C, h, w)
    if normalizer == "latent":
        per_sample = squared.mean(dim=(1, 2, 3))  # (B,)
    else:
        per_sample = squared.sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * squared.shape[1])  # (B,)
    return per_sample.mean()
