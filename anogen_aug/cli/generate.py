"""``anogen-aug generate``: anomalies in sampled boxes on normal images, into a bank (sharded over ranks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import add_backbone_flags, add_config_flags, config_from_args, load_backbone_from_args


def add_parser(commands) -> None:
    from ..generation import GenerationConfig
    from ..paste import PasteConfig

    parser = commands.add_parser(
        "generate", help="generate anomalies in sampled boxes on normal images into a bank"
    )
    parser.add_argument("--images", nargs="+", required=True, help="normal images or folders of them")
    parser.add_argument("--out", required=True, help="bank folder (re-running skips what exists)")
    parser.add_argument("--generator", choices=["anogen", "paste"], default="anogen")
    parser.add_argument("--embedding", help="defect embedding folder or Hub id (anogen generator)")
    parser.add_argument("--embedding-revision", help="Hub revision of the embedding")
    parser.add_argument("--support-images", nargs="+", help="defect images (paste generator)")
    parser.add_argument("--support-masks", nargs="+", help="their masks (paste generator)")
    parser.add_argument("--category", help="the category (default: the embedding's); picks the box table row")
    parser.add_argument("--defect-type", help="the defect type (default: the embedding's)")
    parser.add_argument("--boxes-per-image", type=int, default=2, help="(default: 2)")
    parser.add_argument("--samples-per-box", type=int, default=2, help="(default: 2)")
    parser.add_argument(
        "--width-range", type=float, nargs=2, help="box width range, fraction of the image side"
    )
    parser.add_argument(
        "--height-range", type=float, nargs=2, help="box height range, fraction of the image side"
    )
    parser.add_argument(
        "--region", default="auto", help="allowed region: auto (Otsu foreground), none, or a mask file"
    )
    parser.add_argument("--rotate-boxes", action="store_true", help="the authors' rotated boxes")
    parser.add_argument("--size", type=int, help="resize normal images to SIZE x SIZE first")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    add_backbone_flags(parser)
    add_config_flags(parser, GenerationConfig, title="GenerationConfig (anogen generator)")
    add_config_flags(parser, PasteConfig, title="PasteConfig (paste generator)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distributed import write_bank_sharded

    generator, embedding_id = _generator(args)
    bank = write_bank_sharded(
        generator,
        _normal_images(args.images),
        args.out,
        category=args.category or "unknown",
        defect_type=args.defect_type or "defect",
        box_sampler=_box_sampler(args),
        boxes_per_image=args.boxes_per_image,
        samples_per_box=args.samples_per_box,
        seed=args.seed,
        embedding_id=embedding_id,
        size=args.size,
    )
    print(f"bank {args.out}: {len(bank)} samples")
    return 0


def _generator(args: argparse.Namespace):
    """The generator the flags ask for, and its embedding id (None for crop-and-paste)."""
    if args.generator == "paste":
        from ..paste import CopyPasteGenerator, PasteConfig

        if not args.support_images or not args.support_masks:
            raise ValueError("--generator paste needs --support-images and --support-masks")
        config = config_from_args(PasteConfig, args)
        return CopyPasteGenerator(args.support_images, args.support_masks, config=config), None
    from ..embedding import DefectEmbedding
    from ..generation import AnomalyGenerator, GenerationConfig

    if not args.embedding:
        raise ValueError(
            "--generator anogen needs --embedding (a folder or Hub id written by `anogen-aug learn`)"
        )
    embedding = DefectEmbedding.from_pretrained(args.embedding, revision=args.embedding_revision)
    backbone = load_backbone_from_args(args, fallback=embedding.backbone)
    generator = AnomalyGenerator(backbone, embedding, config=config_from_args(GenerationConfig, args))
    args.category = args.category or embedding.category
    args.defect_type = args.defect_type or embedding.defect_type
    return generator, embedding.id


def _box_sampler(args: argparse.Namespace):
    from ..boxes import BoxSampler
    from ..images import load_mask

    region = args.region
    if region not in (None, "auto", "none"):
        region = load_mask(region, name="--region")
    region = None if region == "none" else region
    if args.width_range or args.height_range:
        return BoxSampler(
            width_range=tuple(args.width_range or (0.05, 0.25)),
            height_range=tuple(args.height_range or (0.05, 0.25)),
            region=region,
            rotation=args.rotate_boxes,
        )
    if args.category and args.defect_type:
        return BoxSampler.from_table(
            args.category, args.defect_type, fallback=True, region=region, rotation=args.rotate_boxes
        )
    return BoxSampler(region=region, rotation=args.rotate_boxes)


def _normal_images(paths: list[str]) -> list[Path]:
    from ..images import list_images

    files: list[Path] = []
    for path in paths:
        files += list_images(path, name="--images") if Path(path).is_dir() else [Path(path)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"--images: no such file(s): {', '.join(missing)}")
    return files
