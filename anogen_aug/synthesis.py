"""`Synthesis`: what every anomaly generator returns, and the protocol such generators follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Synthesis:
    """One generated anomaly.

    Attributes:
        image: The image with the anomaly, ``(3, H, W)`` float in [0, 1].
        box_mask: The boxes as a mask, ``(1, H, W)`` float in {0, 1}.
        mask: A pixel mask of what was changed, ``(1, H, W)`` float in {0, 1}, always inside ``box_mask``.
            Exact for the crop-and-paste generator; estimated from the decoded difference for diffusion.
        boxes: The boxes, ``(N, 4)`` XYXY pixels (float).
    """

    image: torch.Tensor
    box_mask: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor


@runtime_checkable
class AnomalyGeneratorProtocol(Protocol):
    """What the bank writer needs from a generator (`AnomalyGenerator`, `CopyPasteGenerator`)."""

    name: str

    def generate(
        self, image: torch.Tensor, boxes: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> Synthesis: ...

    def settings(self) -> dict[str, Any]:
        """JSON-able description of the generator and its settings, stored in the bank manifest."""
        ...
