"""Where a step's CPU time goes: `torch.profiler` tables by operator and by region of the step.

A region is the module whose forward ran an operator (named by the caller: ``{"unet": unet, ...}``), the
autograd backward, the optimiser, or, for everything else, ``"other"``: the step's own bookkeeping (drawing the
batch, tokenising, the hook, the loss). Times are self CPU times summed over the profiled calls, so each
microsecond is counted once.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

_PREFIX = "region: "


@contextlib.contextmanager
def module_regions(modules: dict[str, torch.nn.Module | tuple[torch.nn.Module, ...]]):
    """While active, each forward of ``modules[name]`` (a module or a tuple of them) runs inside a profiler
    range ``"region: <name>"``."""
    handles, open_ranges = [], []

    def enter(name):
        def hook(module, args):
            scope = record_function(_PREFIX + name)
            scope.__enter__()
            open_ranges.append(scope)

        return hook

    def leave(module, args, output):
        open_ranges.pop().__exit__(None, None, None)

    for name, group in modules.items():
        for module in group if isinstance(group, tuple) else (group,):
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _region(event) -> str:
    """The region an operator event belongs to: its innermost named module, else backward / optimiser / other."""
    node, outer = event, "other"
    while node is not None:
        name = node.name
        if name.startswith(_PREFIX):
            return name[len(_PREFIX) :] + " forward"
        if name.startswith("autograd::engine::evaluate_function"):
            outer = "backward (autograd)"
        elif name.startswith("Optimizer.") and outer == "other":
            outer = "optimizer"
        node = node.cpu_parent
    return outer


def profile_calls(
    fn: Callable[[], object], *, calls: int, modules: dict[str, torch.nn.Module], top: int = 15
) -> dict:
    """Profile ``calls`` calls of ``fn`` (after one untimed warm-up call): self CPU time per operator and per region.

    Returns:
        ``{"calls", "total_ms_per_call", "by_op": [{"name", "ms_per_call", "share", "count_per_call"}, ...],
        "by_region": {region: {"ms_per_call", "share"}}}``, both sorted by time.
    """
    fn()
    with module_regions(modules), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = [e for e in prof.events() if not e.name.startswith(_PREFIX)]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    by_region: dict[str, float] = defaultdict(float)
    for event in events:
        by_region[_region(event)] += event.self_cpu_time_total
    ops = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)
    return {
        "calls": calls,
        "total_ms_per_call": total / calls / 1e3,
        "by_op": [
            {
                "name": a.key,
                "ms_per_call": a.self_cpu_time_total / calls / 1e3,
                "share": a.self_cpu_time_total / total,
                "count_per_call": a.count / calls,
            }
            for a in ops
            if not a.key.startswith(_PREFIX)
        ][:top],
        "by_region": {
            name: {"ms_per_call": us / calls / 1e3, "share": us / total}
            for name, us in sorted(by_region.items(), key=lambda kv: kv[1], reverse=True)
        },
    }


def fmt_profile(name: str, table: dict, *, rows: int = 10) -> str:
    """Printable lines: the regions, then the top operators."""
    lines = [f"{name}: {table['total_ms_per_call']:.1f} ms self CPU per call ({table['calls']} calls)"]
    for region, row in table["by_region"].items():
        lines.append(f"    region {region:<28} {row['ms_per_call']:9.1f} ms  {row['share']:6.1%}")
    for row in table["by_op"][:rows]:
        lines.append(
            f"    op     {row['name'][:48]:<48} {row['ms_per_call']:9.1f} ms  {row['share']:6.1%}"
            f"  x{row['count_per_call']:.0f}"
        )
    return "\n".join(lines)
