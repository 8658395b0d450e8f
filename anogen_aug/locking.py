"""One writer at a time: an exclusive lock on a folder being written (a bank, a ``learn`` output folder).

The lock is an OS lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on the file ``.anogen-aug.lock`` inside
the folder, which holds the holder's pid and host. The kernel drops the lock when its holder exits, however it
exits (``kill -9`` included), so a stale lock file never blocks the next run: only a live holder does. A second
writer does not wait: it fails at once with `FolderLockedError`, naming the folder and the holder's pid.

The lock is re-entrant within a thread (`merge_banks` inside `write_bank_sharded`, `write_bank` inside a locked
folder); another thread of the same process is a second writer. The lock file is removed on release.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from pathlib import Path

LOCK_FILE = ".anogen-aug.lock"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle: int) -> bool:
        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle: int) -> None:
        os.lseek(handle, 0, os.SEEK_SET)
        msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(handle: int) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)


class FolderLockedError(OSError):
    """Another live process is writing the folder. Attributes: ``folder``, ``pid`` (None if unknown)."""

    def __init__(self, folder: Path, pid: int | None, holder: str) -> None:
        super().__init__(
            f"{folder} is being written by another process ({holder}); wait for it to finish or stop it "
            "(the lock is released when that process exits, even when it is killed)"
        )
        self.folder, self.pid = folder, pid


_held: dict[
    tuple[Path, int], list[int]
] = {}  # (folder, thread) -> [descriptor, depth]: re-entrant per thread
_guard = threading.Lock()


class FolderLock:
    """``with FolderLock(folder):`` holds the folder's exclusive write lock (the folder is created).

    Args:
        folder: The folder to write.
        what: What the folder is, for the error message (``"bank"``, ``"learn output folder"``).

    Raises:
        FolderLockedError: Another live process holds the lock (an ``OSError``).
    """

    def __init__(self, folder: str | os.PathLike, *, what: str = "folder") -> None:
        self.folder, self.what = Path(folder), what

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self._key = (self.folder.resolve(), threading.get_ident())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                return self
            _held[key] = [_acquire(key[0], self.what), 1]
        return self

    def __exit__(self, *exc) -> None:
        key = self._key
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(key[0], entry[0])


def _acquire(folder: Path, what: str) -> int:
    """Lock ``folder/LOCK_FILE`` and write this process's pid into it; return the open descriptor."""
    path = folder / LOCK_FILE
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(handle):
            try:
                holder = os.read(handle, 200).decode("utf-8", "replace").strip()
            except OSError:  # Windows: the holder's locked byte cannot be read
                holder = ""
            os.close(handle)
            raise FolderLockedError(
                folder, _pid(holder), f"{what} lock held by {holder or 'an unknown process'}"
            )
        try:  # a holder that just released may have removed the file we opened: lock the current one
            same = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        _unlock(handle)
        os.close(handle)
    os.ftruncate(handle, 0)
    os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return handle


def _release(folder: Path, handle: int) -> None:
    """Remove the lock file, then drop the lock (in this order, so no one locks a removed file and holds it)."""
    with contextlib.suppress(OSError):  # Windows cannot remove an open file: it stays, unlocked, harmless
        (folder / LOCK_FILE).unlink(missing_ok=True)
    _unlock(handle)
    os.close(handle)


def _pid(holder: str) -> int | None:
    words = holder.split()
    return int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None
