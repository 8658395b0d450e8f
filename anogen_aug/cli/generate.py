"""``anogen-aug generate``: anomalies in sampled boxes on normal images, into a bank (sharded over ranks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import (
    add_backbone_flags,
    add_config_flags,
    config_from_args,
    flag_names,
    load_backbone_from_args,
)


def add_parser(commands) -> None:
    from ..generation import GenerationConfig
    from ..paste import PasteConfig

    parser = commands.add_parser(
        "generate", help="generate anomalies in sampled boxes on normal images into a bank"
    )
    parser.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="normal images, or folders of them (required)",
    )
    parser.add_argument(
        "--out", required=True, help="bank folder; re-running the same command skips what exists (required)"
    )
    parser.add_argument(
        "--generator",
        choices=["anogen", "paste"],
        default="anogen",
        help="anogen: the diffusion model with a learned --embedding; paste: crop-and-paste of "
        "--support-images, no weights needed (default: anogen)",
    )
    parser.add_argument(
        "--embedding",
        help="defect embedding folder or Hub repo id, written by `anogen-aug learn` (required by anogen)",
    )
    parser.add_argument(
        "--embedding-revision", help="Hub revision of --embedding: a branch, tag or commit (default: main)"
    )
    parser.add_argument(
        "--support-images", nargs="+", help="defect images to cut anomalies from (required by paste)"
    )
    parser.add_argument(
        "--support-masks",
        nargs="+",
        help="one pixel mask per support image, same order and size (required by paste)",
    )
    parser.add_argument(
        "--category",
        help="the product category, stored in the bank; with --defect-type it picks the authors' box sizes "
        "(default: the embedding's, else unknown)",
    )
    parser.add_argument(
        "--defect-type", help="the defect type, stored in the bank (default: the embedding's, else defect)"
    )
    _add_box_flags(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    add_backbone_flags(parser)
    add_config_flags(parser, GenerationConfig, title="GenerationConfig (anogen generator)")
    add_config_flags(parser, PasteConfig, title="PasteConfig (paste generator)")
    parser.set_defaults(func=run)


def _add_box_flags(parser: argparse.ArgumentParser) -> None:
    """How many boxes, of which sizes, where, and the size the images are generated at."""
    parser.add_argument(
        "--boxes-per-image", type=int, default=2, help="boxes sampled on each normal image (default: 2)"
    )
    parser.add_argument(
        "--samples-per-box", type=int, default=2, help="anomalies generated in each box (default: 2)"
    )
    parser.add_argument(
        "--width-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="box width range as fractions of the image width, e.g. 0.05 0.25 (default: the authors' table "
        "for --category/--defect-type, else 0.05 0.25)",
    )
    parser.add_argument(
        "--height-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="box height range as fractions of the image height, e.g. 0.05 0.25 (default: the authors' table "
        "for --category/--defect-type, else 0.05 0.25)",
    )
    parser.add_argument(
        "--region",
        default="auto",
        help="where boxes may go: auto (the object's foreground, Otsu), none (anywhere), or a mask file "
        "(default: auto)",
    )
    parser.add_argument(
        "--rotate-boxes", action="store_true", help="rotated boxes, as the authors' code (default: off)"
    )
    parser.add_argument(
        "--size", type=int, help="resize normal images to SIZE x SIZE pixels first (default: keep their size)"
    )


def run(args: argparse.Namespace) -> int:
    from ..checks import check_int
    from ..distributed import write_bank_sharded

    # 1. Check every input that needs no backbone first (loading the real one takes minutes).
    embedding = _embedding(args)
    with flag_names(args):
        normals = _normal_images(args.images)
        check_int(args.boxes_per_image, "boxes_per_image")
        check_int(args.samples_per_box, "samples_per_box")
        if args.size is not None:
            check_int(args.size, "size")
        box_sampler = _box_sampler(args)
        generator = _paste_generator(args) if embedding is None else None
    # 2. The diffusion generator (settings checked first): the backbone named by --backbone, else the one the
    #    embedding was learned on.
    if embedding is not None:
        from ..generation import AnomalyGenerator, GenerationConfig

        with flag_names(args):
            config = config_from_args(GenerationConfig, args)
        with flag_names(args, pretrained_model_name_or_path="--backbone"):
            backbone = load_backbone_from_args(args, fallback=embedding.backbone)
        with flag_names(args):
            generator = AnomalyGenerator(backbone, embedding, config=config)
    # 3. The bank, split over the ranks of `accelerate launch` / `torchrun`.
    with flag_names(args):
        bank = write_bank_sharded(
            generator,
            normals,
            args.out,
            category=args.category or "unknown",
            defect_type=args.defect_type or "defect",
            box_sampler=box_sampler,
            boxes_per_image=args.boxes_per_image,
            samples_per_box=args.samples_per_box,
            seed=args.seed,
            embedding_id=None if embedding is None else embedding.id,
            size=args.size,
        )
    print(f"bank {args.out}: {len(bank)} samples")
    return 0


def _embedding(args: argparse.Namespace):
    """The defect embedding of the anogen generator (its category and defect type fill in the flags'), or None."""
    if args.generator == "paste":
        return None
    from ..embedding import DefectEmbedding

    if not args.embedding:
        raise ValueError(
            "--generator anogen needs --embedding (a folder or Hub id written by `anogen-aug learn`)"
        )
    with flag_names(args, pretrained_model_name_or_path="--embedding", revision="--embedding-revision"):
        embedding = DefectEmbedding.from_pretrained(args.embedding, revision=args.embedding_revision)
    args.category = args.category or embedding.category
    args.defect_type = args.defect_type or embedding.defect_type
    return embedding


def _paste_generator(args: argparse.Namespace):
    from ..paste import CopyPasteGenerator, PasteConfig

    if not args.support_images or not args.support_masks:
        raise ValueError("--generator paste needs --support-images and --support-masks")
    return CopyPasteGenerator(
        args.support_images, args.support_masks, config=config_from_args(PasteConfig, args)
    )


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
