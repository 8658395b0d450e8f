"""Weak supervision: the tau mask zeroes exactly the right pixels, and gradients follow it."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from anogen_aug.losses import (
    WeakSupervisionLoss,
    binary_focal_loss_per_pixel,
    focal_loss_per_pixel,
    resize_mask,
    weak_supervision_mask,
)

bce = functools.partial(F.binary_cross_entropy_with_logits, reduction="none")


def _box(batch=2, size=8):
    box = torch.zeros(batch, 1, size, size)
    box[:, :, 2:6, 1:5] = 1
    return box


def test_mask_zeroes_exactly_confident_normal_pixels_inside_the_box():
    prob = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    prob[0, 0, 3, 2] = 0.9  # exactly tau: dropped (>=)
    prob[0, 0, 0, 0] = 0.99  # outside the box: kept
    box = _box()
    keep = weak_supervision_mask(prob, box, tau=0.9)
    expected = 1.0 - ((box == 1) & (prob >= 0.9)).float()
    assert torch.equal(keep, expected)
    assert keep[0, 0, 3, 2] == 0 and keep[0, 0, 0, 0] == 1
    assert keep.dtype == torch.float32 and keep.shape == prob.shape
    assert 0 < (keep == 0).sum() < box.sum()  # some, not all, box pixels dropped


def test_mask_is_detached_and_broadcasts():
    prob = torch.full((2, 1, 4, 4), 0.95, requires_grad=True)
    keep = weak_supervision_mask(prob, torch.ones(1, 1, 4, 4))
    assert not keep.requires_grad and keep.shape == (2, 1, 4, 4) and keep.sum() == 0


@pytest.mark.parametrize("tau", [0.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_tau_outside_unit_interval_refused(tau):
    with pytest.raises(ValueError, match="tau"):
        weak_supervision_mask(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4), tau=tau)
    with pytest.raises(ValueError, match="tau"):
        WeakSupervisionLoss(bce, tau=tau)


def test_different_spatial_size_refused_with_hint():
    with pytest.raises(ValueError, match="resize_mask"):
        weak_supervision_mask(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 8, 8))


def test_resize_mask_bilinear_then_half_threshold():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0:4, 0:4] = 1
    mask[..., 6, 6] = 1  # a single pixel vanishes at half resolution (bilinear average 0.25)
    small = resize_mask(mask, (4, 4))
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 0:2, 0:2] = 1
    assert torch.equal(small, expected)
    assert resize_mask(mask[0], 16).shape == (1, 16, 16)


def test_loss_gradients_flow_only_where_kept_and_never_to_prob_normal():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    box = _box()
    prob_normal = (1 - torch.sigmoid(logits)).detach().requires_grad_(True)
    loss = WeakSupervisionLoss(bce, tau=0.6)(logits, box, box, prob_normal)
    loss.backward()
    keep = weak_supervision_mask(prob_normal, box, tau=0.6)
    assert (keep == 0).any()
    assert torch.all(logits.grad[keep == 0] == 0)
    assert torch.all(logits.grad[keep == 1] != 0)
    assert prob_normal.grad is None


def test_mean_and_kept_reductions():
    logits = torch.zeros(1, 1, 4, 4)  # BCE = log 2 everywhere
    box = torch.zeros(1, 1, 4, 4)
    box[..., :2, :] = 1  # 8 box pixels
    prob = torch.full((1, 1, 4, 4), 0.5)
    prob[..., 0, :] = 0.95  # 4 of them confidently normal -> dropped
    target = box
    mean = WeakSupervisionLoss(bce, tau=0.9, reduction="mean")(logits, target, box, prob)
    kept = WeakSupervisionLoss(bce, tau=0.9, reduction="kept")(logits, target, box, prob)
    log2 = torch.log(torch.tensor(2.0))
    assert torch.allclose(mean, log2 * 12 / 16)
    assert torch.allclose(kept, log2)
    with pytest.raises(ValueError, match="reduction"):
        WeakSupervisionLoss(bce, reduction="sum")


def test_tau_one_is_plain_box_supervision():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 8, 8)
    box = _box()
    prob_normal = torch.softmax(logits, 1)[:, :1].clamp(max=0.999)  # never exactly 1
    weak = WeakSupervisionLoss(focal_loss_per_pixel, tau=1.0)(logits, box, box, prob_normal)
    plain = focal_loss_per_pixel(logits, box).mean()
    assert torch.equal(weak, plain)
    assert WeakSupervisionLoss(focal_loss_per_pixel, tau=0.5)(logits, box, box, prob_normal) < plain


def test_focal_per_pixel_weights_both_classes():
    logits = torch.zeros(1, 2, 2, 2)  # p = 0.5 for both classes
    target = torch.tensor([[[[0, 1], [1, 0]]]])
    loss = focal_loss_per_pixel(logits, target, gamma=2.0)
    expected = 0.25 * torch.log(torch.tensor(2.0))  # (1 - 0.5)^2 * -log 0.5, normal pixels included
    assert loss.shape == (1, 1, 2, 2) and torch.allclose(loss, expected.expand(1, 1, 2, 2))


def test_binary_focal_matches_definition():
    logits = torch.tensor([[[[2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    p = torch.sigmoid(logits)
    expected = -torch.log(p) * (1 - p) ** 4
    assert torch.allclose(binary_focal_loss_per_pixel(logits, target, gamma=4.0), expected, atol=1e-6)


def test_base_loss_must_be_per_pixel():
    reduced = functools.partial(F.binary_cross_entropy_with_logits, reduction="mean")
    box = _box()
    loss_fn = WeakSupervisionLoss(lambda p, t: reduced(p, t).reshape(1, 1, 1, 1).expand(3, 3, 1, 1), tau=0.9)
    with pytest.raises(ValueError, match="per-pixel"):
        loss_fn(torch.zeros(2, 1, 8, 8), box, box, torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_per_pixel_equals_kornia(gamma):
    kornia_losses = pytest.importorskip("kornia.losses")
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 7, generator=generator) * 4
    logits[0, :, 0, 0] = torch.tensor([60.0, -60.0, -60.0])  # p_t rounds to 1: the saturated branch
    target = torch.randint(0, 3, (2, 1, 5, 7), generator=generator)
    target[0, 0, 0, 0] = 0
    ours_in, theirs_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ours = focal_loss_per_pixel(ours_in, target, gamma=gamma)
    labels = target[:, 0].long()
    theirs = kornia_losses.focal_loss(theirs_in, labels, alpha=None, gamma=gamma, reduction="none")
    theirs = theirs.sum(dim=1, keepdim=True)
    assert torch.equal(ours, theirs)
    weights = torch.rand(ours.shape, generator=generator)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-7) and torch.isfinite(ours_in.grad).all()


def test_focal_per_pixel_takes_masks_with_or_without_channel():
    logits = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert torch.equal(focal_loss_per_pixel(logits, mask), focal_loss_per_pixel(logits, mask[:, 0]))


def test_tau_is_checked_when_set_and_read_by_the_next_call():
    logits = torch.zeros(1, 1, 4, 4)
    box = torch.ones(1, 1, 4, 4)
    prob = torch.full((1, 1, 4, 4), 0.7)
    loss_fn = WeakSupervisionLoss(bce, tau=0.9)
    assert loss_fn(logits, box, box, prob) > 0  # 0.7 < 0.9: every box pixel supervised
    loss_fn.tau = 0.6
    assert loss_fn.tau == 0.6 and loss_fn(logits, box, box, prob) == 0  # 0.7 >= 0.6: all dropped
    with pytest.raises(ValueError, match="tau"):
        loss_fn.tau = 1.5
    assert loss_fn.tau == 0.6 and "tau=0.6" in repr(loss_fn)


def test_resize_mask_is_the_masks_majority_rule():
    from anogen_aug import masks

    assert resize_mask is masks.resize_mask
    mask = (torch.rand(1, 1, 9, 11, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    assert torch.equal(resize_mask(mask, (4, 5)), masks.resize_mask(mask, (4, 5), rule="majority"))


def test_losses_import_without_kornia():
    code = (
        "import sys\n"
        "sys.modules['kornia'] = None\n"
        "import torch\n"
        "from anogen_aug.losses import focal_loss_per_pixel\n"
        "loss = focal_loss_per_pixel(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))\n"
        "assert loss.shape == (1, 1, 2, 2)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
