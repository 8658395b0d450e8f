"""``python -m benchmarks.downstream``: the command line of the downstream benchmark (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch

from benchmarks.harness import ROOT, environment

from .arms import ARMS, DEFAULT_ARMS
from .cpu_protocol import run_cpu_protocol
from .draem_protocol import DRAEM_ARMS, run_draem_protocol
from .gpu_protocol import run_gpu_protocol
from .record import EXTRA_PACKAGES, save

DATASETS = ("magnetic_tile/magnetic_tile", "kolektorsdd/kolektorsdd", "mvtec_3d_ad_rgb/tire")
#: Per protocol: the defaults that differ, and the result file.
PROTOCOLS = {
    "segmentation": {"image_size": 96, "lr": 1e-2, "arms": DEFAULT_ARMS, "out": "downstream.json"},
    "draem": {"image_size": 96, "lr": 1e-3, "arms": list(DRAEM_ARMS), "out": "downstream_draem.json"},
}


def default_data() -> list[Path]:
    """The shared data sets under ``ANOGEN_DATA_DIR`` (default ``../shared/data``)."""
    base = Path(os.environ.get("ANOGEN_DATA_DIR", ROOT.parent / "shared" / "data"))
    return [base / name for name in DATASETS]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.downstream",
        description="Downstream quality on real data (benchmarks/README.md)",
    )
    parser.add_argument(
        "--data", action="append", type=Path, help="MVTec-layout category folder (repeatable)"
    )
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="segmentation",
        help="segmentation (a small U-Net, the default) or draem (WeakDraem through train_detector)",
    )
    parser.add_argument("--image-size", type=int, help="square side of train and test images (96)")
    parser.add_argument("--epochs", type=int, default=15, help="segmentation: training epochs")
    parser.add_argument("--steps", type=int, default=150, help="draem: optimiser steps per arm")
    parser.add_argument("--reconstruction-width", type=int, default=16, help="draem: anomalib's is 128")
    parser.add_argument("--discrimination-width", type=int, default=8, help="draem: anomalib's is 64")
    parser.add_argument("--maps", type=int, default=2, help="draem: anomaly-map PNGs written per run")
    parser.add_argument(
        "--prior", type=float, default=0.5, help="segmentation: the U-Net's P(anomalous) at initialisation"
    )
    parser.add_argument("--train-images", type=int, default=100, help="normal train images used")
    parser.add_argument(
        "--eval-anomalies", type=int, default=150, help="cap on anomalous test images (normal ones: all)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=sorted(set(ARMS) | set(DRAEM_ARMS)))
    parser.add_argument(
        "--diffusion-bank",
        help="bank of the diffusion arm, with {category} and {seed} placeholders (needs a real backbone)",
    )
    parser.add_argument("--k", type=int, default=3, help="support anomalies per defect type")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, help="learning rate (segmentation: AdamW 1e-2; draem: Adam 1e-3)")
    parser.add_argument("--base-channels", type=int, default=8, help="U-Net width of the first level")
    parser.add_argument("--loss", choices=["focal", "bce"], default="focal", help="per-pixel loss")
    parser.add_argument(
        "--boxes-per-image", type=int, default=2, help="bank samples per train image and defect type"
    )
    parser.add_argument("--image-score", choices=["max", "topk"], default="topk")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/anogen-downstream"), help="banks and layouts"
    )
    parser.add_argument("--out", type=Path, help="result JSON (benchmarks/results/downstream[_draem].json)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    parser.add_argument("--progress", action="store_true", help="tqdm bars while training")
    parser.add_argument(
        "--gpu-protocol", action="store_true", help="print the anogen-aug commands (paper settings)"
    )
    parser.add_argument("--smoke-gpu-protocol", action="store_true", help="run them at toy size on the CPU")
    args = parser.parse_args(argv)
    defaults = PROTOCOLS[args.protocol]
    args.image_size = args.image_size or defaults["image_size"]
    args.lr = args.lr or defaults["lr"]
    args.arms = args.arms or defaults["arms"]
    args.out = args.out or ROOT / "benchmarks" / "results" / defaults["out"]
    known = DRAEM_ARMS if args.protocol == "draem" else ARMS
    if set(args.arms) - set(known):
        parser.error(f"the {args.protocol} protocol has the arms {list(known)}, got {args.arms}")
    if "diffusion" in args.arms and not args.diffusion_bank:
        parser.error("the diffusion arm needs --diffusion-bank (see benchmarks/README.md)")
    args.data = args.data or default_data()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.gpu_protocol or args.smoke_gpu_protocol:
        outcome = run_gpu_protocol(args, smoke=args.smoke_gpu_protocol)
        if args.smoke_gpu_protocol:
            path = Path(args.out).with_name("downstream_gpu_smoke.json")
            save(
                {
                    **outcome,
                    "environment": environment(extra_packages=EXTRA_PACKAGES),
                    "command": shlex.join(sys.argv),
                },
                path,
            )
        return 0
    (run_draem_protocol if args.protocol == "draem" else run_cpu_protocol)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
