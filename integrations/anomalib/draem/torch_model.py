"""DRAEM's networks (anomalib's), with the widths of the two sub-networks configurable."""

from __future__ import annotations

from anomalib.models.image.draem.torch_model import (
    DiscriminativeSubNetwork,
    DraemModel,
    ReconstructiveSubNetwork,
)
from torch import nn


class SizedDraemModel(DraemModel):
    """anomalib's `DraemModel` with configurable sub-network widths (anomalib's: 128 and 64).

    Training: ``(B, 3, H, W)`` -> ``(reconstruction (B, 3, H, W), logits (B, 2, H, W))``; evaluation as
    anomalib's `DraemModel`. H and W must be divisible by 16.

    Args:
        sspcab: Use the SSPCAB block in the reconstructive sub-network.
        reconstruction_width: Base width of the reconstructive sub-network.
        discrimination_width: Base width of the discriminative sub-network.
    """

    def __init__(
        self, *, sspcab: bool = False, reconstruction_width: int = 128, discrimination_width: int = 64
    ) -> None:
        nn.Module.__init__(self)  # DraemModel.__init__ would build the full-width networks first
        self.reconstructive_subnetwork = ReconstructiveSubNetwork(
            base_width=reconstruction_width, sspcab=sspcab
        )
        self.discriminative_subnetwork = DiscriminativeSubNetwork(
            in_channels=6, out_channels=2, base_width=discrimination_width
        )
