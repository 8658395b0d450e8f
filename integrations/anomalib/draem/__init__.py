"""Weakly supervised DRAEM, split as anomalib splits its models: torch model, loss, Lightning model."""

from .lightning_model import WeakDraem
from .loss import WeakDraemLoss
from .torch_model import SizedDraemModel

__all__ = ["SizedDraemModel", "WeakDraem", "WeakDraemLoss"]
