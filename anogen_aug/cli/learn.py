"""``anogen-aug learn``: learn a defect embedding from 1-3 defect images with masks (stage 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import add_backbone_flags, add_config_flags, config_from_args, load_backbone_from_args, seeded


def add_parser(commands) -> None:
    from ..inversion import InversionConfig

    parser = commands.add_parser(
        "learn", help="learn a defect embedding from 1-3 defect images with masks (stage 1)"
    )
    parser.add_argument("--images", nargs="+", required=True, help="1-3 defect images")
    parser.add_argument("--masks", nargs="+", required=True, help="their pixel masks, same order")
    parser.add_argument("--out", required=True, help="output folder (embedding files; checkpoints/ inside)")
    parser.add_argument("--placeholder-token", help="the learned token's name, default <defect-type>")
    parser.add_argument("--category", help="the product category, stored in the embedding's metadata")
    parser.add_argument("--defect-type", help="the defect type, stored in the embedding's metadata")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints"
    )
    add_backbone_flags(parser)
    add_config_flags(parser, InversionConfig, title="InversionConfig", skip={"templates"})
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inversion import InversionConfig, learn_defect_embedding

    config = config_from_args(InversionConfig, args)
    backbone = load_backbone_from_args(args)
    out = Path(args.out)
    embedding = learn_defect_embedding(
        backbone,
        args.images,
        args.masks,
        config=config,
        generator=seeded(args.seed),
        placeholder_token=args.placeholder_token,
        category=args.category,
        defect_type=args.defect_type,
        output_dir=out / "checkpoints",
        resume=args.resume,
    )
    embedding.save_pretrained(out)
    print(f"saved defect embedding {embedding.placeholder_token} (width {embedding.dim}) to {out}")
    return 0
