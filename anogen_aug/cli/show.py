"""``anogen-aug show``: a contact sheet of a bank (source | result with the box | mask), as a PNG."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser("show", help="draw a contact sheet of a bank")
    parser.add_argument("bank", help="bank folder")
    parser.add_argument("--png", help="the PNG file to write (required)")
    parser.add_argument(
        "--out", dest="png", help=argparse.SUPPRESS
    )  # the name before 0.1; a PNG, not a folder
    parser.add_argument("--max-rows", type=int, default=16, help="samples shown, one per row (default: 16)")
    parser.add_argument(
        "--sort",
        choices=("mask_area", "contrast"),
        help="show the least visible samples first: mask_area (pixels) or contrast (mean 8-bit change inside "
        "the mask) (default: spread evenly over the bank)",
    )
    parser.add_argument(
        "--min-area", type=int, default=0, help="show only masks of this many pixels or more (default: 0)"
    )
    parser.add_argument(
        "--min-contrast",
        type=float,
        default=0.0,
        help="show only samples changed by this many grey levels or more (default: 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.png:
        raise ValueError("--png is required: the contact sheet's PNG file")
    from ..bank import AnomalyBank
    from ..contact_sheet import bank_contact_sheet

    path = bank_contact_sheet(
        AnomalyBank.open(args.bank),
        out=args.png,
        max_rows=args.max_rows,
        sort=args.sort,
        min_area=args.min_area,
        min_contrast=args.min_contrast,
    )
    print(f"wrote {path}")
    return 0
