"""The ``anogen-aug`` command: learn, generate, learn-all, generate-all, show, verify, push, convert-official, train, demo.

One module per command (``add_parser`` registers its flags, ``run`` does the work); configuration flags are
generated from the config dataclasses (`flags`). Errors are one line on stderr and a non-zero exit code;
``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys

from safetensors import SafetensorError

from ..images import MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV
from . import convert, demo, generate, generate_all, learn, learn_all, push, show, train, verify
from .flags import add_config_flags, config_from_args

__all__ = ["EXIT_USAGE", "add_config_flags", "build_parser", "config_from_args", "main"]

logger = logging.getLogger("anogen_aug")

EXIT_USAGE = 2
_COMMANDS = (learn, generate, learn_all, generate_all, show, verify, push, convert, train, demo)
#: What bad input raises (JSON, Hub, safetensors and unpickling errors included); anything else is a bug and
#: keeps its traceback.
_INPUT_ERRORS = (
    ValueError,
    TypeError,
    OSError,
    ImportError,
    KeyError,
    SafetensorError,
    pickle.UnpicklingError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anogen-aug", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details and tracebacks")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help=f"refuse image files of more than N pixels (default {MAX_IMAGE_PIXELS}, or ${MAX_IMAGE_PIXELS_ENV}; "
        "0: no limit)",
    )
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
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        parser.error(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    budget = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if args.max_image_pixels is not None:  # the library reads the budget from the environment at every load
        os.environ[MAX_IMAGE_PIXELS_ENV] = str(args.max_image_pixels)
    try:
        return args.func(args)
    except _INPUT_ERRORS as error:
        if args.verbose:
            logger.exception("failed")
        print(f"anogen-aug {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"anogen-aug {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if args.max_image_pixels is not None and budget is None:  # an in-process main() leaves the
            os.environ.pop(MAX_IMAGE_PIXELS_ENV, None)  # environment as it found it
        elif args.max_image_pixels is not None:
            os.environ[MAX_IMAGE_PIXELS_ENV] = budget


def _one_line(error: BaseException) -> str:
    """The error's message on one line; a bare ``KeyError('boxes')`` says which key is missing."""
    if isinstance(error, KeyError) and len(error.args) == 1 and " " not in str(error.args[0]):
        return f"missing key {error.args[0]!r}"
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text or type(error).__name__
