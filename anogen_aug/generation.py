"""Stage 2 of AnoGen: draw a learned defect inside boxes of normal images (box-conditioned DDIM, paper §3.2).

`AnomalyGenerator.generate_batch` is the story, in numbered steps. Beyond the paper (see DESIGN.md): the decoded
box is pasted back onto the original pixels (everything outside the boxes is bit-identical to the input),
a pixel mask is estimated from what the generation changed, large images are generated in a window around
their boxes at the model's resolution, and boxes, images and the guidance pair are batched into few UNet calls.

Seeding contract: ``generate(image, boxes, generator=g)`` draws every random number of that image from ``g``.
``generate_batch(images, boxes, generator=[g_0, ..., g_n-1])`` gives image ``i`` exactly the draws that
``generate(images[i], boxes[i], generator=g_i)`` would; a single generator ``g`` is first split into one
generator per image with `spawn_generators` (``n`` seeds drawn from ``g``), so a batch is deterministic given
``g``, and its results equal separate calls with ``spawn_generators(g_copy, n)``. Same generator state, same
bytes, on a given device and dtype. Batched and separate calls draw the same noise, but the UNet sees different
batch sizes, so kernels may round differently: on CPU float32 the results agree to the bit or within one 8-bit
level; on a GPU (TF32 convolutions) a few levels, and more under bf16 autocast.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from scipy import ndimage
from tqdm.auto import tqdm

from .backbone import Backbone, warn_if_slow_bf16
from .boxes import box_to_slices, boxes_to_mask, check_boxes, otsu_threshold
from .embedding import DefectEmbedding
from .images import quantize
from .synthesis import Synthesis

logger = logging.getLogger(__name__)

#: Smallest mean absolute change (8-bit levels / 255) that the Otsu-estimated pixel mask may call "changed".
_MIN_CHANGE = 2 / 255


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Settings of box-conditioned generation; defaults are the AnoGen authors' (DDIM 50, eta 0, scale 10).

    Attributes:
        num_inference_steps: DDIM steps.
        eta: DDIM eta (0 = deterministic given the initial noise and the blend noise).
        guidance_scale: Classifier-free guidance ``e = e_u + s (e_c - e_u)``; 1 skips the unconditional pass.
        paste_back: Keep every pixel outside the boxes bit-identical to the input; ``False`` is the authors'
            behaviour (the whole decoded window replaces the input there).
        negative_prompt: The unconditional prompt (the authors' ``""``).
        prompt: ``None`` for the placeholder token(s) alone (the authors' ``"*"``), or a template with ``{}``
            where the token goes, e.g. ``"a photo of a {}"``.
        local: For images larger than the model's resolution, generate in a window around the boxes (side
            ``max(resolution, context * box extent)``) instead of resizing the whole image.
        context: Window side as a multiple of the boxes' extent in local mode (>= 1).
        mask_threshold: Fixed threshold on the smoothed mean absolute change for the pixel mask; ``None`` for
            Otsu's threshold inside each box.
        max_batch_size: Most rows per UNet call (an image with guidance takes two).
        mixed_precision: ``"no"`` or ``"bf16"`` (UNet calls under ``torch.autocast`` with bfloat16).
    """

    num_inference_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 10.0
    paste_back: bool = True
    negative_prompt: str = ""
    prompt: str | None = None
    local: bool = True
    context: float = 2.0
    mask_threshold: float | None = None
    max_batch_size: int = 8
    mixed_precision: str = "no"

    def __post_init__(self) -> None:
        for name in ("num_inference_steps", "max_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        checks = {
            "eta": self.eta >= 0,
            "guidance_scale": self.guidance_scale >= 0,
            "context": self.context >= 1,
            "mask_threshold": self.mask_threshold is None or 0 < self.mask_threshold < 1,
        }
        expected = {
            "eta": ">= 0",
            "guidance_scale": ">= 0",
            "context": ">= 1",
            "mask_threshold": "None or in (0, 1)",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"`{name}` must be {expected[name]}, got {getattr(self, name)!r}")
        for name in ("paste_back", "local"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.negative_prompt, str):
            raise ValueError(f"`negative_prompt` must be a string, got {self.negative_prompt!r}")
        if self.prompt is not None and (not isinstance(self.prompt, str) or "{}" not in self.prompt):
            raise ValueError(f"`prompt` must be None or a template containing '{{}}', got {self.prompt!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"`mixed_precision` must be 'no' or 'bf16', got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spawn_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    """Split one generator into ``n`` independent ones (``n`` seeds drawn from it, in order)."""
    seeds = torch.randint(0, 2**63 - 1, (n,), generator=generator, device=generator.device)
    return [torch.Generator(device=generator.device).manual_seed(int(seed)) for seed in seeds.tolist()]


class AnomalyGenerator:
    """Generates a learned defect inside boxes of normal images with a frozen backbone (AnoGen stage 2).

    Args:
        backbone: The frozen LDM the embedding was learned on (never modified).
        embedding: The learned defect token; its width must equal the backbone's text-encoder width.
        config: `GenerationConfig` (or a dict of its fields); defaults to the authors' settings.
    """

    name = "anogen"
    mask_exact = False  # the pixel mask is estimated from the decoded change, not exact

    def __init__(
        self,
        backbone: Backbone,
        embedding: DefectEmbedding,
        *,
        config: GenerationConfig | dict | None = None,
    ) -> None:
        embedding.check_backbone(backbone)
        if isinstance(config, dict):
            config = GenerationConfig(**config)
        if config is not None and not isinstance(config, GenerationConfig):
            raise TypeError(
                f"`config` must be a GenerationConfig, a dict or None, got {type(config).__name__}"
            )
        self.backbone = backbone
        self.embedding = embedding
        self.config = config or GenerationConfig()

    @property
    def prompt(self) -> str:
        """The conditional prompt, with the placeholder token(s) in place."""
        token = self.backbone.placeholder_text(self.embedding.num_vectors)
        return token if self.config.prompt is None else self.config.prompt.replace("{}", token)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings: the config, the prompt text, the embedding id and the backbone."""
        return {
            **self.config.to_dict(),
            "prompt_text": self.prompt,
            "embedding_id": self.embedding.id,
            "backbone": self.backbone.name_or_path,
            "backbone_revision": self.backbone.revision,
            "backbone_family": self.backbone.family,
        }

    def generate(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Synthesis:
        """Draw the defect inside ``boxes`` of one image.

        Args:
            image: The normal image, ``(3, H, W)`` float in [0, 1].
            boxes: ``(N, 4)`` XYXY pixels, inside the image, each at least 1 px wide and high.
            generator: The only source of randomness (same state, same bytes).
            progress: Show a progress bar over denoising steps.

        Returns:
            `Synthesis` with ``image (3, H, W)``, ``box_mask``/``mask (1, H, W)`` and ``boxes (N, 4)``.
        """
        _check_inputs([image], [boxes], ("image", "boxes"))  # errors name `image`/`boxes`, not `images[0]`
        generators = None if generator is None else [generator]
        return self.generate_batch([image], [boxes], generator=generators, progress=progress)[0]

    def generate_batch(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        boxes: Sequence[torch.Tensor],
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        progress: bool = True,
    ) -> list[Synthesis]:
        """`generate` for many images at once, with as few UNet calls as ``max_batch_size`` allows (the story).

        Args:
            images: ``n`` images ``(3, H_i, W_i)`` in [0, 1] (sizes may differ), or a tensor ``(n, 3, H, W)``.
            boxes: ``n`` box tensors ``(N_i, 4)``, XYXY pixels of their image.
            generator: One generator (split with `spawn_generators`), a list of ``n`` (one per image), or None.
            progress: Show a progress bar over denoising steps.
        """
        config, backbone = self.config, self.backbone
        device, resolution = backbone.device, backbone.resolution
        # 1. Check inputs: images (3, H, W) in [0, 1], boxes inside their image with non-zero area, generators.
        images = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.ndim == 4 else images
        images, boxes = _check_inputs(images, boxes, ("images", "boxes"))
        generators = generator
        if isinstance(generator, torch.Generator):
            generators = spawn_generators(generator, len(images))
        if generators is not None and (not isinstance(generators, list) or len(generators) != len(images)):
            raise ValueError(
                f"`generator` must be one torch.Generator or a list of {len(images)}, got {generator!r}"
            )
        warn_if_slow_bf16(backbone, config.mixed_precision)
        # 2. Working window per image: the authors resize the whole image to the model's resolution; local mode
        #    crops a window around the boxes instead, so the cost does not grow with the image size.
        windows = [_choose_window(b, *img.shape[-2:], resolution, config) for img, b in zip(images, boxes)]
        # 3. Text: unconditional and conditional contexts, the learned vector(s) at the placeholder.
        with torch.no_grad():
            text = self._encode_prompts()  # (k, L, D), k = 2 with guidance ([uncond, cond]), else 1
        rows_per_image = text.shape[0]
        group_size = max(1, config.max_batch_size // rows_per_image)
        results: list[Synthesis] = []
        bar = tqdm(
            total=math.ceil(len(images) / group_size) * config.num_inference_steps,
            desc="anogen: denoising",
            unit="step",
            disable=not progress,
            leave=False,
        )
        with torch.no_grad(), bar:
            for start in range(0, len(images), group_size):
                group = range(start, min(start + group_size, len(images)))
                group_generators = None if generators is None else [generators[i] for i in group]
                # 4. Encode each window, resized to resolution x resolution (bicubic), with the VAE (mean).
                crops = torch.cat([_crop_resized(images[i], windows[i], resolution) for i in group])
                z0 = backbone.encode(crops.to(device)).float()  # (G, 4, h, w)
                # 5. Box mask at latent size, any overlap counts (the authors' resize + "!= 0"); keep = 1 - box.
                keep = [_latent_keep(boxes[i], windows[i], z0.shape[-2:]) for i in group]
                keep = torch.stack(keep).to(device)  # (G, 1, h, w)
                # 6. DDIM with classifier-free guidance; before EVERY UNet call the latents outside the boxes are
                #    the normal image's latents noised to the current timestep with fresh noise (§3.2).
                scheduler = backbone.make_ddim_scheduler()
                scheduler.set_timesteps(config.num_inference_steps, device=device)
                latents = randn_tensor(
                    z0.shape, generator=group_generators, device=device, dtype=torch.float32
                )
                latents = latents * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    noise = randn_tensor(
                        z0.shape, generator=group_generators, device=device, dtype=torch.float32
                    )
                    latents = keep * scheduler.add_noise(z0, noise, t) + (1 - keep) * latents
                    eps = self._predict_noise(scheduler.scale_model_input(latents, t), t, text)
                    variance = None
                    if config.eta > 0:
                        variance = randn_tensor(z0.shape, generator=group_generators, device=device)
                    latents = scheduler.step(
                        eps, t, latents, eta=config.eta, variance_noise=variance
                    ).prev_sample
                    bar.update()
                if config.paste_back:
                    # The known region at t = 0 is z0 itself (RePaint's last step), so the decoder sees the
                    # original context around the box and the pasted box meets the original pixels smoothly.
                    latents = keep * z0 + (1 - keep) * latents
                # 7. Decode, resize each window back to its size and place it into its full image.
                decoded = backbone.decode(latents).float()  # (G, 3, resolution, resolution)
                for row, i in enumerate(group):
                    results.append(self._compose(images[i], boxes[i], windows[i], decoded[row : row + 1]))
        return results

    def _compose(self, image, boxes, window, decoded) -> Synthesis:
        """Steps 7-9 for one image: place the decoded window, paste back, estimate the pixel mask."""
        height, width = image.shape[-2:]
        left, top, right, bottom = window
        placed = image.clone()
        placed[:, top:bottom, left:right] = _resize(decoded, bottom - top, right - left)[0].to(image)
        box_mask = boxes_to_mask(boxes, height, width).to(image.device)
        # 8. Paste back: only box pixels come from the decoder (paste_back=False: the whole window, the authors'
        #    behaviour). Decoded pixels are rounded to the 8-bit grid so a saved PNG reads back identical; pixels
        #    taken from the input are copied exactly.
        replaced = box_mask.bool()
        if not self.config.paste_back:
            replaced = torch.zeros_like(replaced)
            replaced[:, top:bottom, left:right] = True
        final = torch.where(replaced, quantize(placed), image)
        # 9. Pixel mask: what changed inside the boxes, smoothed, thresholded, cleaned; always inside box_mask.
        scale = max(1.0, max(bottom - top, right - left) / self.backbone.resolution)
        mask = _change_mask(final, image, boxes, threshold=self.config.mask_threshold, scale=scale)
        return Synthesis(image=final, box_mask=box_mask, mask=mask.to(image.device) * box_mask, boxes=boxes)

    def _encode_prompts(self) -> torch.Tensor:
        backbone = self.backbone
        vectors = self.embedding.vectors.to(device=backbone.text_encoder.device)
        with backbone.placed(vectors):
            cond = backbone.encode_text([self.prompt])  # (1, L, D)
        if self.config.guidance_scale == 1:
            return cond
        return torch.cat([backbone.encode_text([self.config.negative_prompt]), cond])  # (2, L, D)

    def _predict_noise(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Guided noise prediction for latents ``(G, 4, h, w)``; UNet rows capped at ``max_batch_size``."""
        unet, config = self.backbone.unet, self.config
        k, count = text.shape[0], latents.shape[0]
        dtype = self.backbone.dtype  # diffusers' `unet.dtype` walks every submodule (ms per call)
        rows = latents.repeat(k, 1, 1, 1).to(dtype)  # (k*G, 4, h, w): all uncond rows, then all cond rows
        context = text.repeat_interleave(count, dim=0).to(dtype)  # (k*G, L, D)
        autocast = torch.autocast(
            device_type=rows.device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"
        )
        outputs = []
        with autocast:
            for start in range(0, rows.shape[0], config.max_batch_size):
                chunk = slice(start, start + config.max_batch_size)
                outputs.append(unet(rows[chunk], t, encoder_hidden_states=context[chunk]).sample)
        eps = torch.cat(outputs).float()  # (k*G, 4, h, w)
        if k == 1:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + config.guidance_scale * (eps_cond - eps_uncond)


def _check_inputs(images, boxes, names: tuple[str, str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    image_name, boxes_name = names
    single = image_name == "image"
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"`{image_name}` must be a non-empty list of image tensors (3, H, W)")
    if not isinstance(boxes, (list, tuple)) or len(boxes) != len(images):
        count = len(boxes) if isinstance(boxes, (list, tuple)) else type(boxes).__name__
        raise ValueError(
            f"`{boxes_name}` must be a list with one box tensor per image ({len(images)}), got {count}"
        )
    checked_images, checked_boxes = [], []
    for i, (image, box) in enumerate(zip(images, boxes)):
        name = image_name if single else f"{image_name}[{i}]"
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a torch.Tensor (3, H, W) in [0, 1], got {type(image).__name__}"
            )
        if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[-2:]) < 1:
            raise ValueError(f"`{name}` must have shape (3, H, W), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"`{name}` must be a float tensor in [0, 1], got dtype {image.dtype}")
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(
                f"`{name}` must hold values in [0, 1], got [{image.min().item():.4g}, {image.max().item():.4g}]"
            )
        checked_images.append(image)
        box_name = boxes_name if single else f"{boxes_name}[{i}]"
        checked_boxes.append(check_boxes(box, *image.shape[-2:], name=box_name))
    return checked_images, checked_boxes


def _choose_window(boxes: torch.Tensor, height: int, width: int, resolution: int, config) -> tuple[int, ...]:
    """Whole-pixel window ``(left, top, right, bottom)`` of an image to generate in."""
    if not config.local or max(height, width) <= resolution:
        return 0, 0, width, height
    x0, y0 = math.floor(boxes[:, 0].min()), math.floor(boxes[:, 1].min())
    x1, y1 = math.ceil(boxes[:, 2].max()), math.ceil(boxes[:, 3].max())
    side = max(resolution, math.ceil(config.context * max(x1 - x0, y1 - y0)))
    win_w, win_h = min(side, width), min(side, height)
    # Centred on the boxes' union, then shifted into the image; win >= union extent, so it still holds them.
    left = min(max(round((x0 + x1 - win_w) / 2), x1 - win_w, 0), x0, width - win_w)
    top = min(max(round((y0 + y1 - win_h) / 2), y1 - win_h, 0), y0, height - win_h)
    logger.debug(
        "window %s for boxes %s in a %dx%d image", (left, top, win_w, win_h), boxes.tolist(), width, height
    )
    return left, top, left + win_w, top + win_h


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic (antialiased, like PIL) resize of ``(B, 3, h, w)`` in [0, 1]."""
    if images.shape[-2:] == (height, width):
        return images
    resized = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(0, 1)


def _crop_resized(image: torch.Tensor, window, resolution: int) -> torch.Tensor:
    left, top, right, bottom = window
    return _resize(image[None, :, top:bottom, left:right].float(), resolution, resolution)  # (1, 3, res, res)


def _latent_keep(boxes: torch.Tensor, window, latent_size) -> torch.Tensor:
    """``keep`` ``(1, h, w)``: 0 on latent cells that touch any box (in window coordinates), 1 elsewhere."""
    left, top, right, bottom = window
    h, w = latent_size
    scale = torch.tensor([w / (right - left), h / (bottom - top)] * 2)
    latent_boxes = (boxes - torch.tensor([left, top, left, top])) * scale  # (N, 4) in latent cells
    latent_boxes[:, :2] = (
        latent_boxes[:, :2] + 1e-4
    ).floor()  # any overlap, ignoring float noise at cell edges
    latent_boxes[:, 2:] = (latent_boxes[:, 2:] - 1e-4).ceil()
    return 1 - boxes_to_mask(latent_boxes, h, w)


def _change_mask(final: torch.Tensor, image: torch.Tensor, boxes, *, threshold, scale: float) -> torch.Tensor:
    """Pixel mask ``(1, H, W)`` of what changed inside each box: mean |final - image| over channels, Gaussian
    smoothing, a threshold (``threshold`` or Otsu's inside the box, at least 2/255), opening + closing and
    removal of components under 1 % of the box (``scale`` = window pixels per model pixel)."""
    difference = (final - image).abs().mean(0).float().cpu().numpy()  # (H, W)
    mask = np.zeros_like(difference, dtype=bool)
    side = max(3, round(3 * scale) // 2 * 2 + 1)
    structure = np.ones((side, side), dtype=bool)
    for box in boxes:
        rows, cols = box_to_slices(box)
        patch = ndimage.gaussian_filter(difference[rows, cols], sigma=scale, mode="reflect")
        cut = threshold
        if cut is None:
            cut = otsu_threshold(patch)
            if cut is None:  # nothing changed, or everything changed by the same amount
                continue
            cut = max(cut, _MIN_CHANGE)
        changed = patch >= cut
        padded = np.pad(changed, side, mode="edge")
        padded = ndimage.binary_closing(ndimage.binary_opening(padded, structure), structure)
        changed = padded[side:-side, side:-side]
        labels, count = ndimage.label(changed)
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            small = np.flatnonzero(sizes < max(4, 0.01 * changed.size)) + 1
            changed &= ~np.isin(labels, small)
        mask[rows, cols] |= changed
    return torch.from_numpy(mask.astype(np.float32))[None]
