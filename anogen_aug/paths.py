"""Paths read from files (a bank's manifest, a checkpoint's metadata): resolved inside their folder, or refused.

A file the library reads may have been written by someone else (a bank downloaded or shared, a crafted one), so
every path it names is checked before a byte is read or written through it. The rule, one for the whole library:

1. The path is a non-empty string, relative, in POSIX form (``/`` separators, no ``\\``), already normalised:
   no ``..``, no ``.`` and no empty component, no drive or root (``/etc/x.png``, ``C:x.png`` and ``//host/x``
   are refused).
2. Symlinks are followed: ``root / path`` is resolved (every link on the way, the last one included) and must
   end inside ``root`` (itself resolved). A link that stays inside the folder is accepted; a link that points
   out of it, or a loop, is refused. Hard links are files like any other (`merge_banks` makes them).

Refusals raise ``ValueError`` naming what held the path (the file, the record, the field) and the value.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PureWindowsPath


def path_problem(value: object) -> str | None:
    """Why ``value`` is not a safe relative path (rule 1 of the module docstring), or None when it is one.

    A lexical check only: it reads nothing from disk (`resolve_inside` adds the symlink rule).
    """
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, got {value!r}"
    if "\\" in value or "\0" in value or PureWindowsPath(value).drive:
        return f"must be a relative POSIX path (no backslash, drive or NUL), got {value!r}"
    if value.startswith("/"):
        return f"must be a relative path, got the absolute path {value!r}"
    parts = value.split("/")
    if ".." in parts:
        return f"must stay inside its folder (no '..'), got {value!r}"
    if posixpath.normpath(value) != value or "" in parts or "." in parts:
        return f"must be a normalised relative path (no '.', '//' or trailing '/'), got {value!r}"
    return None


def resolve_inside(root: str | os.PathLike, value: object, *, name: str) -> Path:
    """``root / value`` resolved (symlinks followed), after checking that it stays inside ``root``.

    Args:
        root: The folder the path is relative to (a bank, a checkpoint folder).
        value: The path as read from the file.
        name: What held it, for the error: e.g. ``"bank/manifest.jsonl: record 'x', field 'image'"``.

    Returns:
        The resolved path (it need not exist).

    Raises:
        ValueError: ``value`` is not a normalised relative path, or it (or a symlink on its way) leads out of
            ``root``.
    """
    problem = path_problem(value)
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    base = Path(root).resolve()
    try:
        target = (base / value).resolve(strict=False)
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise ValueError(f"{name}: cannot resolve {value!r} inside {base}: {error}") from None
    if not target.is_relative_to(base):
        raise ValueError(
            f"{name} leads out of its folder {base} through a symlink: {value!r} -> {target}; "
            "symlinks are followed only when they stay inside the folder"
        )
    return target
