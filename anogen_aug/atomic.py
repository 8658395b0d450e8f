"""Crash-safe files: whatever is written appears whole under its final name, or not at all.

Every file the library writes goes through here: a temporary name in the same folder, flushed and fsynced, then
renamed over the final name (``os.replace`` is atomic on one file system). A crash leaves at worst a hidden
``.<name>.<random>.tmp`` file, never a half-written file that looks whole. Files get the mode the process umask
gives (``mkstemp`` alone would make them private, 0600).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import; os.umask has no read-only form


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``write(stream)`` fills a temp file in the same folder, then it is renamed.

    Args:
        path: The final file; its folder is created.
        write: Called once with a binary stream open for writing.

    Returns:
        ``path`` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, 0o666 & ~_UMASK)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (temp name, fsync, rename)."""
    return write_atomic(path, lambda stream: stream.write(data))


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (temp name, fsync, rename)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames inside ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a fully written folder ``staging`` to ``final``, replacing any folder there.

    An existing ``final`` is first moved aside (``.<name>.old``) and removed only after the swap, so a crash at
    any point leaves a whole folder under ``final`` or under the aside name, never a half-written one.
    """
    staging, final = Path(staging), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    return final
