"""Shared benchmark plumbing: timing (warm-up, interleaved repeats), FLOP counting, matmul peak, peak RSS,
and result JSON carrying package versions, the git commit and the machine.

Every speed figure of the benchmarks is a ratio against a reference doing the same work in the same process,
measured with interleaved repeats (A B A B ...), so a machine shared with other jobs slows both sides alike.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_PACKAGES = ("anogen-aug", "torch", "torchvision", "diffusers", "transformers", "anomalib", "numpy", "psutil")


# --- environment -------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name as `lscpu` prints it (falls back to `platform.processor()`)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX); without them bf16 is emulated, slowly."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def git_commit() -> dict:
    """The checked-out commit and whether the tree has uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def source_digest() -> str:
    """SHA-256 (16 hex) of the library's and benchmarks' Python sources, so uncommitted code is identified too."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("anogen_aug/*.py"), *ROOT.glob("benchmarks/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment() -> dict:
    """Package versions, git commit and machine description stored with every result."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "packages": versions,
        "python": platform.python_version(),
        "git": {**git_commit(), "source_sha256": source_digest()},
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "accelerator": "cuda" if torch.cuda.is_available() else "none",
            "native_bf16": native_bf16(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(path: str | os.PathLike, result: dict) -> Path:
    """Write ``result`` plus the environment as JSON, atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**result, "environment": environment()}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(payload, tmp, indent=2, sort_keys=False, default=float)
        tmp.write("\n")
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    return path


# --- timing ------------------------------------------------------------------------------------------------


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


# --- FLOPs -------------------------------------------------------------------------------------------------


def _attention_math(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """`F.scaled_dot_product_attention` written as two matmuls (no dropout), so FlopCounterMode sees them."""
    if dropout_p:
        raise ValueError("FLOP counting runs in eval mode: dropout_p must be 0")
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scores = query @ key.transpose(-2, -1) * scale  # (..., Lq, Lk)
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return scores.softmax(-1) @ value  # (..., Lq, Dv)


class ExplicitAttention(TorchFunctionMode):
    """Routes `F.scaled_dot_product_attention` through explicit matmuls while active.

    CPU SDPA kernels (``_scaled_dot_product_flash_attention_for_cpu``) have no FLOP formula in
    `torch.utils.flop_counter`, so attention would count as zero; as two matmuls it is counted forward and
    backward. ``attention_flops`` tallies the forward formula ``2 * B * H * Lq * Lk * (Dqk + Dv)`` for reporting.
    """

    def __init__(self):
        super().__init__()
        self.attention_flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, key, value = args[:3]
            batch = math.prod(query.shape[:-2])
            self.attention_flops += (
                2 * batch * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])
            )
            return _attention_math(*args, **kwargs)
        return func(*args, **kwargs)


def count_flops(fn: Callable[[], object]) -> dict:
    """FLOPs of one call of ``fn`` (forward and any backward it runs), attention included explicitly.

    Returns:
        ``{"total": int, "attention_forward": int, "by_op": {op: flops}}``; works on ``meta`` tensors too.
    """
    counter = FlopCounterMode(display=False)
    attention = ExplicitAttention()
    with counter, attention:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {
        "total": int(counter.get_total_flops()),
        "attention_forward": attention.attention_flops,
        "by_op": by_op,
    }


def matmul_peak(*, size: int = 2048, repeats: int = 3, budget_s: float = 5.0) -> dict:
    """Measured GFLOP/s of a ``size x size`` matrix multiply in float32 and bfloat16 (best and median).

    A CPU without native bf16 (no AVX512-BF16/AMX) multiplies bf16 matrices ~50x slower than fp32; there the
    size is halved until one product is estimated (from a 256 x 256 probe) to take under ``budget_s / repeats``.
    """
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        probe = torch.randn(256, 256, dtype=dtype)
        probe @ probe
        probe_s = min(timed(lambda p=probe: p @ p) for _ in range(3))
        n = size
        while n > 256 and probe_s * (n / 256) ** 3 > budget_s / repeats:
            n //= 2
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        times = [timed(lambda a=a, b=b: a @ b) for _ in range(repeats)]
        flops = 2 * n**3
        out[str(dtype).removeprefix("torch.")] = {
            "size": n,
            "best_gflops": flops / min(times) / 1e9,
            "median_gflops": flops / statistics.median(times) / 1e9,
        }
    return out


# --- precision and memory ----------------------------------------------------------------------------------


def autocast(dtype: str):
    """``torch.autocast`` on CPU for ``"bf16"``, a no-op for ``"fp32"``."""
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if dtype == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"`dtype` must be 'fp32' or 'bf16', got {dtype!r}")


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


def run_child(script: str | os.PathLike, args: list[str], *, timeout: float = 900) -> dict:
    """Run ``python script *args`` in a fresh process and parse the JSON object on its last stdout line.

    Used for peak-RSS measurements, so each figure starts from an empty process.
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {script} {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [0, 1] (``inf`` when identical)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def fmt_ratio(name: str, summary: dict, target: str | None = None, labels=("reference", "ours")) -> str:
    """One printable line: name, median ratio, its range and the two median times (``labels`` name them)."""
    slow, fast = summary["median_s"]
    text = (
        f"{name}: {summary['median_ratio']:.2f}x (range {summary['min_ratio']:.2f}-{summary['max_ratio']:.2f}; "
        f"median {labels[0]} {slow * 1e3:.1f} ms, {labels[1]} {fast * 1e3:.1f} ms)"
    )
    return text + (f"  [target {target}]" if target else "")


# --- synthetic inputs (the speed benchmarks need shapes and plausible statistics, not real pictures) ---------


def synthetic_normal(size: int, *, generator: torch.Generator) -> torch.Tensor:
    """A smooth textured "normal" image ``(3, size, size)`` in [0, 1]: low-frequency noise plus fine grain."""
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    image = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    image = 0.35 + 0.3 * image + 0.05 * torch.rand(3, size, size, generator=generator)
    return image.clamp(0, 1)


def synthetic_defect(size: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A normal image with a dark elliptic blotch: ``image (3, size, size)`` in [0, 1], ``mask (1, size, size)``."""
    image = synthetic_normal(size, generator=generator)
    cy, cx, ry, rx = (
        torch.rand(4, generator=generator) * torch.tensor([0.5, 0.5, 0.15, 0.15]) + 0.25
    ).tolist()
    cy, cx = cy * size, cx * size
    ry, rx = max(ry * size / 2, 2), max(rx * size / 2, 2)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1).float()[None]  # (1, size, size)
    return (image * (1 - 0.7 * mask)).clamp(0, 1), mask


def set_threads(threads: int) -> None:
    """Fix the intra-op thread count (recorded in the result's environment)."""
    if threads < 1:
        raise ValueError(f"`--threads` must be >= 1, got {threads}")
    torch.set_num_threads(threads)
