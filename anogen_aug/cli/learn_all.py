"""``anogen-aug learn-all``: an embedding for every defect type of an MVTec-AD-layout folder (stage 1, at scale).

Run it plainly, or under ``accelerate launch`` / ``torchrun`` to learn one defect type per process at a time.
"""

from __future__ import annotations

import argparse

from .flags import add_backbone_flags, add_config_flags, config_from_args, load_backbone_from_args


def add_parser(commands) -> None:
    from ..inversion import InversionConfig

    parser = commands.add_parser(
        "learn-all",
        help="learn an embedding for every defect type of an MVTec-layout folder (resumable, sharded)",
    )
    parser.add_argument(
        "--data", required=True, help="an MVTec-layout category folder, or a folder of categories"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (embeddings/, support.json, ...); re-run to resume"
    )
    parser.add_argument("--categories", nargs="+", help="only these categories (default: all under --data)")
    parser.add_argument("--k", type=int, default=3, help="support images per defect type (default: 3)")
    parser.add_argument(
        "--support-seed",
        type=int,
        default=0,
        help="seed of the support draw, the benchmark's seed (default: 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every job's training draws (default: 0)")
    add_backbone_flags(parser)
    add_config_flags(parser, InversionConfig, title="InversionConfig", skip={"templates"})
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inversion import InversionConfig
    from ..whole_dataset import learn_all, plan_dataset

    config = config_from_args(InversionConfig, args)
    # Bad data is reported before the backbone loads (minutes for the real one); learn_all plans again.
    plan_dataset(args.data, k=args.k, seed=args.support_seed, categories=args.categories)
    summary = learn_all(
        load_backbone_from_args(args),
        args.data,
        args.out,
        config=config,
        k=args.k,
        support_seed=args.support_seed,
        seed=args.seed,
        categories=args.categories,
    )
    return report_summary(summary, f"embeddings in {args.out}/embeddings")


def report_summary(summary, produced: str) -> int:
    """Print a whole-data-set run's table on the main process; the exit code (1 when a job failed)."""
    from ..distributed import process_state

    if process_state().is_main_process:
        print(summary.table())
        print(f"{produced}; table in {summary.path}")
    return 1 if summary.failed else 0
