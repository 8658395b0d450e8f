"""Transform speed: `AnoGenAugment` per sample against anomalib's `PerlinAnomalyGenerator`, at 256 px.

A bank is written first (crop-and-paste generator, no diffusion weights) in a temporary folder: ``--sources``
normal images x 2 boxes x 2 samples, i.e. more samples than the transform's default 32-sample cache, so part of
the draws read PNG files like a real bank would. Every call adds an anomaly (``p=1`` for ours,
``probability=1`` for Perlin) to a 256 px image in [0, 1] with its mask, the way a training data set calls
them. Ours is timed in its two modes: ``transplant`` (an image the bank has never seen: a sample's box region is
moved onto it) and ``direct`` (the image is a bank source: its own sample replaces the box; this costs a content
hash per call). Perlin is timed as DRAEM uses it offline (Perlin noise as the anomaly source) and with a folder of
texture images (its DTD mode, which reads and resizes one texture per call).

    python -m benchmarks.speed_augment
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from torchvision import tv_tensors

from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.images import load_image, save_png
from anogen_aug.paste import CopyPasteGenerator
from anogen_aug.transforms import AnoGenAugment
from benchmarks import harness


def write_inputs(folder: Path, *, size: int, sources: int, seed: int) -> dict:
    """Normal source PNGs, support defects, a bank of crop-and-paste samples and Perlin texture files."""
    generator = torch.Generator().manual_seed(seed)
    (folder / "normal").mkdir()
    paths = [
        save_png(harness.synthetic_normal(size, generator=generator), folder / "normal" / f"{i:03d}.png")
        for i in range(sources)
    ]
    support = [harness.synthetic_defect(size, generator=generator) for _ in range(3)]
    paste = CopyPasteGenerator([image for image, _ in support], [mask for _, mask in support])
    bank = write_bank(
        paste,
        paths,
        folder / "bank",
        category="bench",
        defect_type="blotch",
        box_sampler=BoxSampler(width_range=(0.1, 0.3), height_range=(0.1, 0.3)),
        boxes_per_image=2,
        samples_per_box=2,
        seed=seed,
        progress=False,
    )
    (folder / "textures").mkdir()
    for i in range(8):  # DTD images are 300-640 px: Perlin's texture mode resizes one per call
        save_png(harness.synthetic_normal(512, generator=generator), folder / "textures" / f"{i}.png")
    unseen = [harness.synthetic_normal(size, generator=generator) for _ in range(8)]
    return {"bank": bank, "paths": paths, "textures": folder / "textures", "unseen": unseen}


def loop(fn, inputs: list, samples: int):
    """Apply ``fn`` to ``samples`` inputs, cycling through ``inputs``."""

    def run():
        for i in range(samples):
            fn(inputs[i % len(inputs)])

    return run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sources", type=int, default=16, help="normal images in the bank (x4 samples)")
    parser.add_argument("--samples", type=int, default=16, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "speed_augment.json")
    return parser.parse_args(argv)


def time_transforms(made: dict, args) -> dict[str, list]:
    """Seconds per repeat of each transform, interleaved (ours in both modes, Perlin in both sources)."""
    bank = made["bank"]
    ours = AnoGenAugment(bank, p=1.0)
    perlin = PerlinAnomalyGenerator(probability=1.0)
    perlin_textures = PerlinAnomalyGenerator(anomaly_source_path=made["textures"], probability=1.0)
    empty = tv_tensors.Mask(torch.zeros(1, args.size, args.size, dtype=torch.bool))
    unseen = [tv_tensors.Image(x) for x in made["unseen"]]
    sources = [tv_tensors.Image(load_image(p)) for p in made["paths"]]
    _, params = ours.forward_with_params(sources[0], empty)
    if params["mode"] != "direct":
        raise SystemExit("a bank source was not recognised (direct mode expected)")
    runs = {
        "ours_transplant": loop(lambda x: ours(x, empty), unseen, args.samples),
        "perlin": loop(lambda x: perlin(x.as_subclass(torch.Tensor)), unseen, args.samples),
        "ours_direct": loop(lambda x: ours(x, empty), sources, args.samples),
        "perlin_textures": loop(lambda x: perlin_textures(x.as_subclass(torch.Tensor)), unseen, args.samples),
    }
    return harness.interleaved(runs, repeats=args.repeats, warmup=1)


def main(argv=None) -> dict:
    args = parse_args(argv)
    harness.set_threads(args.threads)
    torch.manual_seed(args.seed)  # both transforms draw from the global RNG (torchvision's convention)

    with tempfile.TemporaryDirectory() as tmp:
        made = write_inputs(Path(tmp), size=args.size, sources=args.sources, seed=args.seed)
        bank = made["bank"]
        print(f"augment: {args.size} px, bank of {len(bank)} samples (cache 32), {args.samples} calls per repeat, "
              f"{args.threads} thread(s)")  # fmt: skip
        times = time_transforms(made, args)

    per_sample = {k: statistics.median(v) / args.samples * 1e3 for k, v in times.items()}
    result = {
        "benchmark": "speed_augment",
        "size": args.size,
        "bank_samples": len(bank),
        "samples_per_repeat": args.samples,
        "threads": args.threads,
        "ms_per_sample": per_sample,
        "times_s": times,
    }
    for mode in ("transplant", "direct"):
        for reference in ("perlin", "perlin_textures"):
            summary = harness.ratio_summary(times[f"ours_{mode}"], times[reference])
            result[f"{mode}_over_{reference}"] = summary
            target = "<= 1x" if reference == "perlin" else None
            print(
                "  " + harness.fmt_ratio(f"ours ({mode}) / {reference}", summary, target, ("ours", reference))
            )
    headline = result["transplant_over_perlin"]["median_ratio"]
    result["target"] = 1.0
    result["met"] = headline <= 1.0 and result["direct_over_perlin"]["median_ratio"] <= 1.0
    print("  ms per sample: " + ", ".join(f"{k} {v:.2f}" for k, v in per_sample.items()))
    path = harness.write_result(args.out, result)
    print(f"  wrote {path}")
    return result


if __name__ == "__main__":
    main()
