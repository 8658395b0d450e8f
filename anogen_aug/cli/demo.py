"""``anogen-aug demo``: the whole pipeline offline on a tiny backbone and sample images it draws itself."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo", help="run the whole pipeline offline on a tiny backbone (a few minutes on CPU)"
    )
    parser.add_argument("--out", default="anogen-demo", help="output folder (default: anogen-demo)")
    parser.add_argument(
        "--data",
        help="an MVTec-layout category folder (train/good, test/<defect>, ground_truth/<defect>) to use "
        "instead of the built-in sample images (default: the built-in ones)",
    )
    parser.add_argument(
        "--steps", type=int, default=30, help="stage-1 optimisation steps on the tiny backbone (default: 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a tiny weakly supervised DRAEM for 1 epoch; needs anogen-aug[anomalib] "
        "(default: --detector)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(
        args.out,
        data=args.data,
        steps=args.steps,
        seed=args.seed,
        detector=args.detector,
        say=print,
        quiet=not args.verbose,  # -v shows the dependencies' own messages too
    )
    return 0
