"""The sampling math of stage 2 (box-conditioned DDIM with classifier-free guidance, AnoGen §3.2), one function a line.

`AnomalyGenerator` runs these in its denoising loop; each is written so that a test can hold it to its formula:

1. `initial_latents`: ``z_T ~ N(0, I) * init_noise_sigma``.
2. `blend_known_region`, before every UNet call: ``z = keep * q_sample(z0, t, noise) + (1 - keep) * z``, where
   ``keep = 1`` outside the boxes and ``q_sample(z0, t, n) = sqrt(a_t) z0 + sqrt(1 - a_t) n`` (DDPM, Ho et al.
   2020, eq. 4; ``a_t`` is the scheduler's ``alphas_cumprod[t]``).
3. `classifier_free_guidance`: ``eps = eps_u + s (eps_c - eps_u)`` (Ho & Salimans 2022).
4. `ddim_step`: ``z_prev = sqrt(a_prev) z0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma n`` with
   ``z0_pred = (z - sqrt(1 - a_t) eps) / sqrt(a_t)`` (DDIM, Song et al. 2021, eq. 12), by diffusers'
   `DDIMScheduler.step`.
5. `paste_known_region`, after the last step: the known region at ``t = 0`` is ``z0`` itself (RePaint's last
   step), so the decoder sees the original context around the boxes.

Latents are ``(B, C, h, w)`` float; ``keep`` is ``(B, 1, h, w)`` (or broadcastable) in {0, 1}.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

Generators = torch.Generator | list[torch.Generator] | None


def initial_latents(
    shape: tuple[int, ...], *, scheduler: DDIMScheduler, generator: Generators, device: torch.device
) -> torch.Tensor:
    """Pure noise ``z_T`` of ``shape``, float32, scaled by the scheduler's ``init_noise_sigma``.

    Args:
        shape: ``(B, C, h, w)``.
        scheduler: The DDIM scheduler of this run.
        generator: One generator, or a list of ``B`` (row ``i`` drawn from ``generator[i]``).
        device: Where the latents live.
    """
    noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    return noise * scheduler.init_noise_sigma


def blend_known_region(
    latents: torch.Tensor,
    known_latents: torch.Tensor,
    keep: torch.Tensor,
    *,
    noise: torch.Tensor,
    timestep: torch.Tensor,
    scheduler: DDIMScheduler,
) -> torch.Tensor:
    """``keep * q_sample(known_latents, timestep, noise) + (1 - keep) * latents``: the known region re-noised.

    Args:
        latents: The current latents ``z_t`` ``(B, C, h, w)``.
        known_latents: The normal image's clean latents ``z0`` ``(B, C, h, w)``.
        keep: ``(B, 1, h, w)``, 1 where the latents are known (outside the boxes), 0 where they are generated.
        noise: Fresh noise ``(B, C, h, w)`` for the forward process.
        timestep: The current timestep ``t``.
        scheduler: Gives ``alphas_cumprod`` (through `add_noise`).
    """
    return keep * scheduler.add_noise(known_latents, noise, timestep) + (1 - keep) * latents


def classifier_free_guidance(
    eps_uncond: torch.Tensor, eps_cond: torch.Tensor, *, guidance_scale: float
) -> torch.Tensor:
    """``eps_uncond + guidance_scale * (eps_cond - eps_uncond)``; ``guidance_scale`` 1 gives ``eps_cond``."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def ddim_step(
    latents: torch.Tensor,
    eps: torch.Tensor,
    *,
    timestep: torch.Tensor,
    scheduler: DDIMScheduler,
    eta: float = 0.0,
    generator: Generators = None,
) -> torch.Tensor:
    """One DDIM update ``z_t -> z_prev`` (Song et al. 2021, eq. 12) by `DDIMScheduler.step`.

    Args:
        latents: ``z_t`` ``(B, C, h, w)``.
        eps: The (guided) noise prediction ``(B, C, h, w)``.
        timestep: ``t``; the previous timestep is the scheduler's (``set_timesteps`` must have run).
        scheduler: The DDIM scheduler of this run.
        eta: 0 is deterministic; ``eta > 0`` adds ``sigma_t * n`` with ``n`` drawn from ``generator``.
        generator: One generator, or a list of ``B``; drawn from only when ``eta > 0``.
    """
    variance_noise = None
    if eta > 0:
        variance_noise = randn_tensor(latents.shape, generator=generator, device=latents.device)
    return scheduler.step(eps, timestep, latents, eta=eta, variance_noise=variance_noise).prev_sample


def paste_known_region(
    latents: torch.Tensor, known_latents: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """``keep * known_latents + (1 - keep) * latents``: the known region at ``t = 0`` is the clean ``z0``."""
    return keep * known_latents + (1 - keep) * latents
