"""The ``anogen-aug`` command: learn, generate, show, push, convert-official, train, demo.

One module per command (``add_parser`` registers its flags, ``run`` does the work); configuration flags are
generated from the config dataclasses (`flags`). Errors are one line on stderr and a non-zero exit code;
``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import convert, demo, generate, learn, push, show, train
from .flags import add_config_flags, config_from_args

__all__ = ["EXIT_USAGE", "add_config_flags", "build_parser", "config_from_args", "main"]

logger = logging.getLogger("anogen_aug")

EXIT_USAGE = 2
_COMMANDS = (learn, generate, show, push, convert, train, demo)
#: What bad input raises; anything else is a bug and keeps its traceback.
_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, ImportError, OSError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anogen-aug", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except _INPUT_ERRORS as error:
        if args.verbose:
            logger.exception("failed")
        print(f"anogen-aug {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"anogen-aug {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
