"""Peak and current resident memory of this process, and fresh child processes to measure one stage each."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from .provenance import ROOT


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Reads ``VmHWM`` (the high-water mark of this process's own memory map). Not ``ru_maxrss``: Linux carries
    that across ``fork`` + ``execve``, so a child started from a large process would report the parent's size.
    """
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``/proc/self/clear_refs``), so a later
    `peak_rss_mib` covers only what ran after; False where the kernel does not allow it."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def current_rss_mib() -> float:
    """Current resident set size of this process, in MiB."""
    current = _status_mib("VmRSS")
    return current if current is not None else float("nan")


def module_name(module: str | os.PathLike) -> str:
    """A module name as given (``"benchmarks.speed_stage1"``), or the name of a module file in the repository."""
    path = Path(module)
    if path.suffix != ".py":
        return str(module)
    parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    return ".".join(parts)


def run_child(module: str | os.PathLike, args: list[str], *, timeout: float = 900) -> dict:
    """Run ``python -m module *args`` from the repository root in a fresh process; parse the JSON object on its
    last stdout line.

    Used for peak-RSS measurements, so each figure starts from an empty process.

    Args:
        module: A module name (``"benchmarks.speed_stage1"``), or a module's file in the repository
            (``__file__``).
        args: Its command-line arguments.
        timeout: Seconds before the child is killed.
    """
    name = module_name(module)
    proc = subprocess.run(
        [sys.executable, "-m", name, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
