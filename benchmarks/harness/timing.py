"""Timing: one call, interleaved repeats (A B A B ...) after a warm-up, and the median of per-pair ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(runs: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1) -> dict[str, list]:
    """Time several callables in turn (A B A B ...), after ``warmup`` untimed rounds.

    Returns:
        ``name -> [seconds per repeat]``, in the order they ran.
    """
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return times


def ratio_summary(slow: list[float], fast: list[float]) -> dict:
    """Median of the per-repeat ratios ``slow[i] / fast[i]`` (the headline figure) and the medians themselves."""
    ratios = [a / b for a, b in zip(slow, fast, strict=True)]
    return {
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "ratios": ratios,
        "median_s": [statistics.median(slow), statistics.median(fast)],
    }


def fmt_ratio(name: str, summary: dict, target: str | None = None, labels=("reference", "ours")) -> str:
    """One printable line: name, median ratio, its range and the two median times (``labels`` name them)."""
    slow, fast = summary["median_s"]
    text = (
        f"{name}: {summary['median_ratio']:.2f}x (range {summary['min_ratio']:.2f}-{summary['max_ratio']:.2f}; "
        f"median {labels[0]} {slow * 1e3:.1f} ms, {labels[1]} {fast * 1e3:.1f} ms)"
    )
    return text + (f"  [target {target}]" if target else "")


def set_threads(threads: int) -> None:
    """Fix the intra-op thread count (recorded in the result's environment)."""
    if threads < 1:
        raise ValueError(f"`--threads` must be >= 1, got {threads}")
    torch.set_num_threads(threads)
