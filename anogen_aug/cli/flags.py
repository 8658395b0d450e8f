"""Flags from config dataclasses, and the flags several commands share.

Configuration flags map one to one onto the fields of the library's frozen config dataclasses
(``--max-train-steps`` is ``InversionConfig.max_train_steps``). Each flag's help line is the field's line in the
class docstring's ``Attributes:`` section, followed by its default, so the text lives in one place. Errors the
library raises inside `flag_names` name these flags (``--max-train-steps``), not the Python parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Iterator


def _flag_type(hint):
    """(argparse type, nargs) for a dataclass field's type hint; None when the field has no flag."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if set(options) == {int, float}:
            return _int_or_float, None
        return _flag_type(options[0]) if len(options) == 1 else (str, None)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (args[0] if args else float), "+"
    if origin is typing.Literal:
        return str, None
    if hint in (int, float, str, bool):
        return hint, None
    return None


def _int_or_float(text: str) -> int | float:
    """A count (``10``) or a fraction (``0.5``), for fields typed ``int | float``."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def field_docs(config_cls) -> dict[str, str]:
    """Each field's text from the ``Attributes:`` section of a Google-style class docstring.

    A line ``name: text`` (or ``a, b: text``) starts an entry; more-indented lines continue it.
    """
    doc = inspect.getdoc(config_cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        entry = re.match(r"^    ([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            for name in names:
                docs[name] = entry.group(2).strip()
        elif line.startswith("        ") and names:
            for name in names:
                docs[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break  # the next section
    return docs


def add_config_flags(parser: argparse.ArgumentParser, config_cls, *, title: str, skip=()) -> None:
    """Add one flag per field of a frozen config dataclass; every flag defaults to the dataclass default."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name in skip or field.name.startswith("_"):
            continue
        spec = _flag_type(hints[field.name])
        if spec is None:
            continue
        kind, nargs = spec
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        text = _help_text(docs.get(field.name, ""), _shown_default(flag, default))
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            metavar = field.name.upper()
            group.add_argument(flag, type=kind, nargs=nargs, default=None, metavar=metavar, help=text)


def _shown_default(flag: str, default) -> str:
    """A default as it is typed on the command line: ``--scale-lr`` / ``--no-scale-lr``, ``0.7 1.3``, ``""``."""
    if isinstance(default, bool):
        return flag if default else "--no-" + flag[2:]
    if isinstance(default, tuple):
        return " ".join(str(item) for item in default)
    return '""' if default == "" else str(default)


def _help_text(doc: str, default: str) -> str:
    """A field's docstring text as a help line (reST double-backtick literals unwrapped, ``%`` escaped), then its
    default."""
    doc = re.sub(r"``(.+?)``", r"\1", doc)
    return f"{doc} (default: {default})".strip().replace("%", "%%")


def config_from_args(config_cls, args: argparse.Namespace):
    """Build a config from the flags that were given; the rest keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return config_cls(**given)


def add_backbone_flags(parser: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--revision``, ``--device``, ``--dtype``: where the frozen LDM comes from and runs."""
    parser.add_argument(
        "--backbone",
        help="Hub repo id or local diffusers pipeline folder of the frozen latent diffusion model (default: "
        "CompVis/ldm-text2im-large-256; when generating, the embedding's own backbone); offline, a Hub id "
        "loads only when it is in the Hugging Face cache",
    )
    parser.add_argument(
        "--revision", help="Hub revision of --backbone: a branch, tag or commit (default: main)"
    )
    parser.add_argument(
        "--device",
        help="torch device to run on, e.g. cpu, cuda, cuda:1, mps (default: cpu; under accelerate launch or "
        "torchrun, each process's own device)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the backbone's weights: float32, bfloat16 or float16 (default: float32; "
        "half precision is for GPUs)",
    )


def load_backbone_from_args(args: argparse.Namespace, fallback: str | None = None):
    """The backbone the ``add_backbone_flags`` flags name (``fallback``: the embedding's own backbone)."""
    import torch

    from ..backbone import DEFAULT_BACKBONE, load_backbone

    dtype = None
    if getattr(args, "dtype", None):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = args.device
    if device is None and "WORLD_SIZE" in os.environ:  # a rank of `accelerate launch` / torchrun: its device
        from ..distributed import process_state

        device = process_state().device
    return load_backbone(
        args.backbone or fallback or DEFAULT_BACKBONE, revision=args.revision, dtype=dtype, device=device
    )


def seeded(seed: int):
    """A CPU ``torch.Generator`` seeded with ``--seed``."""
    import torch

    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def flag_names(args: argparse.Namespace, **renames: str) -> Iterator[None]:
    """Within the block, an error naming a Python parameter (support_masks) names its flag (--support-masks).

    A backticked parameter named like one of the command's options (a key of ``args``; for commands without
    positional arguments) becomes that flag (``--support-masks``, ``--masks[1]``); ``renames`` maps parameters
    whose flag has another name (``output_dir="--out"``). The error keeps its type; its message is rewritten.
    """
    names = {name: "--" + name.replace("_", "-") for name in vars(args)}
    names.update(renames)

    def flag(match: re.Match) -> str:
        name, index = match.group(1), match.group(2) or ""
        return names[name] + index if name in names else match.group(0)

    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        if len(error.args) == 1 and isinstance(error.args[0], str):
            error.args = (re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)(\[\d+\])?`", flag, error.args[0]),)
        raise
