"""Stage-2 speed: `AnomalyGenerator` against diffusers' `StableDiffusionInpaintPipeline` (4-channel UNet).

The reference is diffusers' own pipeline built from OUR backbone's components (same UNet, VAE, text encoder,
tokenizer; a DDIM scheduler from the backbone's config), so with a 4-channel UNet it runs its latent-blending
path (after every DDIM step the latents outside the mask are reset to the image latents noised to the next
timestep). It gets the learned vector through ``prompt_embeds`` / ``negative_prompt_embeds`` computed once with
our backbone (placeholder hook), so both condition on identical text states. Same steps, guidance, eta (0) and
resolution; ``output_type="pt"`` (no PIL conversion). Each repeat times one call of each, interleaved.

Also measured: local mode (a 4x-resolution image with a small box against an image at the model's resolution:
1024 px vs 256 px on sd-reduced); bf16 autocast against the fp32 pipeline and fp32 ours, with the drift of ours'
images (PSNR) and pixel masks (IoU) from fp32 (speed figures read "not measurable here" on a CPU without native
bf16); batched generation (one `generate_batch` call of 4 images against 4 one-image pipeline calls, and against
4 one-image calls of ours); and peak RSS of each in a fresh process.

    python -m benchmarks.speed_stage2 --backbone sd-reduced
    python -m benchmarks.speed_stage2 --backbone sd-wide --repeats 3 --local-repeats 0 --batch-repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

from anogen_aug.boxes import boxes_to_mask
from anogen_aug.embedding import DefectEmbedding
from anogen_aug.generation import AnomalyGenerator, GenerationConfig, spawn_generators
from benchmarks import harness
from benchmarks.backbones import BACKBONES, make_backbone


@contextlib.contextmanager
def unet_autocast(unet: torch.nn.Module, enabled: bool):
    """Run ``unet``'s forward (only) under bf16 autocast and return float32, as `GenerationConfig`'s
    ``mixed_precision="bf16"`` does for ours; hooks removed on exit."""
    if not enabled:
        yield
        return
    state = {}

    def enter(module, args):
        state["ctx"] = torch.autocast("cpu", dtype=torch.bfloat16)
        state["ctx"].__enter__()

    def leave(module, args, output):
        state.pop("ctx").__exit__(None, None, None)
        return tuple(x.float() for x in output) if isinstance(output, tuple) else output

    handles = [unet.register_forward_pre_hook(enter), unet.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class InpaintReference:
    """`StableDiffusionInpaintPipeline` over our backbone's components, conditioned on our text states."""

    def __init__(
        self, backbone, embedding, *, steps: int, guidance_scale: float, mixed_precision: str = "no"
    ):
        self.pipe = StableDiffusionInpaintPipeline(
            vae=backbone.vae,
            text_encoder=backbone.text_encoder,
            tokenizer=backbone.tokenizer,
            unet=backbone.unet,
            scheduler=DDIMScheduler.from_config(backbone.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        self.pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            with backbone.placed(embedding.vectors):
                self.cond = backbone.encode_text(
                    [backbone.placeholder_text(embedding.num_vectors)]
                )  # (1, L, D)
            self.uncond = backbone.encode_text([""])  # (1, L, D)
        self.steps, self.guidance_scale, self.bf16 = steps, guidance_scale, mixed_precision == "bf16"
        self.unet = backbone.unet

    def generate(self, images: torch.Tensor, box_masks: torch.Tensor, *, generator) -> torch.Tensor:
        """``images (B, 3, H, W)`` in [0, 1], ``box_masks (B, 1, H, W)`` (1 = repaint) -> ``(B, 3, H, W)``."""
        batch, _, height, width = images.shape
        with unet_autocast(self.unet, self.bf16):
            return self.pipe(
                prompt_embeds=self.cond.repeat(batch, 1, 1),
                negative_prompt_embeds=self.uncond.repeat(batch, 1, 1),
                image=images,
                mask_image=box_masks,
                height=height,
                width=width,
                strength=1.0,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                eta=0.0,
                generator=generator,
                output_type="pt",
            ).images


def make_inputs(size: int, box_side: int, batch: int, seed: int):
    """``batch`` synthetic normal images ``(B, 3, size, size)`` and one ``box_side`` box each, ``(1, 4)``."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.stack([harness.synthetic_normal(size, generator=generator) for _ in range(batch)])
    boxes = []
    for _ in range(batch):
        x0, y0 = (torch.randint(0, size - box_side + 1, (2,), generator=generator)).tolist()
        boxes.append(torch.tensor([[x0, y0, x0 + box_side, y0 + box_side]], dtype=torch.float32))
    return images, boxes


def make_embedding(backbone) -> DefectEmbedding:
    vector = backbone.init_vector("defect")[None]  # (1, D): a stand-in for a learned vector
    return DefectEmbedding(vector, placeholder_token="<defect>", backbone=backbone.name_or_path)


def ours_runner(generator_, images, boxes, seed, *, synthesis: bool = False):
    """One `generate` call (one image) or one `generate_batch` call; returns the images (or the `Synthesis`)."""

    def run():
        if len(images) == 1:
            out = [generator_.generate(images[0], boxes[0], generator=torch.Generator().manual_seed(seed))]
        else:
            out = generator_.generate_batch(
                list(images), boxes, generator=torch.Generator().manual_seed(seed), progress=False
            )
        return out if synthesis else [s.image for s in out]

    return run


def one_at_a_time(runs):
    """The calls ``runs`` in turn (one image each): their outputs, concatenated."""
    return lambda: [out for run in runs for out in run()]


def row_seeds(seed: int, count: int) -> list[int]:
    """The seeds `generate_batch` gives its rows when called with ``torch.Generator().manual_seed(seed)``."""
    return [g.initial_seed() for g in spawn_generators(torch.Generator().manual_seed(seed), count)]


def reference_runner(reference, images, boxes, seed):
    masks = torch.stack([boxes_to_mask(b, *images.shape[-2:]) for b in boxes])  # (B, 1, H, W)
    return lambda: list(reference.generate(images, masks, generator=torch.Generator().manual_seed(seed)))


def outside_change(outputs, images, boxes) -> float:
    """Largest absolute pixel change outside the boxes (0 = background bit-identical)."""
    worst = 0.0
    for out, image, box in zip(outputs, images, boxes, strict=True):
        outside = boxes_to_mask(box, *image.shape[-2:]) == 0  # (1, H, W)
        worst = max(worst, (out - image).abs()[outside.expand_as(image)].max().item())
    return worst


def child(args) -> None:
    """Fresh-process peak RSS of one generation (batch ``--batch``) by ours or the reference."""
    harness.set_threads(args.threads)
    backbone = make_backbone(args.backbone)
    embedding = make_embedding(backbone)
    images, boxes = make_inputs(backbone.resolution, backbone.resolution // 4, args.batch, args.seed)
    reset = harness.reset_peak_rss()  # the peak below covers the stage's work, not imports and set-up
    baseline = harness.current_rss_mib()
    if args.child == "ours":
        config = GenerationConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
        ours_runner(AnomalyGenerator(backbone, embedding, config=config), images, boxes, args.seed)()
    else:
        reference = InpaintReference(
            backbone, embedding, steps=args.steps, guidance_scale=args.guidance_scale
        )
        reference_runner(reference, images, boxes, args.seed)()
    print(
        json.dumps(
            {"baseline_rss_mib": baseline, "peak_rss_mib": harness.peak_rss_mib(), "peak_reset": reset}
        )
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=BACKBONES, default="sd-reduced")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the paper: 50)")
    parser.add_argument("--guidance-scale", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bf16-steps", type=int, default=None, help="DDIM steps of the bf16 comparison "
                        "(0 skips; default --steps, or 2 on a CPU without native bf16)")  # fmt: skip
    parser.add_argument(
        "--bf16-repeats", type=int, default=None, help="default --repeats, or 1 without native bf16"
    )
    parser.add_argument("--local-repeats", type=int, default=None, help="default --repeats (0 skips)")
    parser.add_argument("--gen-batch", type=int, default=4, help="images of the batched-generation comparison "
                        "(0 skips)")  # fmt: skip
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Contenders:
    """Builds ours and the reference for one backbone and embedding, at a number of steps and a precision."""

    def __init__(self, backbone, embedding, guidance_scale: float) -> None:
        self.backbone, self.embedding, self.guidance_scale = backbone, embedding, guidance_scale

    def ours(self, steps: int, precision: str = "no") -> AnomalyGenerator:
        config = GenerationConfig(
            num_inference_steps=steps, guidance_scale=self.guidance_scale, mixed_precision=precision
        )
        return AnomalyGenerator(self.backbone, self.embedding, config=config)

    def reference(self, steps: int, precision: str = "no") -> InpaintReference:
        return InpaintReference(
            self.backbone,
            self.embedding,
            steps=steps,
            guidance_scale=self.guidance_scale,
            mixed_precision=precision,
        )


def recorded(outputs: dict, name: str, run):
    """``run`` that also keeps its output in ``outputs[name]``."""
    return lambda: outputs.__setitem__(name, run())


def measure_fp32(args, contenders: Contenders, images, boxes) -> dict:
    """fp32 throughput, ours vs the inpainting pipeline, interleaved; and the change outside the box."""
    outputs = {}
    runs = {
        "ours": recorded(outputs, "ours", ours_runner(contenders.ours(args.steps), images, boxes, args.seed)),
        "reference": recorded(
            outputs, "reference", reference_runner(contenders.reference(args.steps), images, boxes, args.seed)
        ),
    }
    times = harness.interleaved(runs, repeats=args.repeats, warmup=1)
    summary = harness.ratio_summary(times["reference"], times["ours"])
    throughput = {k: args.batch / statistics.median(v) for k, v in times.items()}
    change = {k: outside_change(outputs[k], images, boxes) for k in runs}
    print("  " + harness.fmt_ratio("fp32 throughput, ours / reference", summary, ">= 1.0x"))
    print(f"  images/s: ours {throughput['ours']:.3f}, reference {throughput['reference']:.3f}; largest change "
          f"outside the box: ours {change['ours']:.4f}, reference {change['reference']:.4f}")  # fmt: skip
    return {
        **summary,
        "target": 1.0,
        "met": summary["median_ratio"] >= 1.0,
        "images_per_s": throughput,
        "times_s": times,
        "max_change_outside_box": change,
    }


def measure_local(args, contenders: Contenders, images, boxes, resolution: int, box_side: int) -> dict:
    """Local mode: a 4x image with the same box size costs about as much as an image at the model's size."""
    big_images, big_boxes = make_inputs(4 * resolution, box_side, 1, args.seed + 1)
    local = contenders.ours(args.steps)
    runs = {
        "large": ours_runner(local, big_images, big_boxes, args.seed),
        "native": ours_runner(local, images[:1], boxes[:1], args.seed),
    }
    times = harness.interleaved(runs, repeats=args.local_repeats or args.repeats, warmup=1)
    summary = harness.ratio_summary(times["large"], times["native"])
    print("  " + harness.fmt_ratio(f"local mode, {4 * resolution} px / {resolution} px image", summary,
                                  "<= 1.2x", (f"{4 * resolution} px", f"{resolution} px")))  # fmt: skip
    return {
        "large_px": 4 * resolution,
        "native_px": resolution,
        "box_px": box_side,
        **summary,
        "target": 1.2,
        "met": summary["median_ratio"] <= 1.2,
        "times_s": times,
    }


def measure_batch(args, contenders: Contenders, resolution: int, box_side: int) -> dict:
    """Batched generation: one `generate_batch` call of ``--gen-batch`` images against as many one-image pipeline
    calls (the goal) and as many one-image `generate` calls of ours (what batching alone gives), interleaved."""
    count = args.gen_batch
    images, boxes = make_inputs(resolution, box_side, count, args.seed + 2)
    ours, reference = contenders.ours(args.steps), contenders.reference(args.steps)
    seeds = row_seeds(args.seed, count)
    outputs = {}
    single = [ours_runner(ours, images[i : i + 1], boxes[i : i + 1], seeds[i]) for i in range(count)]
    pipeline = [
        reference_runner(reference, images[i : i + 1], boxes[i : i + 1], seeds[i]) for i in range(count)
    ]
    runs = {
        "ours_batch": recorded(outputs, "ours_batch", ours_runner(ours, images, boxes, args.seed)),
        "reference_one_at_a_time": one_at_a_time(pipeline),
        "ours_one_at_a_time": recorded(outputs, "ours_one", one_at_a_time(single)),
    }
    times = harness.interleaved(runs, repeats=args.batch_repeats, warmup=1)
    goal = harness.ratio_summary(times["reference_one_at_a_time"], times["ours_batch"])
    batching = harness.ratio_summary(times["ours_one_at_a_time"], times["ours_batch"])
    difference = max(
        (a - b).abs().max().item() for a, b in zip(outputs["ours_batch"], outputs["ours_one"], strict=True)
    )
    throughput = {k: count / statistics.median(v) for k, v in times.items()}
    print("  " + harness.fmt_ratio(f"batch {count}: ours generate_batch / pipeline one at a time (images/s)",
                                  goal, ">= 1.2x", ("pipeline x1", "ours batch")))  # fmt: skip
    print("  " + harness.fmt_ratio(f"batch {count}: ours generate_batch / ours one at a time", batching,
                                  labels=("ours x1", "ours batch")))  # fmt: skip
    print(
        f"  generate_batch vs one at a time (same row seeds): largest pixel difference {difference * 255:.2f}/255"
    )
    return {
        "images": count,
        "repeats": args.batch_repeats,
        **goal,
        "target": 1.2,
        "met": goal["median_ratio"] >= 1.2,
        "ours_batch_over_ours_one_at_a_time": batching,
        "images_per_s": throughput,
        "max_pixel_difference_batch_vs_one_at_a_time": difference,
        "times_s": times,
        "how": "ours: one generate_batch call (one UNet call of 2 x images rows per DDIM step); reference and "
        "'ours one at a time': one call per image",
    }


def measure_bf16(
    args, contenders: Contenders, images, boxes, *, steps: int, repeats: int, native: bool
) -> dict:
    """bf16 autocast (UNet calls, VAE encoder and decoder): speed against the fp32 pipeline (the goal) and fp32
    ours, and the drift of ours' images (PSNR, whole image and inside the box) and pixel masks (IoU) from fp32.
    Speed figures only where this CPU has native bf16; elsewhere they read `harness.NOT_MEASURABLE`."""
    outputs, runs = {}, {}
    for kind in ("ours", "reference"):
        for precision in ("bf16", "fp32"):
            name = f"{kind}_{precision}"
            if kind == "ours":
                contender = contenders.ours(steps, "bf16" if precision == "bf16" else "no")
                runner = ours_runner(contender, images, boxes, args.seed, synthesis=True)
            else:
                contender = contenders.reference(steps, "bf16" if precision == "bf16" else "no")
                runner = reference_runner(contender, images, boxes, args.seed)
            runs[name] = recorded(outputs, name, runner)
    times = harness.interleaved(runs, repeats=repeats, warmup=1 if native else 0)
    summaries = {
        "reference_fp32_over_ours_bf16": harness.ratio_summary(times["reference_fp32"], times["ours_bf16"]),
        "ours_speedup_over_fp32": harness.ratio_summary(times["ours_fp32"], times["ours_bf16"]),
        "reference_speedup_over_fp32": harness.ratio_summary(
            times["reference_fp32"], times["reference_bf16"]
        ),
        "reference_bf16_over_ours_bf16": harness.ratio_summary(times["reference_bf16"], times["ours_bf16"]),
    }
    drift = bf16_drift(outputs, boxes)
    labels = {
        "reference_fp32_over_ours_bf16": ("pipeline fp32", "ours bf16"),
        "ours_speedup_over_fp32": ("ours fp32", "ours bf16"),
        "reference_speedup_over_fp32": ("pipeline fp32", "pipeline bf16"),
        "reference_bf16_over_ours_bf16": ("pipeline bf16", "ours bf16"),
    }
    if native:
        for name, summary in summaries.items():
            target = ">= 1.8x" if name.startswith("reference_fp32") else None
            print("  " + harness.fmt_ratio(f"bf16 (DDIM {steps}) {name}", summary, target, labels[name]))
    else:
        print(f"  bf16 speed: {harness.NOT_MEASURABLE} (no native bf16 on this CPU: oneDNN emulates it)")
    print(f"  bf16 vs fp32, ours: PSNR {drift['psnr_db']['ours']:.1f} dB (inside the box "
          f"{drift['psnr_box_db']:.1f} dB), pixel-mask IoU {drift['mask_iou']:.3f}; reference PSNR "
          f"{drift['psnr_db']['reference']:.1f} dB")  # fmt: skip
    figure = lambda value: harness.bf16_figure(value, native)  # noqa: E731
    return {
        "native_bf16": native,
        "steps": steps,
        "repeats": repeats,
        **{name: figure(summary) for name, summary in summaries.items()},
        "target": 1.8,
        "met": figure(summaries["reference_fp32_over_ours_bf16"]["median_ratio"] >= 1.8),
        **drift,
        "times_s": figure(times),
        "how": "GenerationConfig(mixed_precision='bf16'): UNet calls, VAE encoder and decoder under "
        "torch.autocast(bf16); the reference's UNet forward wrapped the same way (hooks), its VAE fp32",
    }


def bf16_drift(outputs: dict, boxes) -> dict:
    """How far bf16 moves the images from fp32 (PSNR, lowest over the images) and ours' pixel masks (IoU)."""
    ours16, ours32 = outputs["ours_bf16"], outputs["ours_fp32"]
    in_box = []
    for a, b, box in zip(ours16, ours32, boxes, strict=True):
        x0, y0, x1, y1 = (int(v) for v in box[0].tolist())
        in_box.append(harness.psnr(a.image[:, y0:y1, x0:x1], b.image[:, y0:y1, x0:x1]))
    images = {"ours": ([s.image for s in ours16], [s.image for s in ours32])}
    images["reference"] = (outputs["reference_bf16"], outputs["reference_fp32"])
    return {
        "psnr_db": {
            k: min(harness.psnr(a, b) for a, b in zip(*pair, strict=True)) for k, pair in images.items()
        },
        "psnr_box_db": min(in_box),
        "mask_iou": min(harness.mask_iou(a.mask, b.mask) for a, b in zip(ours16, ours32, strict=True)),
    }


def measure_memory(args) -> dict:
    """Peak RSS of one generation by ours and by the reference, each in a fresh process."""
    memory = {}
    for kind in ("ours", "reference"):
        memory[kind] = harness.run_child(
            __file__,
            ["--child", kind, "--backbone", args.backbone, "--steps", str(args.steps),
             "--guidance-scale", str(args.guidance_scale), "--batch", str(args.batch),
             "--seed", str(args.seed), "--threads", str(args.threads)],
        )  # fmt: skip
        print(f"  peak RSS {kind}: {memory[kind]['peak_rss_mib']:.0f} MiB "
              f"(after building the backbone: {memory[kind]['baseline_rss_mib']:.0f} MiB)")  # fmt: skip
    return memory


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        return child(args)
    harness.set_threads(args.threads)
    out = args.out or harness.RESULTS / f"speed_stage2_{args.backbone}.json"
    native = harness.native_bf16()
    bf16_steps = args.bf16_steps if args.bf16_steps is not None else (args.steps if native else 2)
    bf16_repeats = args.bf16_repeats or (args.repeats if native else 1)

    backbone = make_backbone(args.backbone)
    contenders = Contenders(backbone, make_embedding(backbone), args.guidance_scale)
    resolution = backbone.resolution
    box_side = resolution // 4
    print(f"stage 2: backbone {args.backbone} ({resolution} px), DDIM {args.steps}, guidance "
          f"{args.guidance_scale}, batch {args.batch}, box {box_side} px, {args.threads} thread(s)")  # fmt: skip
    images, boxes = make_inputs(resolution, box_side, args.batch, args.seed)
    result = {
        "benchmark": "speed_stage2",
        "backbone": args.backbone,
        "resolution": resolution,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "batch": args.batch,
        "threads": args.threads,
    }
    # 1. Throughput, fp32: ours vs the inpainting pipeline, interleaved.
    result["fp32"] = measure_fp32(args, contenders, images, boxes)
    # 2. Local mode: a 4x image with the same box size costs about as much as an image at the model's size.
    if args.local_repeats != 0:
        result["local"] = measure_local(args, contenders, images, boxes, resolution, box_side)
    # 3. bf16 autocast: speed against the fp32 pipeline and fp32 ours, and the drift of images and masks.
    if bf16_steps:
        result["bf16"] = measure_bf16(
            args, contenders, images, boxes, steps=bf16_steps, repeats=bf16_repeats, native=native
        )
    # 4. Batched generation: one generate_batch call against one-image pipeline calls.
    if args.gen_batch:
        result["batched_generation"] = measure_batch(args, contenders, resolution, box_side)
    # 5. Peak RSS of one generation, each in a fresh process.
    if not args.no_memory:
        result["memory"] = measure_memory(args)
    path = harness.write_result(out, result)
    print(f"  wrote {path}")
    return result


if __name__ == "__main__":
    main()
