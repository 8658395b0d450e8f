"""DeSTSeg's segmentation loss with AnoGen's weakly supervised focal term (Sec. 3.3)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from anogen_aug.losses import TauOf, WeakSupervisionLoss, binary_focal_loss_per_pixel


class DeSTSegLoss(nn.Module):
    """Segmentation loss: weakly supervised sigmoid focal (gamma 4) + unmasked L1 on probabilities.

    Args:
        tau: Threshold in (0, 1] on P(normal) inside ``weak_mask``.
        gamma: Focal exponent.
    """

    def __init__(self, *, tau: float = 0.9, gamma: float = 4.0) -> None:
        super().__init__()
        focal = functools.partial(binary_focal_loss_per_pixel, gamma=gamma)
        self.focal = WeakSupervisionLoss(focal, tau=tau, reduction="mean")

    tau = TauOf("focal")  # the threshold lives in the loss; this reads and sets it

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weak_mask: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            logits: ``(B, 1, h, w)`` anomaly logits at the segmentation resolution.
            target: ``(B, 1, h, w)`` {0, 1} anomaly mask.
            weak_mask: ``(B, 1, h, w)`` {0, 1}: where supervision is weak (boxes of generated rows).

        Returns:
            Scalar loss.
        """
        prob = torch.sigmoid(logits)
        return self.focal(logits, target, weak_mask, 1 - prob) + torch.abs(prob - target).mean()
