"""Argument checks (`anogen_aug.checks`): one rule each, errors that name the argument and show the value."""

from __future__ import annotations

import math

import pytest

from anogen_aug.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_probability,
    check_range,
    check_str,
)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_check_int_refuses_non_counts(value):
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1, got"):
        check_int(value, "steps")


def test_check_int_bounds():
    assert check_int(3, "n", low=0, high=3) == 3
    with pytest.raises(ValueError, match=r"in \[0, 3\]"):
        check_int(4, "n", low=0, high=3)


@pytest.mark.parametrize("value", [math.nan, math.inf, True, "0.5", -0.1, 1.1])
def test_check_probability(value):
    with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\]"):
        check_probability(value, "p")
    assert check_probability(1, "p") == 1.0


def test_check_number_open_bounds():
    assert check_number(0.5, "tau", low=0, high=1, low_open=True) == 0.5
    with pytest.raises(ValueError, match=r"`tau` must be in \(0, 1\]"):
        check_number(0, "tau", low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match=">= 1"):
        check_number(0.5, "context", low=1)


def test_check_range():
    assert check_range((0.1, 0.2), "width_range", low=0, high=1) == (0.1, 0.2)
    for bad in [(0.3, 0.2), (0.1,), "ab", (0.1, math.nan), (0.1, 1.5)]:
        with pytest.raises(ValueError, match="`width_range` must be a pair"):
            check_range(bad, "width_range", low=0, high=1)


def test_check_bool_choice_str():
    assert check_bool(False, "flag") is False
    with pytest.raises(ValueError, match="True or False"):
        check_bool(1, "flag")
    assert check_choice("mask", "normalizer", ("latent", "mask")) == "mask"
    with pytest.raises(ValueError, match="'latent' or 'mask', got 'area'"):
        check_choice("area", "normalizer", ("latent", "mask"))
    with pytest.raises(ValueError, match="non-empty string"):
        check_str("  ", "init_word")
