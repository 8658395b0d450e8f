"""`UNet`: a small U-Net segmenter from scratch, image -> per-pixel anomaly logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anogen_aug.checks import check_int, check_number


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net segmenter (about 2 M parameters at the defaults): image -> anomaly logits.

    Args:
        in_channels: Image channels.
        base_channels: Width of the first level; level ``i`` has ``base_channels * 2**i``.
        depth: Number of levels (``depth - 1`` poolings); height and width must be divisible by
            ``2 ** (depth - 1)``.
        prior: P(anomalous) of every pixel at initialisation.
    """

    def __init__(
        self, *, in_channels: int = 3, base_channels: int = 16, depth: int = 5, prior: float = 0.2
    ) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(base_channels, "base_channels")
        check_int(depth, "depth", low=2)
        check_number(prior, "prior", low=0.0, high=1.0, low_open=True, high_open=True)
        widths = [base_channels * 2**i for i in range(depth)]
        self.down = nn.ModuleList(
            _conv_block(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth)
        )
        self.up = nn.ModuleList(_conv_block(widths[i + 1] + widths[i], widths[i]) for i in range(depth - 1))
        self.head = nn.Conv2d(widths[0], 1, 1)
        # Start from P(anomalous) = `prior` everywhere (RetinaNet's focal-loss prior): anomalous pixels are
        # rare, and from 0.5 Adam spends its first few hundred steps just moving this bias. Keep 1 - prior
        # < tau for weak supervision: box pixels that start "confidently normal" are never supervised.
        nn.init.constant_(self.head.bias, math.log(prior / (1 - prior)))
        self.depth = depth

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> logits ``(B, 1, H, W)`` (sigmoid = P(anomalous))."""
        factor = 2 ** (self.depth - 1)
        if image.shape[-1] % factor or image.shape[-2] % factor:
            raise ValueError(
                f"`image` height and width must be divisible by {factor}, got {tuple(image.shape)}"
            )
        x = (image - 0.5) / 0.25
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)  # (B, C_level, H / 2**level, W / 2**level)
        for level in reversed(range(self.depth - 1)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.up[level](torch.cat([x, skips[level]], dim=1))
        return self.head(x)
