"""Stage-1 speed: our `learn_defect_embedding` step against diffusers' textual-inversion training loop.

The reference, `DiffusersTextualInversion`, re-implements ``examples/textual_inversion/textual_inversion.py``
(diffusers) step for step: the placeholder token is added to a copy of the tokenizer and the text encoder's
embedding matrix is resized, the WHOLE matrix is the optimised parameter (AdamW), the support images go through
the VAE encoder at every step (``latent_dist.sample()``), and after each optimiser step every other row is
restored from a copy. AnoGen's latent mask multiplies the squared error in both, so both compute the same loss.

Ours caches the VAE posterior of the support set (and of its flips) once, trains one vector, and places it with
a forward hook. The benchmark drives the library's own step function (``anogen_aug.inversion.train_step``) so
the two loops can be interleaved step by step (A B A B ...); a short `learn_defect_embedding` run checks that
this drive reproduces the public function's losses exactly.

Same randomness: both loops draw from their own ``torch.Generator`` seeded alike, in the library's order:
support index, flip, timestep, template (each ``(B,)``), the posterior sample, the diffusion noise (each
``(B, C, h, w)``). The reference draws the posterior sample through diffusers' own
``latent_dist.sample(generator=...)``. (diffusers' script draws from the global RNG in another order; the work
done is the same.) With equal draws the fp32 losses agree step for step to float rounding.

Also: bf16 autocast (ours and the reference in bf16 and in fp32, interleaved; speed figures read "not measurable
here" on a CPU without native bf16), a `torch.profiler` table of one step of each loop by operator and by region
(`harness.profile_calls`), and peak RSS in fresh processes.

    python -m benchmarks.speed_stage1 --backbone sd-reduced
    python -m benchmarks.speed_stage1 --backbone sd-wide --steps 6
    python -m benchmarks.speed_stage1 --backbone tiny --steps 20 --bf16-steps 6
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler

from anogen_aug.inversion import (
    InversionConfig,
    encode_support,
    init_vectors,
    learn_defect_embedding,
    template_ids,
    train_step,
)
from benchmarks import harness
from benchmarks.backbones import (
    BACKBONES,
    backbone_flop_profile,
    make_backbone,
    sd15_modules,
    stage1_step_flops,
)

#: The fp32 losses must agree to this relative tolerance (float reassociation only).
LOSS_RTOL = 1e-4


class DiffusersTextualInversion:
    """diffusers' ``examples/textual_inversion`` training loop, one optimiser step per `step` call.

    Args:
        backbone: The frozen backbone; its text encoder and tokenizer are deep-copied, never modified.
        images: Support images ``(K, 3, R, R)`` in [0, 1] at the training resolution.
        masks: Their defect masks ``(K, 1, R, R)`` in {0, 1}.
        config: The same `InversionConfig` as ours (batch, learning rate, weight decay, flips, templates).
        generator: Source of every random draw (see the module docstring for the order).
        mixed_precision: ``"no"`` or ``"bf16"``: bf16 autocast of the VAE and UNet forward passes, as ours (the
            text encoder, holding the trained embedding, stays fp32, as in diffusers' script).
    """

    def __init__(self, backbone, images, masks, *, config, generator, placeholder_token="<defect>"):
        self.backbone, self.config, self.generator = backbone, config, generator
        self.placeholder_token = placeholder_token
        # 1. Add the placeholder token; its row starts as the initializer token's embedding.
        self.tokenizer = copy.deepcopy(backbone.tokenizer)
        if self.tokenizer.add_tokens([placeholder_token]) != 1:
            raise ValueError(f"the tokenizer already contains {placeholder_token!r}")
        init_ids = self.tokenizer.encode(config.init_word, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ValueError("the initializer token must be a single token")
        self.placeholder_id = self.tokenizer.convert_tokens_to_ids(placeholder_token)
        self.text_encoder = copy.deepcopy(backbone.text_encoder)
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        embeddings = self.text_encoder.get_input_embeddings()
        with torch.no_grad():
            embeddings.weight[self.placeholder_id] = embeddings.weight[init_ids[0]].clone()
        # 2. Freeze everything but the input embeddings (the script freezes encoder, final norm and position
        #    embeddings; the VAE and UNet are frozen already). The whole matrix is the optimised parameter.
        self.text_encoder.requires_grad_(False)
        embeddings.requires_grad_(True)
        self.text_encoder.train()
        self.optimizer = torch.optim.AdamW(
            embeddings.parameters(),
            lr=config.effective_learning_rate,
            betas=(0.9, 0.999),
            weight_decay=config.adam_weight_decay,
            eps=1e-08,
        )
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer)
        self.orig_embeds_params = embeddings.weight.data.clone()
        self.noise_scheduler = backbone.make_noise_scheduler()
        # 3. The data set: pixel values in [-1, 1] and the masks, flipped per sample at each step.
        self.pixel_values = images * 2 - 1  # (K, 3, R, R)
        self.masks = masks  # (K, 1, R, R)

    def _batch(self):
        """Draw support indices, flips, timesteps and templates; return pixels, masks, timesteps, input ids."""
        config, g = self.config, self.generator
        size, templates = config.train_batch_size, config.prompt_templates
        index = torch.randint(0, self.pixel_values.shape[0], (size,), generator=g)
        flip = (torch.rand(size, generator=g) < config.flip_p)[:, None, None, None]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (size,), generator=g)
        choice = torch.randint(0, len(templates), (size,), generator=g).tolist()
        pixels, masks = self.pixel_values[index], self.masks[index]
        pixels = torch.where(flip, pixels.flip(-1), pixels)  # (B, 3, R, R)
        masks = torch.where(flip, masks.flip(-1), masks)  # (B, 1, R, R)
        text = [templates[j].format(self.placeholder_token) for j in choice]
        input_ids = self.tokenizer(
            text,
            padding="max_length",
            truncation=True,
            max_length=self.backbone.max_length,
            return_tensors="pt",
        ).input_ids  # (B, L)
        return pixels, masks, timesteps, input_ids

    def step(self) -> float:
        backbone, config = self.backbone, self.config
        vae, unet = backbone.vae, backbone.unet
        autocast = harness.autocast("bf16" if config.mixed_precision == "bf16" else "fp32")
        pixels, masks, timesteps, input_ids = self._batch()
        # Convert images to latent space: the VAE encoder runs at every step.
        with torch.no_grad(), autocast:
            latent_dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        if latent_dist.parameters.dtype != torch.float32:  # bf16: sample in fp32, like ours
            latent_dist = DiagonalGaussianDistribution(latent_dist.parameters.float())
        latents = latent_dist.sample(generator=self.generator).detach() * vae.config.scaling_factor
        # Sample noise, add it to the latents at the drawn timesteps (forward diffusion).
        noise = torch.randn(latents.shape, generator=self.generator)
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        # Text conditioning through the resized text encoder (the placeholder row is trained).
        encoder_hidden_states = self.text_encoder(input_ids)[0].to(dtype=unet.dtype)
        with autocast:
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        # AnoGen: the latent mask (bilinear, then != 0) multiplies the squared error, mean over the latent.
        latent_mask = (F.interpolate(masks, size=latents.shape[-2:], mode="bilinear") != 0).float()
        loss = (F.mse_loss(model_pred.float(), target.float(), reduction="none") * latent_mask).mean(
            [1, 2, 3]
        )
        loss = loss.mean()
        loss.backward()
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        # Let's make sure we don't update any embedding weights besides the newly added token.
        index_no_updates = torch.ones((len(self.tokenizer),), dtype=torch.bool)
        index_no_updates[self.placeholder_id] = False
        with torch.no_grad():
            weight = self.text_encoder.get_input_embeddings().weight
            weight[index_no_updates] = self.orig_embeds_params[index_no_updates]
        return loss.item()

    def regions(self) -> dict:
        """The modules whose forward passes `harness.profile_calls` tells apart."""
        unet, vae = self.backbone.unet, self.backbone.vae
        return {"text encoder": self.text_encoder, "UNet": unet, "VAE encoder": (vae.encoder, vae.quant_conv)}

    @property
    def vector(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight[self.placeholder_id].detach()


class OursStepper:
    """The library's stage-1 loop (steps 3, 4 and 6 of `learn_defect_embedding`), one step per `step` call."""

    def __init__(self, backbone, images, masks, *, config, generator):
        self.backbone, self.config, self.generator = backbone, config, generator
        self.support = encode_support(backbone, images, masks, mixed_precision=config.mixed_precision)
        self.vectors = init_vectors(backbone, config).to(backbone.device).clone().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            [self.vectors], lr=config.effective_learning_rate, weight_decay=config.adam_weight_decay
        )
        self.noise_scheduler = backbone.make_noise_scheduler()
        self.prompt_ids = template_ids(backbone, config)  # (T, L), once, as learn_defect_embedding

    def step(self) -> float:
        return train_step(
            self.backbone,
            self.support,
            self.vectors,
            self.optimizer,
            self.noise_scheduler,
            config=self.config,
            generator=self.generator,
            prompt_ids=self.prompt_ids,
        )

    def regions(self) -> dict:
        """The modules whose forward passes `harness.profile_calls` tells apart."""
        return {"text encoder": self.backbone.text_encoder, "UNet": self.backbone.unet}


def make_support(resolution: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` synthetic defects at the training resolution: images ``(k, 3, R, R)``, masks ``(k, 1, R, R)``."""
    generator = torch.Generator().manual_seed(seed)
    pairs = [harness.synthetic_defect(resolution, generator=generator) for _ in range(k)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def build(kind: str, backbone, images, masks, config, seed):
    cls = OursStepper if kind == "ours" else DiffusersTextualInversion
    return cls(backbone, images, masks, config=config, generator=torch.Generator().manual_seed(seed))


def run_steps(runners: dict, steps: int) -> tuple[dict, dict]:
    """Interleave one step of each runner per round; return per-runner step times and losses."""
    times = {name: [] for name in runners}
    losses = {name: [] for name in runners}
    for _ in range(steps):
        for name, runner in runners.items():
            out = []
            times[name].append(harness.timed(lambda runner=runner, out=out: out.append(runner.step())))
            losses[name].append(out[0])
    return times, losses


def loss_agreement(a: list[float], b: list[float]) -> dict:
    diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
    rel = [d / max(abs(y), 1e-12) for d, y in zip(diffs, b, strict=True)]
    return {"max_abs": max(diffs), "mean_abs": statistics.mean(diffs), "max_rel": max(rel)}


def child(args) -> None:
    """Fresh-process peak RSS of a few steps: ``ours`` through the public `learn_defect_embedding`."""
    harness.set_threads(args.threads)
    backbone = make_backbone(args.backbone)
    images, masks = make_support(backbone.resolution, args.support, args.seed)
    config = InversionConfig(max_train_steps=args.steps, train_batch_size=args.batch)
    reset = harness.reset_peak_rss()  # the peak below covers the stage's work, not imports and set-up
    baseline = harness.current_rss_mib()
    generator = torch.Generator().manual_seed(args.seed)
    if args.child == "ours":
        learn_defect_embedding(
            backbone, list(images), list(masks), config=config, generator=generator, progress=False
        )
    else:
        reference = DiffusersTextualInversion(backbone, images, masks, config=config, generator=generator)
        for _ in range(args.steps):
            reference.step()
    print(
        json.dumps(
            {"baseline_rss_mib": baseline, "peak_rss_mib": harness.peak_rss_mib(), "peak_reset": reset}
        )
    )


def measure_bf16(args, backbone, images, masks, *, native, ours_flops, peak) -> dict:
    """bf16 autocast: ours and the reference in bf16 and ours in fp32, interleaved. Speed figures only where this
    CPU has native bf16 (`harness.native_bf16`); elsewhere they read `harness.NOT_MEASURABLE`, the drift stays."""
    fp32 = InversionConfig(max_train_steps=args.steps, train_batch_size=args.batch)
    bf16 = InversionConfig(max_train_steps=args.steps, train_batch_size=args.batch, mixed_precision="bf16")
    if native:  # without native bf16 a step takes tens of seconds: first-call overheads do not matter
        warm = {k: build(k, backbone, images, masks, bf16, args.seed + 1) for k in ("ours", "reference")}
        run_steps(warm, 1)
    runners = {
        "ours_bf16": build("ours", backbone, images, masks, bf16, args.seed),
        "reference_bf16": build("reference", backbone, images, masks, bf16, args.seed),
        "ours_fp32": build("ours", backbone, images, masks, fp32, args.seed),
        "reference_fp32": build("reference", backbone, images, masks, fp32, args.seed),
    }
    times, losses = run_steps(runners, args.bf16_steps)
    goal = harness.ratio_summary(times["reference_fp32"], times["ours_bf16"])
    versus_ref = harness.ratio_summary(times["reference_bf16"], times["ours_bf16"])
    speedup = harness.ratio_summary(times["ours_fp32"], times["ours_bf16"])
    ref_speedup = harness.ratio_summary(times["reference_fp32"], times["reference_bf16"])
    drift = loss_agreement(losses["ours_bf16"], losses["ours_fp32"])
    ref_drift = loss_agreement(losses["reference_bf16"], losses["reference_fp32"])
    bf16_rate = ours_flops / goal["median_s"][1] / 1e9
    if native:
        print(
            "  " + harness.fmt_ratio("fp32 reference / ours bf16", goal, ">= 2.5x", ("ref fp32", "ours bf16"))
        )
        print("  " + harness.fmt_ratio("bf16 step, reference / ours", versus_ref))
        print("  " + harness.fmt_ratio("ours fp32 / ours bf16 (speed-up)", speedup, labels=("fp32", "bf16")))
        print(
            "  " + harness.fmt_ratio("reference fp32 / bf16 (speed-up)", ref_speedup, labels=("fp32", "bf16"))
        )
        print(f"  ours bf16: {bf16_rate:.1f} GFLOP/s = {bf16_rate / peak['bfloat16']['best_gflops']:.0%} of the "
              "bf16 matmul peak")  # fmt: skip
    else:
        print(f"  bf16 speed: {harness.NOT_MEASURABLE} (no native bf16 on this CPU: oneDNN emulates it)")
    print(
        f"  bf16 loss drift vs fp32 (ours): max abs {drift['max_abs']:.2e}, mean abs {drift['mean_abs']:.2e}"
    )
    figure = lambda value: harness.bf16_figure(value, native)  # noqa: E731
    return {
        "native_bf16": native,
        "steps": args.bf16_steps,
        "reference_fp32_over_ours_bf16": figure(goal),
        "target": 2.5,
        "met": figure(goal["median_ratio"] >= 2.5),
        "reference_bf16_over_ours_bf16": figure(versus_ref),
        "ours_speedup_over_fp32": figure(speedup),
        "reference_speedup_over_fp32": figure(ref_speedup),
        "achieved_gflops_ours": figure(bf16_rate),
        "loss_drift_ours": drift,
        "loss_drift_reference": ref_drift,
        "times_s": figure(times),
        "losses": losses,
        "how": "InversionConfig(mixed_precision='bf16'): VAE and UNet forward under torch.autocast(bf16); "
        "the reference uses the same autocast scope; all four loops interleaved step by step",
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=BACKBONES, default="sd-reduced")
    parser.add_argument("--steps", type=int, default=12, help="timed fp32 steps of each loop")
    parser.add_argument(
        "--bf16-steps",
        type=int,
        default=None,
        help="timed bf16 steps of each loop (0 skips; default 4, or 1 on a CPU without native bf16)",
    )
    parser.add_argument(
        "--check-steps", type=int, default=3, help="learn_defect_embedding steps to cross-check"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--support", type=int, default=3, help="support images (k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--memory-steps", type=int, default=1, help="steps of the peak-RSS children (0 skips)"
    )
    parser.add_argument("--profile", type=int, default=2, help="fp32 steps of each loop to profile (0 skips)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    harness.set_threads(args.threads)
    out = args.out or harness.RESULTS / f"speed_stage1_{args.backbone}.json"
    native = harness.native_bf16()
    if args.bf16_steps is None:
        args.bf16_steps = 4 if native else 1

    backbone = make_backbone(args.backbone)
    resolution = backbone.resolution
    images, masks = make_support(resolution, args.support, args.seed)
    fp32 = InversionConfig(max_train_steps=args.steps, train_batch_size=args.batch)
    print(f"stage 1: backbone {args.backbone} ({resolution} px), batch {args.batch}, k={args.support}, "
          f"{args.threads} thread(s)")  # fmt: skip
    profile = backbone_flop_profile(backbone)
    sd15_bound = stage1_step_flops(*sd15_modules(256), 256, args.batch)
    print(f"  FLOP profile: VAE encoder/UNet {profile['encoder_to_unet']:.2f} (SD 1.5 at 256 px: 1.51)")
    peak = harness.matmul_peak(size=2048, repeats=3)
    print(f"  matmul 2048^2 peak: fp32 {peak['float32']['best_gflops']:.1f} GFLOP/s, "
          f"bf16 {peak['bfloat16']['best_gflops']:.1f} GFLOP/s")  # fmt: skip

    # 1. FLOPs of one step of each (fresh instances; attention counted as explicit matmuls).
    flops = {
        kind: harness.count_flops(build(kind, backbone, images, masks, fp32, args.seed).step)
        for kind in ("ours", "reference")
    }
    # 2. One-time cost of ours: encoding the support set and its flips.
    cache_s = harness.timed(lambda: encode_support(backbone, images, masks))
    # 3. fp32: warm-up on throwaway instances, then interleaved steps with equal randomness.
    run_steps({k: build(k, backbone, images, masks, fp32, args.seed + 1) for k in ("ours", "reference")}, 1)
    runners = {k: build(k, backbone, images, masks, fp32, args.seed) for k in ("ours", "reference")}
    times, losses = run_steps(runners, args.steps)
    summary = harness.ratio_summary(times["reference"], times["ours"])
    agreement = loss_agreement(losses["ours"], losses["reference"])
    vector_diff = (runners["ours"].vectors.detach()[0] - runners["reference"].vector).abs().max().item()
    print("  " + harness.fmt_ratio("fp32 step, reference / ours", summary, ">= 1.7x"))
    print(f"  losses ours vs reference: max rel diff {agreement['max_rel']:.2e} over {args.steps} steps; "
          f"final vector max abs diff {vector_diff:.2e}")  # fmt: skip
    if agreement["max_rel"] > LOSS_RTOL:
        raise SystemExit(f"losses differ beyond {LOSS_RTOL}: {losses}")

    # 4. The public function reproduces the driven steps' losses exactly.
    check, check_steps = [], min(args.check_steps, args.steps)
    if check_steps:
        learn_defect_embedding(
            backbone,
            list(images),
            list(masks),
            config=InversionConfig(max_train_steps=check_steps, train_batch_size=args.batch),
            generator=torch.Generator().manual_seed(args.seed),
            progress=False,
            callback=lambda step, loss: check.append(loss),
        )
        if check != losses["ours"][:check_steps]:
            raise SystemExit(
                f"learn_defect_embedding losses {check} != driven {losses['ours'][: len(check)]}"
            )
        print(f"  learn_defect_embedding reproduces the first {len(check)} losses bit for bit")

    def achieved(kind, seconds):
        return flops[kind]["total"] / seconds / 1e9

    median_ours, median_ref = summary["median_s"][1], summary["median_s"][0]
    result = {
        "benchmark": "speed_stage1",
        "backbone": args.backbone,
        "resolution": resolution,
        "batch": args.batch,
        "support": args.support,
        "threads": args.threads,
        "flop_profile": profile,
        "matmul_peak": peak,
        "fp32": {
            "steps": args.steps,
            **summary,
            "target": 1.7,
            "met": summary["median_ratio"] >= 1.7,
            "times_s": times,
            "losses": losses,
            "loss_agreement": agreement,
            "final_vector_max_abs_diff": vector_diff,
            "learn_defect_embedding_check_steps": len(check),
        },
        "flops_per_step": {k: v["total"] for k, v in flops.items()},
        "flop_bound_ratio": flops["reference"]["total"] / flops["ours"]["total"],
        "sd15_256px_flops_per_step": sd15_bound,
        "attention_forward_flops_per_step": {k: v["attention_forward"] for k, v in flops.items()},
        "achieved_gflops": {
            "ours": achieved("ours", median_ours),
            "reference": achieved("reference", median_ref),
        },
        "support_cache_s": cache_s,
        "support_cache_in_reference_steps": cache_s / median_ref,
    }
    for kind in ("ours", "reference"):
        share = result["achieved_gflops"][kind] / peak["float32"]["best_gflops"]
        print(f"  {kind}: {flops[kind]['total'] / 1e9:.1f} GFLOP/step, {result['achieved_gflops'][kind]:.1f} "
              f"GFLOP/s = {share:.0%} of the fp32 matmul peak")  # fmt: skip
    print(f"  FLOP ratio reference/ours per step: {result['flop_bound_ratio']:.2f} here, "
          f"{sd15_bound['ratio']:.2f} for SD 1.5 at 256 px (the time ratio's ceiling at equal efficiency)")  # fmt: skip
    print(f"  one-time support cache: {cache_s:.2f} s (= {cache_s / median_ref:.2f} reference steps)")

    # 5. bf16 autocast: ours and the reference in bf16, and ours in fp32 again for a paired speed-up.
    if args.bf16_steps:
        result["bf16"] = measure_bf16(
            args, backbone, images, masks, native=native, ours_flops=flops["ours"]["total"], peak=peak
        )
    # 6. Where a step's time goes: torch.profiler tables of both loops (fp32, after a warm-up step).
    if args.profile:
        result["profile"] = {}
        for kind in ("ours", "reference"):
            runner = build(kind, backbone, images, masks, fp32, args.seed)
            table = harness.profile_calls(runner.step, calls=args.profile, modules=runner.regions())
            result["profile"][kind] = table
            print("  " + harness.fmt_profile(f"profile, {kind} step", table).replace("\n", "\n  "))
    # 7. Peak RSS, each loop in a fresh process.
    if args.memory_steps:
        result["memory"] = {}
        for kind in ("ours", "reference"):
            result["memory"][kind] = harness.run_child(
                __file__,
                ["--child", kind, "--backbone", args.backbone, "--steps", str(args.memory_steps),
                 "--batch", str(args.batch), "--support", str(args.support), "--seed", str(args.seed),
                 "--threads", str(args.threads)],
            )  # fmt: skip
            memory = result["memory"][kind]
            print(f"  peak RSS {kind}: {memory['peak_rss_mib']:.0f} MiB "
                  f"(after building the backbone: {memory['baseline_rss_mib']:.0f} MiB)")  # fmt: skip
    path = harness.write_result(out, result)
    print(f"  wrote {path}")
    return result


if __name__ == "__main__":
    main()
