"""Properties that hold for every input (hypothesis): box sampling, box <-> mask, mask resizing, the tau mask and
the mask threshold of `load_mask`. Each is stated from the definitions in the docstrings, not from the code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from anogen_aug.boxes import BoxSampler, box_to_slices, boxes_to_mask, check_boxes, mask_to_box
from anogen_aug.images import load_mask
from anogen_aug.losses import weak_supervision_mask
from anogen_aug.masks import RULES, resize_mask

PROPERTY = settings(max_examples=60, deadline=None, database=None)
sides = st.integers(min_value=4, max_value=96)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


@st.composite
def fractions(draw):
    """A ``(lo, hi)`` pair of box-side fractions, ``0 < lo <= hi <= 1``."""
    lo = draw(st.floats(min_value=0.01, max_value=1.0))
    hi = draw(st.floats(min_value=lo, max_value=1.0))
    return lo, hi


@st.composite
def boxes_in(draw, height: int, width: int, max_boxes: int = 4):
    """``(N, 4)`` whole-pixel XYXY boxes inside a ``height`` x ``width`` image."""
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=max_boxes))):
        x0 = draw(st.integers(min_value=0, max_value=width - 1))
        y0 = draw(st.integers(min_value=0, max_value=height - 1))
        x1 = draw(st.integers(min_value=x0 + 1, max_value=width))
        y1 = draw(st.integers(min_value=y0 + 1, max_value=height))
        rows.append([x0, y0, x1, y1])
    return torch.tensor(rows, dtype=torch.float32)


@st.composite
def masks(draw, max_side: int = 24, min_side: int = 1):
    """A random {0, 1} float mask ``(1, H, W)``."""
    height = draw(st.integers(min_value=min_side, max_value=max_side))
    width = draw(st.integers(min_value=min_side, max_value=max_side))
    bits = draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    return torch.tensor(bits, dtype=torch.float32).reshape(1, height, width)


# --- box sampling -----------------------------------------------------------------------------------------
@PROPERTY
@given(sides, sides, fractions(), fractions(), st.integers(1, 4), st.booleans(), seeds)
def test_sampled_boxes_lie_inside_and_have_the_drawn_sizes(height, width, wr, hr, count, rotation, seed):
    sampler = BoxSampler(width_range=wr, height_range=hr, rotation=rotation)
    boxes = sampler.sample((height, width), count, generator=torch.Generator().manual_seed(seed))
    assert boxes.shape == (count, 4) and torch.equal(boxes, boxes.round()), "whole pixels"
    check_boxes(boxes, height, width)  # inside the image, at least 1 px wide and high
    again = sampler.sample((height, width), count, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(boxes, again), "same generator state, same boxes"
    if not rotation:  # sizes are whole pixels in [lo * side, hi * side] (the nearest size if that is empty)
        for x0, y0, x1, y1 in boxes.tolist():
            for size, side, (lo, hi) in [(x1 - x0, width, wr), (y1 - y0, height, hr)]:
                assert max(1, math.floor(lo * side) - 1) <= size <= min(side, math.ceil(hi * side) + 1)


@PROPERTY
@given(st.integers(16, 64), st.integers(16, 64), st.floats(0.5, 1.0), seeds, st.data())
def test_accepted_boxes_have_min_inside_of_their_pixels_in_the_region(height, width, min_inside, seed, data):
    (region_box,) = data.draw(boxes_in(height, width, max_boxes=1)).tolist()
    region = boxes_to_mask(torch.tensor([region_box]), height, width)
    sampler = BoxSampler(width_range=(0.1, 0.3), height_range=(0.1, 0.3), min_inside=min_inside, max_tries=64)
    try:
        boxes = sampler.sample(
            (height, width), 2, region=region, generator=torch.Generator().manual_seed(seed)
        )
    except ValueError as error:  # a region too small for the sizes is an error, never a silent fallback
        assert "BoxSampler: no box" in str(error)
        return
    for box in boxes:
        rows, cols = box_to_slices(box)
        inside = region[0, rows, cols]
        assert inside.mean().item() >= min_inside - 1e-9


# --- box <-> mask -----------------------------------------------------------------------------------------
@PROPERTY
@given(sides, sides, st.data())
def test_mask_of_boxes_is_their_union_and_its_box_their_bounds(height, width, data):
    boxes = data.draw(boxes_in(height, width))
    mask = boxes_to_mask(boxes, height, width)
    expected = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes.long().tolist():
        expected[y0:y1, x0:x1] = True
    assert mask.shape == (1, height, width) and torch.equal(mask[0].bool(), torch.from_numpy(expected))
    bounds = torch.tensor(
        [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()], dtype=torch.float32
    )
    assert torch.equal(mask_to_box(mask), bounds)


@PROPERTY
@given(sides, sides, st.data())
def test_fractional_boxes_round_outwards(height, width, data):
    x0 = data.draw(st.floats(0, width - 1.01))
    y0 = data.draw(st.floats(0, height - 1.01))
    x1 = data.draw(st.floats(x0 + 1, width))
    y1 = data.draw(st.floats(y0 + 1, height))
    box = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
    assume(float(box[2] - box[0]) >= 1 and float(box[3] - box[1]) >= 1 and float(box[2]) <= width)
    assume(float(box[3]) <= height)
    outward = [math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])]
    assert mask_to_box(boxes_to_mask(box[None], height, width)).tolist() == outward


# --- mask resizing ----------------------------------------------------------------------------------------
@PROPERTY
@given(masks(), st.integers(1, 40), st.integers(1, 40), st.sampled_from(RULES))
def test_every_rule_returns_a_binary_mask_of_the_size_asked(mask, height, width, rule):
    resized = resize_mask(mask, (height, width), rule=rule)
    assert resized.shape == (1, height, width)
    assert set(resized.float().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(resize_mask(mask, tuple(mask.shape[-2:]), rule=rule).float(), mask), (
        "same size: same mask"
    )
    if rule == "majority_nonempty":
        assert bool(resized.any()) == bool(mask.any()), "a defect never vanishes, none appears"


@PROPERTY
@given(masks(min_side=2), st.integers(2, 4), st.sampled_from(["majority", "majority_nonempty", "bicubic"]))
def test_an_integer_nearest_upscale_comes_back_exactly(mask, factor, rule):
    """(Masks 1 px wide: see `test_antialiased_rules_at_one_pixel_wide`.)"""
    height, width = mask.shape[-2:]
    up = resize_mask(mask, (height * factor, width * factor), rule="nearest")
    assert torch.equal(up, mask.repeat_interleave(factor, -2).repeat_interleave(factor, -1))
    assert torch.equal(resize_mask(up, (height, width), rule=rule).float(), mask)


@PROPERTY
@given(
    masks(),
    st.data(),
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from(["overlap", "majority", "nearest"]),
)
def test_linear_rules_are_monotone(mask, data, height, width, rule):
    more = mask.clone()  # a superset: some pixels added
    flat = more.view(-1)
    for index in data.draw(st.lists(st.integers(0, flat.numel() - 1), max_size=8)):
        flat[index] = 1.0
    small, large = (
        resize_mask(mask, (height, width), rule=rule),
        resize_mask(more, (height, width), rule=rule),
    )
    assert bool((small <= large).all()), "more defect pixels never give fewer after resizing"


@pytest.mark.parametrize("rule", ["majority_nonempty", "bicubic"])
def test_antialiased_rules_at_one_pixel_wide(rule):
    mask = torch.tensor([0.0, 0.0, 1.0, 1.0])[None, :, None]  # (1, 4, 1): the lower half
    assert resize_mask(mask, (2, 1), rule=rule).float().flatten().tolist() == [0.0, 1.0]


# --- the tau mask (AnoGen Sec. 3.3) -------------------------------------------------------------------------
@PROPERTY
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.floats(0.01, 1.0), seeds)
def test_tau_mask_drops_exactly_confident_normal_pixels_inside_boxes(batch, height, width, tau, seed):
    generator = torch.Generator().manual_seed(seed)
    prob = torch.rand(batch, 1, height, width, generator=generator)
    prob[torch.rand(prob.shape, generator=generator) < 0.2] = tau  # ties at tau are dropped (>=)
    box = (torch.rand(batch, 1, height, width, generator=generator) < 0.5).float()
    keep = weak_supervision_mask(prob, box, tau=tau)
    for index in np.ndindex(*prob.shape):
        dropped = box[index] == 1 and prob[index] >= tau
        assert keep[index] == (0.0 if dropped else 1.0)
    looser = weak_supervision_mask(prob, box, tau=min(1.0, tau + 0.05))
    assert bool((keep <= looser).all()), "a higher tau keeps at least the same pixels"


# --- load_mask's threshold ----------------------------------------------------------------------------------
@PROPERTY
@given(
    masks(),
    st.sampled_from([(1, np.uint8), (255, np.uint8), (65535, np.uint16), (1, bool), (0.5, np.float32)]),
)
def test_a_binary_mask_keeps_every_nonzero_pixel_whatever_its_value(mask, value_and_dtype):
    value, dtype = value_and_dtype
    array = (mask[0].numpy() * value).astype(dtype)
    assert torch.equal(load_mask(array), mask)


@PROPERTY
@given(st.lists(st.integers(0, 255), min_size=2, max_size=64))
def test_an_8bit_mask_of_several_values_is_cut_at_128(values):
    array = np.array(values, np.uint8)[None]
    assume(len(set(values) - {0}) > 1)
    assert torch.equal(load_mask(array)[0], torch.from_numpy(array >= 128).float())


@pytest.mark.parametrize("rule", RULES)
def test_an_empty_mask_stays_empty(rule):
    assert not resize_mask(torch.zeros(1, 7, 9), (13, 5), rule=rule).any()
