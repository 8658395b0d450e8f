"""DRAEM's loss with AnoGen's weakly supervised focal term (Sec. 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.losses import SSIMLoss
from torch import nn

from anogen_aug.losses import TauOf, WeakSupervisionLoss, focal_loss_per_pixel


class WeakDraemLoss(nn.Module):
    """DRAEM's loss with a weakly supervised focal term: ``MSE + 2 * SSIM + focal'``.

    The focal term weights both classes by 1 (DRAEM's original loss; see `focal_loss_per_pixel` for why
    anomalib 2.7's ``DraemLoss`` with kornia 0.9 differs) and drops, inside ``weak_mask``, pixels with
    P(normal) >= tau. It is averaged over all pixels (the authors' code).

    Args:
        tau: Threshold in (0, 1] on P(normal).
    """

    def __init__(self, *, tau: float = 0.9) -> None:
        super().__init__()
        self.ssim_loss = SSIMLoss(window_size=11)
        self.focal = WeakSupervisionLoss(focal_loss_per_pixel, tau=tau, reduction="mean")

    tau = TauOf("focal")  # the threshold lives in the loss; this reads and sets it

    def forward(
        self,
        target_image: torch.Tensor,
        reconstruction: torch.Tensor,
        anomaly_mask: torch.Tensor,
        prediction: torch.Tensor,
        weak_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of one batch.

        Args:
            target_image: ``(B, 3, H, W)`` clean images, the reconstruction target.
            reconstruction: ``(B, 3, H, W)`` reconstructions.
            anomaly_mask: ``(B, 1, H, W)`` {0, 1} segmentation target.
            prediction: ``(B, 2, H, W)`` logits (class 1 = anomalous).
            weak_mask: ``(B, 1, H, W)`` {0, 1}: where supervision is weak (boxes of generated rows).

        Returns:
            Scalar loss.
        """
        prob_normal = torch.softmax(prediction, dim=1)[:, :1]  # (B, 1, H, W); detached by the loss
        l2 = F.mse_loss(reconstruction, target_image)
        ssim = 2 * self.ssim_loss(reconstruction, target_image)
        return l2 + ssim + self.focal(prediction, anomaly_mask, weak_mask, prob_normal)
