"""Weak supervision from boxes (AnoGen, ECCV 2024, Sec. 3.3) and the per-pixel losses it wraps.

A box is a weak label: it holds the defect and some normal pixels. Inside the box, pixels that the detector
already calls normal with probability ``>= tau`` get no loss; outside the box every pixel is supervised:

    L' = M_box * (1 - delta) * L + (1 - M_box) * L,    delta = [p_normal >= tau]    (p_normal detached)

``tau = 0.9`` is the paper's best value (the authors' code passes ``p_cutoff = 1 - tau = 0.1`` on P(anomaly)).
Masks follow the library convention: float {0, 1}, ``(B, 1, H, W)`` or ``(1, H, W)``. Nothing here imports
anomalib; the detector integrations build on these functions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_number
from .masks import resize_mask

__all__ = [
    "REDUCTIONS",
    "WeakSupervisionLoss",
    "binary_focal_loss_per_pixel",
    "check_tau",
    "focal_loss_per_pixel",
    "resize_mask",
    "weak_supervision_mask",
]

REDUCTIONS = ("mean", "kept")


def check_tau(tau) -> float:
    """``tau`` as a float in (0, 1], or ``ValueError`` naming it."""
    return check_number(tau, "tau", low=0.0, high=1.0, low_open=True)


def weak_supervision_mask(
    prob_normal: torch.Tensor, box_mask: torch.Tensor, *, tau: float = 0.9
) -> torch.Tensor:
    """Which pixels keep their loss under box supervision.

    ``keep = 0`` exactly where ``box_mask == 1`` and ``prob_normal >= tau``; 1 everywhere else. The
    probabilities are detached: the mask is a constant for backpropagation.

    Args:
        prob_normal: Predicted probability that a pixel is normal, e.g. ``(B, 1, H, W)`` in [0, 1].
        box_mask: Box mask {0, 1} with the same height and width as ``prob_normal`` and a shape that
            broadcasts with it (resize with `resize_mask` first if the resolutions differ).
        tau: Confidence threshold in (0, 1]. ``tau = 1`` drops only pixels with ``prob_normal == 1``.

    Returns:
        ``keep``: float {0, 1} of the broadcast shape, dtype of ``prob_normal`` (float32 if not floating).
    """
    tau = check_tau(tau)
    if not isinstance(prob_normal, torch.Tensor) or not isinstance(box_mask, torch.Tensor):
        raise TypeError(
            f"`prob_normal` and `box_mask` must be tensors, got {type(prob_normal).__name__} "
            f"and {type(box_mask).__name__}"
        )
    if prob_normal.ndim < 2 or box_mask.ndim < 2 or prob_normal.shape[-2:] != box_mask.shape[-2:]:
        raise ValueError(
            f"`box_mask` must have the same height and width as `prob_normal` "
            f"({tuple(prob_normal.shape[-2:])}), got {tuple(box_mask.shape[-2:])}; resize it with resize_mask"
        )
    try:
        shape = torch.broadcast_shapes(prob_normal.shape, box_mask.shape)
    except RuntimeError as error:
        raise ValueError(
            f"`box_mask` shape {tuple(box_mask.shape)} does not broadcast with `prob_normal` shape "
            f"{tuple(prob_normal.shape)}"
        ) from error
    dtype = prob_normal.dtype if prob_normal.is_floating_point() else torch.float32
    confident_normal = prob_normal.detach() >= tau
    dropped = (box_mask.detach() != 0) & confident_normal
    return (~dropped).to(dtype).expand(shape).clone()


def focal_loss_per_pixel(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss per pixel, every class weighted 1 (DRAEM's two-class segmentation head).

    ``loss = -(1 - p_t) ** gamma * log(p_t)`` with ``p_t`` the softmax probability of the target class (Lin et
    al., 2017), in plain torch; equal to kornia's ``focal_loss(..., alpha=None, reduction="none")`` summed over
    classes. Note: with kornia >= 0.9, ``alpha=1`` (anomalib's ``DraemLoss``) weights class 0 by
    ``1 - alpha = 0``, i.e. normal pixels get no loss; DRAEM's original focal loss weights both classes equally,
    which is what this function does.

    Args:
        logits: ``(B, C, H, W)`` class logits (C = 2 for DRAEM; class 1 = anomalous).
        target: ``(B, 1, H, W)`` or ``(B, H, W)`` class indices (a {0, 1} mask for C = 2).
        gamma: Focusing parameter.

    Returns:
        ``(B, 1, H, W)`` loss per pixel.
    """
    labels = target.reshape(logits.shape[0], 1, *logits.shape[2:]).long()  # (B, 1, H, W)
    log_p = logits.log_softmax(dim=1).gather(1, labels)  # (B, 1, H, W): log p_t
    base = 1.0 - log_p.exp()
    # (1 - p) ** gamma has an infinite derivative at p = 1 for gamma < 1; the loss term has none there, so a
    # saturated pixel takes the factor's value without a gradient through it (as kornia does).
    saturated = base == 0
    weight = torch.where(saturated, base.detach().pow(gamma), base.masked_fill(saturated, 1.0).pow(gamma))
    return -weight * log_p


def binary_focal_loss_per_pixel(
    logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 4.0
) -> torch.Tensor:
    """Sigmoid focal loss per pixel without class weighting (DeSTSeg's segmentation loss, gamma 4).

    ``loss = BCE(sigmoid(logits), target) * (1 - p_t) ** gamma`` with ``p_t`` the probability of the true
    class; computed from logits for numerical stability.

    Args:
        logits: ``(B, 1, H, W)`` anomaly logits.
        target: {0, 1} mask of the same shape.
        gamma: Focusing parameter.

    Returns:
        Loss per pixel, shape of ``logits``.
    """
    target = target.to(logits.dtype)
    prob = torch.sigmoid(logits)
    p_t = prob * target + (1 - prob) * (1 - target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce * (1 - p_t) ** gamma


def _match_shape(keep: torch.Tensor, loss_map: torch.Tensor) -> torch.Tensor:
    """``keep`` in the shape of the per-pixel loss, allowing ``(B, 1, H, W)`` against ``(B, H, W)``."""
    if keep.shape == loss_map.shape:
        return keep
    if keep.numel() == loss_map.numel() and keep.shape[-2:] == loss_map.shape[-2:]:
        return keep.reshape(loss_map.shape)
    try:
        torch.broadcast_shapes(keep.shape, loss_map.shape)
    except RuntimeError as error:
        raise ValueError(
            f"`base_loss` returned a per-pixel loss of shape {tuple(loss_map.shape)} that does not match the "
            f"weak-supervision mask {tuple(keep.shape)}; it must return one loss per pixel (reduction='none')"
        ) from error
    return keep


class TauOf:
    """``tau = TauOf("focal")``: a class attribute that reads and sets the ``tau`` of the named sub-loss.

    The weakly supervised losses and models keep one threshold, in their `WeakSupervisionLoss`; this view is how
    they expose it (checked on set, used from the next call), so a stored copy can never go stale.
    """

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, owner, objtype=None):
        return self if owner is None else getattr(owner, self.attribute).tau

    def __set__(self, owner, value: float) -> None:
        getattr(owner, self.attribute).tau = value


class WeakSupervisionLoss(nn.Module):
    """Box-supervised per-pixel loss: pixels inside the box that are confidently normal get no loss.

    Args:
        base_loss: ``base_loss(prediction, target) -> per-pixel loss`` (no reduction), e.g.
            `focal_loss_per_pixel`, `binary_focal_loss_per_pixel` or
            ``functools.partial(F.binary_cross_entropy_with_logits, reduction="none")``.
        tau: Threshold in (0, 1] on P(normal); 0.9 as in the paper.
        reduction: ``"mean"`` averages over ALL pixels, dropped ones included (the authors' code);
            ``"kept"`` averages over the kept pixels only.

    Example:
        >>> loss_fn = WeakSupervisionLoss(binary_focal_loss_per_pixel, tau=0.9)
        >>> logits = torch.randn(2, 1, 8, 8, requires_grad=True)
        >>> box = torch.zeros(2, 1, 8, 8); box[..., 2:6, 2:6] = 1
        >>> loss = loss_fn(logits, box, box, 1 - torch.sigmoid(logits))
    """

    def __init__(
        self,
        base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        tau: float = 0.9,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if not callable(base_loss):
            raise TypeError(f"`base_loss` must be callable, got {type(base_loss).__name__}")
        check_choice(reduction, "reduction", REDUCTIONS)
        self.base_loss = base_loss
        self.tau = tau
        self.reduction = reduction

    @property
    def tau(self) -> float:
        """The threshold on P(normal), in (0, 1]; setting it is checked and applies from the next call."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        self._tau = check_tau(value)

    def forward(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        box_mask: torch.Tensor,
        prob_normal: torch.Tensor,
    ) -> torch.Tensor:
        """Weakly supervised loss.

        Args:
            prediction: What ``base_loss`` takes as prediction (e.g. logits ``(B, C, H, W)``).
            target: What ``base_loss`` takes as target (e.g. the box mask itself).
            box_mask: ``(B, 1, H, W)`` {0, 1}: where supervision is weak (zeros: full supervision).
            prob_normal: ``(B, 1, H, W)`` P(normal) per pixel; detached here.

        Returns:
            Scalar loss.
        """
        keep = weak_supervision_mask(prob_normal, box_mask, tau=self.tau)
        loss_map = self.base_loss(prediction, target)
        keep = _match_shape(keep, loss_map).to(loss_map.dtype)
        weighted = loss_map * keep
        if self.reduction == "mean":
            return weighted.mean()
        return weighted.sum() / keep.expand_as(weighted).sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, reduction={self.reduction!r}"
