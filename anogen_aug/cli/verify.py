"""``anogen-aug verify``: check every record of a bank against its files; ``--repair`` drops what is broken."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "verify", help="check a bank's records and files (exists, decodes, sizes, hashes, paths stay inside)"
    )
    parser.add_argument("bank", help="bank folder")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="drop broken records and remove orphan files; good records and their files are kept "
        "(default: only report)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0 when the bank is whole (or was repaired), 1 when something is broken."""
    from ..bank import verify_bank

    report = verify_bank(args.bank, repair=args.repair)
    print(report)
    return 0 if report.ok or report.repaired else 1
