"""bf16 on the CPU: whether it is native here, and the autocast scope the benchmarks time."""

from __future__ import annotations

import contextlib

import torch


def native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX); without them bf16 is emulated, slowly."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(dtype: str):
    """``torch.autocast`` on CPU for ``"bf16"``, a no-op for ``"fp32"``."""
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if dtype == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"`dtype` must be 'fp32' or 'bf16', got {dtype!r}")
