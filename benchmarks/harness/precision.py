"""bf16 on the CPU: whether it is native here, and the autocast scope the benchmarks time."""

from __future__ import annotations

import contextlib
import os

import torch

#: What a bf16 speed figure reads on a machine that emulates bf16: a number there would only time the emulation.
NOT_MEASURABLE = "not measurable here"


def native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX); without them bf16 is emulated, slowly.

    ``ANOGEN_BENCH_NATIVE_BF16=0`` makes it False (to run the "not measurable here" path on any machine).
    """
    if os.environ.get("ANOGEN_BENCH_NATIVE_BF16") == "0":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_figure(value, native: bool):
    """``value`` (a bf16 speed figure) where bf16 is native, else `NOT_MEASURABLE`."""
    return value if native else NOT_MEASURABLE


def autocast(dtype: str):
    """``torch.autocast`` on CPU for ``"bf16"``, a no-op for ``"fp32"``."""
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if dtype == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"`dtype` must be 'fp32' or 'bf16', got {dtype!r}")
