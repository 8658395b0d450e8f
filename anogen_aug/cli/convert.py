"""``anogen-aug convert-official``: an AnoGen authors' ``embeddings.pt`` as a Hub-ready embedding folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "convert-official",
        help="convert the AnoGen authors' embeddings.pt (one file, or a whole logs/ folder)",
    )
    parser.add_argument(
        "path", help="an embeddings.pt, or the authors' logs/ folder of <category>_<defect>/embeddings.pt"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="embedding folder to write; for logs/, one sub-folder per defect type (required)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also read files the allow-list refuses, by a full unpickle that can run code; the authors' files "
        "never need it (default: off)",
    )
    parser.add_argument(
        "--placeholder-token", help="the token's name in the files (default: <CATEGORY-DEFECT_TYPE>)"
    )
    parser.add_argument(
        "--category",
        help="the product category (default: parsed from the parent folder's name, e.g. bottle_broken_large)",
    )
    parser.add_argument(
        "--defect-type", help="the defect type (default: parsed from the parent folder's name)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..official import convert_official, convert_official_folder

    if Path(args.path).is_dir():
        report = convert_official_folder(args.path, args.out, trust_pickle=args.trust_pickle)
        print(report.summary())
        return 1 if report.failed else 0

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
