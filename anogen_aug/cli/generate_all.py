"""``anogen-aug generate-all``: a bank for every embedding ``learn-all`` learned, onto its category's normal images.

Run it plainly, or under ``accelerate launch`` / ``torchrun`` to write one bank per process at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .flags import add_backbone_flags, add_config_flags, config_from_args, load_backbone_from_args
from .learn_all import report_summary


def add_parser(commands) -> None:
    from ..generation import GenerationConfig

    parser = commands.add_parser(
        "generate-all", help="a bank for every embedding of a learn-all folder (resumable, sharded)"
    )
    parser.add_argument(
        "--out", required=True, help="the learn-all output folder (banks/ and sheets/ go there)"
    )
    parser.add_argument("--boxes-per-image", type=int, default=2, help="boxes per normal image (default: 2)")
    parser.add_argument("--samples-per-box", type=int, default=2, help="anomalies per box (default: 2)")
    parser.add_argument(
        "--region",
        choices=["auto", "none"],
        default="auto",
        help="where boxes go: auto (inside the Otsu foreground) or none (anywhere) (default: auto)",
    )
    parser.add_argument("--size", type=int, help="resize normal images to SIZE x SIZE first (default: keep)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the banks (default: 0)")
    add_backbone_flags(parser)
    add_config_flags(parser, GenerationConfig, title="GenerationConfig")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..generation import GenerationConfig
    from ..whole_dataset import generate_all, read_support_json

    read_support_json(args.out)  # a wrong --out is reported before the backbone loads
    summary = generate_all(
        load_backbone_from_args(args, fallback=_learned_backbone(Path(args.out))),
        args.out,
        config=config_from_args(GenerationConfig, args),
        boxes_per_image=args.boxes_per_image,
        samples_per_box=args.samples_per_box,
        seed=args.seed,
        size=args.size,
        region=args.region,
    )
    return report_summary(summary, f"banks in {args.out}/banks, contact sheets in {args.out}/sheets")


def _learned_backbone(out: Path) -> str | None:
    """The backbone the first embedding in ``OUT/embeddings`` was learned on (the default of --backbone)."""
    for config in sorted(out.glob("embeddings/*/config.json")):
        return json.loads(config.read_text()).get("backbone")
    return None
