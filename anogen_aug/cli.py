"""The ``anogen-aug`` command: learn, generate, show, push, convert-official, train, demo.

Configuration flags map one to one onto the fields of the library's config dataclasses (``--max-train-steps``
is ``InversionConfig.max_train_steps``); ``--help`` on each command lists them with their defaults. Errors are
one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path

logger = logging.getLogger("anogen_aug")

EXIT_USAGE = 2


# --- dataclass <-> flags ---------------------------------------------------------------------------------
def _flag_type(hint):
    """(argparse type, nargs) for a dataclass field's type hint; None when the field has no flag."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _flag_type(options[0]) if len(options) == 1 else (str, None)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else float), "+"
    if origin is typing.Literal:
        return str, None
    if hint in (int, float, str):
        return hint, None
    if hint is bool:
        return bool, None
    return None


def add_config_flags(parser: argparse.ArgumentParser, config_cls, *, title: str, skip=()) -> None:
    """Add one flag per field of a frozen config dataclass (default: the dataclass default)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in skip or field.name.startswith("_"):
            continue
        spec = _flag_type(hints[field.name])
        if spec is None:
            continue
        kind, nargs = spec
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {default})"
            )
        else:
            group.add_argument(
                flag,
                type=kind,
                nargs=nargs,
                default=None,
                metavar=field.name.upper(),
                help=f"(default: {default})",
            )


def config_from_args(config_cls, args: argparse.Namespace):
    """Build a config from the flags that were given; the rest keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return config_cls(**given)


# --- commands --------------------------------------------------------------------------------------------
def _seeded(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _load_backbone(args, fallback: str | None = None):
    from .backbone import DEFAULT_BACKBONE, load_backbone

    dtype = None
    if getattr(args, "dtype", None):
        import torch

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = args.device
    if device is None and "WORLD_SIZE" in os.environ:  # a rank of `accelerate launch` / torchrun: its device
        from .distributed import process_state

        device = process_state().device
    return load_backbone(
        args.backbone or fallback or DEFAULT_BACKBONE, revision=args.revision, dtype=dtype, device=device
    )


def cmd_learn(args) -> int:
    from .inversion import InversionConfig, learn_defect_embedding

    config = config_from_args(InversionConfig, args)
    backbone = _load_backbone(args)
    out = Path(args.out)
    embedding = learn_defect_embedding(
        backbone,
        args.images,
        args.masks,
        config=config,
        generator=_seeded(args.seed),
        placeholder_token=args.placeholder_token,
        category=args.category,
        defect_type=args.defect_type,
        output_dir=out / "checkpoints",
        resume=args.resume,
    )
    embedding.save_pretrained(out)
    print(f"saved defect embedding {embedding.placeholder_token} (width {embedding.dim}) to {out}")
    return 0


def _box_sampler(args):
    from .boxes import BoxSampler
    from .images import load_mask

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
    from .images import list_images

    files: list[Path] = []
    for path in paths:
        files += list_images(path, name="--images") if Path(path).is_dir() else [Path(path)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"--images: no such file(s): {', '.join(missing)}")
    return files


def cmd_generate(args) -> int:
    from .distributed import write_bank_sharded

    if args.generator == "paste":
        from .paste import CopyPasteGenerator, PasteConfig

        if not args.support_images or not args.support_masks:
            raise ValueError("--generator paste needs --support-images and --support-masks")
        generator = CopyPasteGenerator(
            args.support_images, args.support_masks, config=config_from_args(PasteConfig, args)
        )
        embedding_id = None
    else:
        from .embedding import DefectEmbedding
        from .generation import AnomalyGenerator, GenerationConfig

        if not args.embedding:
            raise ValueError(
                "--generator anogen needs --embedding (a folder or Hub id written by `anogen-aug learn`)"
            )
        embedding = DefectEmbedding.from_pretrained(args.embedding, revision=args.embedding_revision)
        backbone = _load_backbone(args, fallback=embedding.backbone)
        generator = AnomalyGenerator(backbone, embedding, config=config_from_args(GenerationConfig, args))
        embedding_id = embedding.id
        args.category = args.category or embedding.category
        args.defect_type = args.defect_type or embedding.defect_type
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


def cmd_show(args) -> int:
    from .bank import AnomalyBank
    from .contact_sheet import bank_contact_sheet

    path = bank_contact_sheet(AnomalyBank(args.bank), out=args.out, max_rows=args.max_rows)
    print(f"wrote {path}")
    return 0


def cmd_push(args) -> int:
    path = Path(args.path)
    if (path / "manifest.jsonl").is_file():
        from .bank import AnomalyBank

        AnomalyBank(path).push_to_hub(args.repo_id, private=args.private, token=args.token)
    elif (path / "learned_embeds.safetensors").is_file():
        from .embedding import DefectEmbedding

        DefectEmbedding.from_pretrained(path).push_to_hub(
            args.repo_id, private=args.private, token=args.token
        )
    else:
        raise FileNotFoundError(f"{path} is neither a defect embedding folder nor an anomaly bank")
    print(f"pushed {path} to {args.repo_id}")
    return 0


def cmd_convert_official(args) -> int:
    from .official import convert_official

    embedding = convert_official(
        args.path,
        trust_pickle=args.trust_pickle,
        placeholder_token=args.placeholder_token,
        category=args.category,
        defect_type=args.defect_type,
    )
    embedding.save_pretrained(args.out)
    print(f"converted {args.path} -> {args.out} ({embedding.placeholder_token}, width {embedding.dim})")
    return 0


def cmd_train(args) -> int:
    try:
        from anogen_aug.integrations.anomalib import train_detector
    except ImportError as error:
        raise ImportError(
            f"`anogen-aug train` needs anomalib: pip install 'anogen-aug[anomalib]' ({error})"
        ) from error
    metrics = train_detector(
        args.data,
        args.category,
        args.bank,
        model=args.model,
        tau=args.tau,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        limit_train_batches=args.limit_train_batches,
        out_dir=args.out,
        seed=args.seed,
        accelerator=args.accelerator,
        p=args.p,
        pretrained=args.pretrained,
        dtd_dir=args.dtd_dir,
        de_st_steps=args.de_st_steps,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, data=args.data, steps=args.steps, seed=args.seed, detector=args.detector, say=print)
    return 0


# --- parser ----------------------------------------------------------------------------------------------
def _backbone_flags(parser) -> None:
    parser.add_argument(
        "--backbone",
        help="Hub id or diffusers folder (default: CompVis/ldm-text2im-large-256, or the embedding's)",
    )
    parser.add_argument("--revision", help="Hub revision of the backbone")
    parser.add_argument("--device", help="torch device, e.g. cuda or cpu (default: cpu)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="component dtype (default float32)"
    )


def build_parser() -> argparse.ArgumentParser:
    from .generation import GenerationConfig
    from .inversion import InversionConfig
    from .paste import PasteConfig

    parser = argparse.ArgumentParser(prog="anogen-aug", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    learn = commands.add_parser(
        "learn", help="learn a defect embedding from 1-3 defect images with masks (stage 1)"
    )
    learn.add_argument("--images", nargs="+", required=True, help="1-3 defect images")
    learn.add_argument("--masks", nargs="+", required=True, help="their pixel masks, same order")
    learn.add_argument("--out", required=True, help="output folder (embedding files; checkpoints/ inside)")
    learn.add_argument("--placeholder-token", help="the learned token's name, default <defect-type>")
    learn.add_argument("--category")
    learn.add_argument("--defect-type")
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints"
    )
    _backbone_flags(learn)
    add_config_flags(learn, InversionConfig, title="InversionConfig", skip={"templates"})
    learn.set_defaults(func=cmd_learn)

    generate = commands.add_parser(
        "generate", help="generate anomalies in sampled boxes on normal images into a bank"
    )
    generate.add_argument("--images", nargs="+", required=True, help="normal images or folders of them")
    generate.add_argument("--out", required=True, help="bank folder (re-running skips what exists)")
    generate.add_argument("--generator", choices=["anogen", "paste"], default="anogen")
    generate.add_argument("--embedding", help="defect embedding folder or Hub id (anogen generator)")
    generate.add_argument("--embedding-revision")
    generate.add_argument("--support-images", nargs="+", help="defect images (paste generator)")
    generate.add_argument("--support-masks", nargs="+", help="their masks (paste generator)")
    generate.add_argument("--category")
    generate.add_argument("--defect-type")
    generate.add_argument("--boxes-per-image", type=int, default=2)
    generate.add_argument("--samples-per-box", type=int, default=2)
    generate.add_argument(
        "--width-range", type=float, nargs=2, help="box width range, fraction of the image side"
    )
    generate.add_argument(
        "--height-range", type=float, nargs=2, help="box height range, fraction of the image side"
    )
    generate.add_argument(
        "--region", default="auto", help="allowed region: auto (Otsu foreground), none, or a mask file"
    )
    generate.add_argument("--rotate-boxes", action="store_true", help="the authors' rotated boxes")
    generate.add_argument("--size", type=int, help="resize normal images to SIZE x SIZE first")
    generate.add_argument("--seed", type=int, default=0)
    _backbone_flags(generate)
    add_config_flags(generate, GenerationConfig, title="GenerationConfig (anogen generator)")
    add_config_flags(generate, PasteConfig, title="PasteConfig (paste generator)")
    generate.set_defaults(func=cmd_generate)

    show = commands.add_parser("show", help="draw a contact sheet of a bank")
    show.add_argument("bank")
    show.add_argument("--out", required=True, help="PNG file")
    show.add_argument("--max-rows", type=int, default=16)
    show.set_defaults(func=cmd_show)

    push = commands.add_parser(
        "push", help="push a defect embedding (model repo) or a bank (dataset repo) to the Hub"
    )
    push.add_argument("path")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true", default=None)
    push.add_argument("--token", help="Hub token (default: the logged-in one)")
    push.set_defaults(func=cmd_push)

    convert = commands.add_parser("convert-official", help="convert an AnoGen authors' embeddings.pt")
    convert.add_argument("path")
    convert.add_argument("--out", required=True)
    convert.add_argument(
        "--trust-pickle", action="store_true", help="allow unpickling (the file can run code)"
    )
    convert.add_argument("--placeholder-token", help="the token's name, default <category-defect>")
    convert.add_argument("--category")
    convert.add_argument("--defect-type")
    convert.set_defaults(func=cmd_convert_official)

    train = commands.add_parser("train", help="train a weakly supervised detector (anomalib) with a bank")
    train.add_argument("--data", required=True, help="MVTec-layout root containing CATEGORY/")
    train.add_argument("--category", required=True)
    train.add_argument("--bank", required=True)
    train.add_argument("--model", choices=["draem", "destseg"], default="draem")
    train.add_argument("--tau", type=float, default=0.9)
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--image-size", type=int, default=256)
    train.add_argument("--batch-size", type=int, help="default: 16 for draem, 32 for destseg (the papers')")
    train.add_argument(
        "--p", type=float, help="share of bank samples in the train set (default 0.5 draem, 1.0 destseg)"
    )
    train.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DeSTSeg teacher with ImageNet weights from the local torch cache",
    )
    train.add_argument(
        "--dtd-dir", help="DTD textures folder for Perlin anomalies (default: pure Perlin, never downloaded)"
    )
    train.add_argument(
        "--de-st-steps", type=int, help="DeSTSeg: steps that train the denoising student first"
    )
    train.add_argument("--max-steps", type=int)
    train.add_argument("--limit-train-batches", type=int)
    train.add_argument("--accelerator", default="auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="anogen-train")
    train.set_defaults(func=cmd_train)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline offline on a tiny backbone (a few minutes on CPU)"
    )
    demo.add_argument("--out", default="anogen-demo")
    demo.add_argument(
        "--data", help="an MVTec-layout category folder to use instead of the built-in sample images"
    )
    demo.add_argument("--steps", type=int, default=30, help="stage-1 steps")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a tiny weakly supervised DRAEM",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        PermissionError,
        ImportError,
        OSError,
        KeyError,
    ) as error:
        if args.verbose:
            logger.exception("failed")
        print(f"anogen-aug {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"anogen-aug {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
