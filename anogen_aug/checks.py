"""Argument checks at the public boundary, one rule each, with the error text the whole library uses.

Every check returns the checked value (converted where it says so) or raises ``ValueError`` naming the argument,
what was expected and the value received: "`flip_p` must be in [0, 1], got 1.5". Booleans are never numbers here
(``True`` is not a count of 1), and NaN or infinity is never a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def is_int(value: Any, low: int | None = None) -> bool:
    """Whether ``value`` is an int (not a bool), at least ``low`` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(value: Any, name: str, *, low: int = 1, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (``high`` None: no upper bound)."""
    if not is_int(value, low) or (high is not None and value > high):
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite number within the bounds given (closed unless ``low_open`` / ``high_open``), as a float."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"`{name}` must be {_describe(low, high, low_open, high_open)}, got {value!r}")
    return float(value)


def check_probability(value: Any, name: str) -> float:
    """A probability in [0, 1], as a float."""
    return check_number(value, name, low=0.0, high=1.0)


def check_range(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> tuple[float, float]:
    """A pair ``(lo, hi)`` with ``lo <= hi``, both within the bounds given, as floats."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high), got {value!r}") from None
    bounds = _describe(low, high, low_open, False)
    for item in (lo, hi):
        try:
            check_number(item, name, low=low, high=high, low_open=low_open)
        except ValueError:
            raise ValueError(
                f"`{name}` must be a pair (low, high) of numbers {bounds}, got {value!r}"
            ) from None
    if lo > hi:
        raise ValueError(f"`{name}` must be a pair (low, high) with low <= high, got {value!r}")
    return float(lo), float(hi)


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` exactly (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = " or ".join(repr(c) for c in choices) if len(choices) <= 3 else f"one of {list(choices)}"
        raise ValueError(f"`{name}` must be {listed}, got {value!r}")
    return value


def check_str(value: Any, name: str, *, empty: bool = False) -> str:
    """A string (non-blank unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ValueError(f"`{name}` must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"
