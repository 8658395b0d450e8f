"""FLOP counting (attention included, also on ``meta`` tensors) and the measured matmul peak of this machine."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from .timing import timed


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
