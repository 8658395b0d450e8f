"""Mixed precision: the bf16 autocast scope both stages use, and whether this CPU runs bf16 natively."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "bf16")


def autocast(device: torch.device, mixed_precision: str) -> torch.autocast:
    """``torch.autocast`` to bfloat16 on ``device``'s type for ``"bf16"``; a disabled one for ``"no"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 / AMX); elsewhere oneDNN emulates it, slowly."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def warn_if_slow_bf16(device: torch.device, mixed_precision: str) -> None:
    """Warn when ``"bf16"`` is asked for on a CPU that emulates it."""
    if mixed_precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "mixed_precision='bf16' on a CPU without AVX512-BF16/AMX is emulated and 5-10x slower than float32 "
            "(measured in benchmarks/); use mixed_precision='no'"
        )
