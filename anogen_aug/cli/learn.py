"""``anogen-aug learn``: learn a defect embedding from 1-3 defect images with masks (stage 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import (
    add_backbone_flags,
    add_config_flags,
    config_from_args,
    flag_names,
    load_backbone_from_args,
    seeded,
)

_COST = (
    "Cost: the default 6100 steps take about an hour on a CPU even with a tiny test backbone, and far longer with "
    "the real one; the authors report about one GPU-hour per defect type. For a first try that checks your "
    "files and setup, pass --max-train-steps 50."
)


def add_parser(commands) -> None:
    from ..inversion import InversionConfig

    parser = commands.add_parser(
        "learn",
        help="learn a defect embedding from 1-3 defect images with masks (stage 1)",
        description="Learn a defect embedding (AnoGen stage 1) from 1-3 defect images and their pixel masks.",
        epilog=_COST,
    )
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="1-3 defect images (any size: resized to the backbone's resolution) (required)",
    )
    parser.add_argument(
        "--masks",
        nargs="+",
        required=True,
        help="one pixel mask per image, same order and size; any non-zero pixel is defect (required)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: the embedding's files, and its checkpoints in OUT/checkpoints (required)",
    )
    parser.add_argument(
        "--placeholder-token",
        help="the learned token's name in the files, e.g. <bottle-broken_large> (default: <DEFECT_TYPE>, "
        "else <defect>)",
    )
    parser.add_argument(
        "--category", help="the product category, e.g. bottle, stored in the embedding (default: none)"
    )
    parser.add_argument(
        "--defect-type",
        help="the defect type, e.g. broken_large, stored in the embedding (default: none)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every random draw; the same seed gives the same embedding (default: 0)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in OUT/checkpoints (default: off, start at step 0)",
    )
    add_backbone_flags(parser)
    add_config_flags(parser, InversionConfig, title="InversionConfig", skip={"templates"})
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inversion import InversionConfig, learn_defect_embedding
    from ..support import load_support_set

    out = Path(args.out)
    # 1. Check what needs no backbone first: loading the real one takes minutes.
    with flag_names(args, output_dir="--out"):
        config = config_from_args(InversionConfig, args)
        load_support_set(args.images, args.masks)
        if out.exists() and not out.is_dir():
            raise ValueError(f"`out` must be a folder, got the file {out}")
    # 2. The backbone, then stage 1.
    with flag_names(args, pretrained_model_name_or_path="--backbone"):
        backbone = load_backbone_from_args(args)
    with flag_names(args, output_dir="--out"):
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
