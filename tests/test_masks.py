"""Mask resizing rules (`anogen_aug.masks`), each held to its definition on masks small enough to reason about."""

from __future__ import annotations

import pytest
import torch

from anogen_aug.masks import RULES, resize_mask


def _dot(size: int = 16, at: tuple[int, int] = (5, 9)) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, at[0], at[1]] = 1  # one defect pixel
    return mask


def test_overlap_keeps_every_cell_the_defect_touches():
    """The authors' latent mask: bilinear to the latent size, then any non-zero value is defect."""
    small = resize_mask(_dot(), 4, rule="overlap")  # 4x4 cells of 4x4 pixels
    assert small[0, 1, 2] == 1  # the cell holding pixel (5, 9)
    assert small.sum() >= 1
    assert resize_mask(torch.zeros(1, 16, 16), 4, rule="overlap").sum() == 0


def test_majority_drops_a_defect_smaller_than_half_a_cell():
    assert resize_mask(_dot(), 4, rule="majority").sum() == 0
    block = torch.zeros(1, 16, 16)
    block[0, 4:8, 8:12] = 1  # exactly one 4x4 cell
    assert resize_mask(block, 4, rule="majority")[0].nonzero().tolist() == [[1, 2]]


def test_majority_nonempty_never_loses_a_thin_defect():
    kept = resize_mask(_dot(), 4, rule="majority_nonempty")
    assert kept.dtype == torch.bool and kept.sum() >= 1
    assert not resize_mask(torch.zeros(1, 16, 16), 4, rule="majority_nonempty").any()


def test_bicubic_follows_the_image_and_nearest_copies_cells():
    block = torch.zeros(1, 8, 8)
    block[0, 2:6, 2:6] = 1
    up = resize_mask(block, 16, rule="bicubic")
    assert up[0, 4:12, 4:12].all() and up.sum() == 64
    assert torch.equal(
        resize_mask(block, 16, rule="nearest")[0], block[0].repeat_interleave(2, 0).repeat_interleave(2, 1)
    )


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_keeps_the_leading_dimensions(rule):
    assert resize_mask(torch.ones(2, 1, 8, 8), (4, 6), rule=rule).shape == (2, 1, 4, 6)
    assert resize_mask(torch.ones(8, 8), 4, rule=rule).shape == (4, 4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rule"):
        resize_mask(torch.ones(1, 4, 4), 2, rule="magic")
    with pytest.raises(ValueError, match="size"):
        resize_mask(torch.ones(1, 4, 4), 0)
    with pytest.raises(ValueError, match="mask"):
        resize_mask(torch.ones(1, 1, 1, 4, 4), 2)
