"""`AnomalyGenerator`: draw a learned defect inside boxes of normal images (AnoGen stage 2, paper §3.2).

`AnomalyGenerator.generate_batch` is the story, in numbered steps; the sampling math lives in
`anogen_aug.sampling`, the window geometry in `.window`, the pixel-mask estimate in `.change_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ..backbone import Backbone
from ..boxes import boxes_to_mask, check_boxes
from ..embedding import DefectEmbedding
from ..images import quantize
from ..precision import autocast, warn_if_slow_bf16
from ..sampling import (
    blend_known_region,
    classifier_free_guidance,
    ddim_step,
    initial_latents,
    paste_known_region,
)
from ..synthesis import Synthesis
from .change_mask import estimate_change_mask
from .config import GenerationConfig
from .window import Window, choose_window, crop_window, latent_keep_mask, place_window


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
        config, resolution = self.config, self.backbone.resolution
        # 1. Check inputs: images (3, H, W) in [0, 1], boxes inside their image with non-zero area, generators.
        images = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.ndim == 4 else images
        images, boxes = _check_inputs(images, boxes, ("images", "boxes"))
        generators = _check_generators(generator, len(images))
        warn_if_slow_bf16(self.backbone.device, config.mixed_precision)
        # 2. Working window per image: the authors resize the whole image to the model's resolution; local mode
        #    crops a window around the boxes instead, so the cost does not grow with the image size.
        windows = [
            choose_window(
                b, *img.shape[-2:], resolution=resolution, context=config.context, local=config.local
            )
            for img, b in zip(images, boxes)
        ]
        # 3. Text: unconditional and conditional contexts, the learned vector(s) at the placeholder.
        with torch.no_grad():
            text = self._encode_prompts()  # (k, L, D), k = 2 with guidance ([uncond, cond]), else 1
        group_size = max(1, config.max_batch_size // text.shape[0])
        groups = [range(i, min(i + group_size, len(images))) for i in range(0, len(images), group_size)]
        bar = tqdm(
            total=len(groups) * config.num_inference_steps,
            desc="anogen: denoising",
            unit="step",
            disable=not progress,
            leave=False,
        )
        # 4-9. Generate the images group by group (a group fills one UNet call).
        results: list[Synthesis] = []
        with torch.no_grad(), bar:
            for group in groups:
                results += self._generate_group(
                    [images[i] for i in group],
                    [boxes[i] for i in group],
                    [windows[i] for i in group],
                    text,
                    generators=None if generators is None else [generators[i] for i in group],
                    on_step=bar.update,
                )
        return results

    def _generate_group(self, images, boxes, windows, text, *, generators, on_step) -> list[Synthesis]:
        """Steps 4-9 for the images of one group."""
        backbone = self.backbone
        # 4. Encode each window, resized to resolution x resolution (bicubic), with the VAE (mean).
        crops = torch.cat(
            [crop_window(image, window, backbone.resolution) for image, window in zip(images, windows)]
        )
        precision = self.config.mixed_precision
        z0 = backbone.encode(crops.to(backbone.device), mixed_precision=precision).float()  # (G, 4, h, w)
        # 5. Box mask at latent size, any overlap counts (the authors' resize + "!= 0"); keep = 1 - box.
        keep = [latent_keep_mask(b, window, z0.shape[-2:]) for b, window in zip(boxes, windows)]
        keep = torch.stack(keep).to(backbone.device)  # (G, 1, h, w)
        # 6. DDIM with classifier-free guidance, the known region re-noised before every UNet call.
        latents = self._denoise(z0, keep, text, generators=generators, on_step=on_step)
        # 7. Decode; steps 8-9 per image.
        decoded = backbone.decode(latents, mixed_precision=precision)  # (G, 3, resolution, resolution)
        return [
            self._compose(image, b, window, decoded[row])
            for row, (image, b, window) in enumerate(zip(images, boxes, windows))
        ]

    def _denoise(self, z0, keep, text, *, generators, on_step) -> torch.Tensor:
        """Step 6: DDIM from pure noise to latents ``(G, 4, h, w)`` whose known region is ``z0``'s (§3.2)."""
        config, device = self.config, self.backbone.device
        scheduler = self.backbone.make_ddim_scheduler()
        scheduler.set_timesteps(config.num_inference_steps, device=device)
        latents = initial_latents(z0.shape, scheduler=scheduler, generator=generators, device=device)
        for t in scheduler.timesteps:
            # 6a. Outside the boxes: the normal image's latents noised to t, with fresh noise at every step.
            noise = randn_tensor(z0.shape, generator=generators, device=device, dtype=torch.float32)
            latents = blend_known_region(latents, z0, keep, noise=noise, timestep=t, scheduler=scheduler)
            # 6b. Guided noise prediction: the [uncond, cond] pair in one UNet call, e_u + s (e_c - e_u).
            eps = self._predict_noise(scheduler.scale_model_input(latents, t), t, text)
            # 6c. The DDIM update (eta > 0 draws its noise after 6a's, from the same generators).
            latents = ddim_step(
                latents, eps, timestep=t, scheduler=scheduler, eta=config.eta, generator=generators
            )
            on_step()
        if config.paste_back:
            # 6d. The known region at t = 0 is z0 itself (RePaint's last step), so the decoder sees the original
            #     context around the box and the pasted box meets the original pixels smoothly.
            latents = paste_known_region(latents, z0, keep)
        return latents

    def _compose(self, image, boxes, window: Window, decoded) -> Synthesis:
        """Steps 7-9 for one image: place the decoded window ``(3, r, r)``, paste back, estimate the pixel mask."""
        height, width = image.shape[-2:]
        left, top, right, bottom = window
        placed = place_window(image, decoded, window)
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
        mask = estimate_change_mask(image, final, boxes, threshold=self.config.mask_threshold, scale=scale)
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
        outputs = []
        with autocast(rows.device, config.mixed_precision):
            for start in range(0, rows.shape[0], config.max_batch_size):
                chunk = slice(start, start + config.max_batch_size)
                outputs.append(unet(rows[chunk], t, encoder_hidden_states=context[chunk]).sample)
        eps = torch.cat(outputs).float()  # (k*G, 4, h, w)
        if k == 1:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return classifier_free_guidance(eps_uncond, eps_cond, guidance_scale=config.guidance_scale)


def _check_generators(generator, count: int) -> list[torch.Generator] | None:
    """One generator split into ``count`` (`spawn_generators`), a list of ``count`` as given, or None."""
    if isinstance(generator, torch.Generator):
        return spawn_generators(generator, count)
    if generator is not None and (not isinstance(generator, list) or len(generator) != count):
        raise ValueError(f"`generator` must be one torch.Generator or a list of {count}, got {generator!r}")
    return generator


def _check_inputs(images, boxes, names: tuple[str, str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Images ``(3, H, W)`` float in [0, 1] and one valid box tensor each; errors name ``names``."""
    image_name, boxes_name = names
    single = image_name == "image"
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"`{image_name}` must be a non-empty list of image tensors (3, H, W)")
    if not isinstance(boxes, (list, tuple)) or len(boxes) != len(images):
        count = len(boxes) if isinstance(boxes, (list, tuple)) else type(boxes).__name__
        raise ValueError(
            f"`{boxes_name}` must be a list with one box tensor per image ({len(images)}), got {count}"
        )
    checked_boxes = []
    for i, (image, box) in enumerate(zip(images, boxes)):
        _check_image(image, image_name if single else f"{image_name}[{i}]")
        box_name = boxes_name if single else f"{boxes_name}[{i}]"
        checked_boxes.append(check_boxes(box, *image.shape[-2:], name=box_name))
    return list(images), checked_boxes


def _check_image(image, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor (3, H, W) in [0, 1], got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[-2:]) < 1:
        raise ValueError(f"`{name}` must have shape (3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"`{name}` must be a float tensor in [0, 1], got dtype {image.dtype}")
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"`{name}` must hold values in [0, 1], got [{image.min().item():.4g}, {image.max().item():.4g}]"
        )
