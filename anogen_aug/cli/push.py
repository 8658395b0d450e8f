"""``anogen-aug push``: a defect embedding (model repo) or a bank (dataset repo) to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "push", help="push a defect embedding (model repo) or a bank (dataset repo) to the Hub"
    )
    parser.add_argument(
        "path",
        help="an embedding folder (holding learned_embeds.safetensors) or a bank folder (holding manifest.jsonl)",
    )
    parser.add_argument("repo_id", help="the Hub repo to create or update, e.g. me/tile-crack")
    parser.add_argument(
        "--private",
        action="store_true",
        default=None,
        help="create the repo private (default: off; an existing repo keeps its visibility)",
    )
    parser.add_argument(
        "--token", help="Hub access token (default: the one saved by `hf auth login`, or $HF_TOKEN)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "manifest.jsonl").is_file():
        from ..bank import AnomalyBank

        AnomalyBank.open(path).push_to_hub(args.repo_id, private=args.private, token=args.token)
    elif (path / "learned_embeds.safetensors").is_file():
        from ..embedding import DefectEmbedding

        embedding = DefectEmbedding.from_pretrained(path)
        embedding.push_to_hub(args.repo_id, private=args.private, token=args.token)
    else:
        raise FileNotFoundError(f"{path} is neither a defect embedding folder nor an anomaly bank")
    print(f"pushed {path} to {args.repo_id}")
    return 0
