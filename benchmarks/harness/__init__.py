"""What every benchmark shares: timing, FLOP counting, memory, precision, synthetic inputs, and the provenance
written with every result.

Every speed figure of the benchmarks is a ratio against a reference doing the same work in the same process,
measured with interleaved repeats (A B A B ...), so a machine shared with other jobs slows both sides alike.
"""

from .flops import ExplicitAttention, count_flops, matmul_peak
from .images import mask_iou, psnr, synthetic_defect, synthetic_normal
from .memory import current_rss_mib, peak_rss_mib, reset_peak_rss, run_child
from .precision import NOT_MEASURABLE, autocast, bf16_figure, native_bf16
from .profile import fmt_profile, profile_calls
from .provenance import RESULTS, ROOT, environment, write_result
from .timing import fmt_ratio, interleaved, ratio_summary, set_threads, timed

__all__ = [
    "NOT_MEASURABLE",
    "RESULTS",
    "ROOT",
    "ExplicitAttention",
    "autocast",
    "bf16_figure",
    "count_flops",
    "current_rss_mib",
    "environment",
    "fmt_profile",
    "fmt_ratio",
    "interleaved",
    "mask_iou",
    "matmul_peak",
    "native_bf16",
    "peak_rss_mib",
    "profile_calls",
    "psnr",
    "ratio_summary",
    "reset_peak_rss",
    "run_child",
    "set_threads",
    "synthetic_defect",
    "synthetic_normal",
    "timed",
    "write_result",
]
