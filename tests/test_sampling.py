"""Stage-2 sampling math, each function held to its formula written here from the papers (DDPM, DDIM, CFG).

The last test runs `AnomalyGenerator` against a loop written from the same formulas, so the generator's wiring
(blend before every UNet call, the guidance pair, the DDIM update, the final paste) is pinned too.
"""

from __future__ import annotations

import pytest
import torch

from anogen_aug.boxes import boxes_to_mask
from anogen_aug.embedding import DefectEmbedding
from anogen_aug.generation import AnomalyGenerator, GenerationConfig
from anogen_aug.images import quantize
from anogen_aug.sampling import (
    blend_known_region,
    classifier_free_guidance,
    ddim_step,
    initial_latents,
    paste_known_region,
)
from anogen_aug.testing import ldm_scheduler, tiny_backbone

STEPS = 4
SHAPE = (2, 4, 8, 8)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine two threads spin and run ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scheduler_with_steps(steps: int = STEPS):
    scheduler = ldm_scheduler()
    scheduler.set_timesteps(steps)
    return scheduler


def random_keep(seed: int = 0) -> torch.Tensor:
    """``(B, 1, h, w)`` in {0, 1} with both values in every row."""
    keep = (torch.rand(SHAPE[0], 1, *SHAPE[2:], generator=seeded(seed)) > 0.5).float()
    keep[:, :, 0, 0], keep[:, :, -1, -1] = 0, 1
    return keep


def alpha_bar(scheduler, t: int) -> torch.Tensor:
    """``a_t = prod_{s <= t} (1 - beta_s)``; before step 0 the DDIM "final" alpha (``alphas_cumprod[0]`` here)."""
    return scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod


# --- the known-region blend: z = keep * q_sample(z0, t, n) + (1 - keep) * z --------------------------------------


@pytest.mark.parametrize("step", range(STEPS))
def test_blend_puts_the_noised_background_where_keep_is_one_and_leaves_the_rest(step):
    scheduler = scheduler_with_steps()
    t = scheduler.timesteps[step]
    latents, z0, noise = (torch.randn(SHAPE, generator=seeded(s)) for s in (1, 2, 3))
    keep = random_keep()
    blended = blend_known_region(latents, z0, keep, noise=noise, timestep=t, scheduler=scheduler)
    a_t = scheduler.alphas_cumprod[int(t)]
    q_sample = a_t**0.5 * z0 + (1 - a_t) ** 0.5 * noise  # DDPM eq. 4
    known, unknown = keep.bool().expand(SHAPE), ~keep.bool().expand(SHAPE)
    assert torch.equal(blended[known], q_sample[known])
    assert torch.equal(blended[unknown], latents[unknown])


def test_final_paste_puts_the_clean_latents_where_keep_is_one():
    latents, z0 = torch.randn(SHAPE, generator=seeded(1)), torch.randn(SHAPE, generator=seeded(2))
    keep = random_keep()
    pasted = paste_known_region(latents, z0, keep)
    known, unknown = keep.bool().expand(SHAPE), ~keep.bool().expand(SHAPE)
    assert torch.equal(pasted[known], z0[known])
    assert torch.equal(pasted[unknown], latents[unknown])


# --- classifier-free guidance: eps = eps_u + s (eps_c - eps_u) ---------------------------------------------------


def test_guidance_interpolates_and_extrapolates_between_the_two_predictions():
    # Small integers: every formula below is exact in float32, so equality is exact.
    eps_u = torch.randint(-50, 50, SHAPE, generator=seeded(1)).float()
    eps_c = torch.randint(-50, 50, SHAPE, generator=seeded(2)).float()
    assert torch.equal(classifier_free_guidance(eps_u, eps_c, guidance_scale=1.0), eps_c)
    assert torch.equal(classifier_free_guidance(eps_u, eps_c, guidance_scale=0.0), eps_u)
    for s in (0.5, 3.0, 7.5, 10.0):
        expected = (1 - s) * eps_u + s * eps_c
        assert torch.equal(classifier_free_guidance(eps_u, eps_c, guidance_scale=s), expected)


# --- DDIM (Song et al. 2021, eq. 12) ------------------------------------------------------------------------------


def ddim_reference(latents, eps, t: int, prev: int, scheduler, *, eta: float = 0.0, noise=None):
    """``sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma n``, ``x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t)``,
    ``sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)`` (eq. 16)."""
    a_t, a_prev = alpha_bar(scheduler, t).double(), alpha_bar(scheduler, prev).double()
    latents, eps = latents.double(), eps.double()
    x0 = (latents - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
    return out if noise is None else out + sigma * noise.double()


@pytest.mark.parametrize("step", range(STEPS))
def test_ddim_step_with_eta_zero_is_the_deterministic_ddim_update(step):
    scheduler = scheduler_with_steps()
    t = int(scheduler.timesteps[step])
    prev = t - 1000 // STEPS  # "leading" spacing: the previous timestep of the schedule (< 0 after the last)
    latents, eps = torch.randn(SHAPE, generator=seeded(1)), torch.randn(SHAPE, generator=seeded(2))
    generator = seeded(7)
    state = generator.get_state()
    out = ddim_step(
        latents, eps, timestep=scheduler.timesteps[step], scheduler=scheduler, generator=generator
    )
    expected = ddim_reference(latents, eps, t, prev, scheduler)
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(generator.get_state(), state)  # eta 0 draws nothing: the seeding contract


@pytest.mark.parametrize(
    "step", range(STEPS - 1)
)  # the last step has sigma 0 (a_prev is the final alpha ~ 1)
def test_ddim_step_with_eta_adds_sigma_times_noise_from_the_generator(step):
    scheduler = scheduler_with_steps()
    t = int(scheduler.timesteps[step])
    prev = t - 1000 // STEPS
    latents, eps = torch.randn(SHAPE, generator=seeded(1)), torch.randn(SHAPE, generator=seeded(2))
    out = ddim_step(
        latents, eps, timestep=scheduler.timesteps[step], scheduler=scheduler, eta=0.7, generator=seeded(9)
    )
    noise = torch.randn(SHAPE, generator=seeded(9))
    expected = ddim_reference(latents, eps, t, prev, scheduler, eta=0.7, noise=noise)
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.double(), ddim_reference(latents, eps, t, prev, scheduler), atol=1e-2)


def test_initial_latents_draw_one_row_per_generator():
    scheduler = scheduler_with_steps()
    out = initial_latents(
        SHAPE, scheduler=scheduler, generator=[seeded(1), seeded(2)], device=torch.device("cpu")
    )
    rows = [torch.randn(1, *SHAPE[1:], generator=seeded(s)) for s in (1, 2)]
    assert torch.equal(out, torch.cat(rows) * scheduler.init_noise_sigma)


# --- the generator runs exactly this loop --------------------------------------------------------------------------


def test_generator_runs_the_paper_loop(one_thread):
    """`AnomalyGenerator.generate` against the loop of §3.2 written here: blend before EVERY UNet call with fresh
    noise, guidance on the [uncond, cond] pair, the DDIM update with eta noise, the final paste, decode."""
    torch.manual_seed(0)
    backbone = tiny_backbone("ldm")
    vectors = torch.randn(1, backbone.token_dim, generator=seeded(0))
    embedding = DefectEmbedding(vectors, placeholder_token="<scratch>", backbone=backbone.name_or_path)
    scale, eta = 3.0, 0.5
    config = GenerationConfig(num_inference_steps=STEPS, guidance_scale=scale, eta=eta)
    image = torch.rand(3, 64, 64, generator=seeded(4))
    boxes = torch.tensor(
        [[16.0, 12.0, 44.0, 36.0]]
    )  # on the 4-px latent grid: x cells [4, 11), y cells [3, 9)
    result = AnomalyGenerator(backbone, embedding, config=config).generate(image, boxes, generator=seeded(5))

    with torch.no_grad():
        with backbone.placed(vectors):
            cond = backbone.encode_text([backbone.placeholder_text(1)])
        text = torch.cat([backbone.encode_text([""]), cond])  # (2, L, D)
        z0 = backbone.encode(image[None]).float()  # (1, 4, 16, 16)
        keep = torch.ones(1, 1, 16, 16)
        keep[..., 3:9, 4:11] = 0
        scheduler = ldm_scheduler()
        ratio = 1000 // STEPS
        generator = seeded(5)
        latents = torch.randn(z0.shape, generator=generator)  # init_noise_sigma is 1 for DDIM
        for t in [(STEPS - 1 - i) * ratio + 1 for i in range(STEPS)]:  # "leading" spacing, steps_offset 1
            a_t = scheduler.alphas_cumprod[t]
            noise = torch.randn(z0.shape, generator=generator)
            latents = keep * (a_t.sqrt() * z0 + (1 - a_t).sqrt() * noise) + (1 - keep) * latents
            eps_u, eps_c = backbone.unet(
                latents.repeat(2, 1, 1, 1), t, encoder_hidden_states=text
            ).sample.chunk(2)
            eps = eps_u + scale * (eps_c - eps_u)
            variance = torch.randn(z0.shape, generator=generator)
            latents = ddim_reference(latents, eps, t, t - ratio, scheduler, eta=eta, noise=variance).float()
        latents = keep * z0 + (1 - keep) * latents
        decoded = backbone.decode(latents)[0]
    box_mask = boxes_to_mask(boxes, 64, 64).bool()
    expected = torch.where(box_mask, quantize(decoded), image)
    assert torch.equal(result.image[:, ~box_mask[0]], image[:, ~box_mask[0]])
    assert torch.allclose(result.image, expected, atol=1.01 / 255, rtol=0)
    assert (result.image - expected).abs().mean() < 0.1 / 255  # nearly all pixels agree exactly
