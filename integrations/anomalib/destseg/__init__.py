"""DeSTSeg (CVPR 2023) with AnoGen weak supervision, split as anomalib splits its models: torch model, loss,
Lightning model."""

from .lightning_model import DeSTSeg
from .loss import DeSTSegLoss
from .torch_model import DeSTSegModel, imagenet_resnet18_file, load_teacher_state

__all__ = ["DeSTSeg", "DeSTSegLoss", "DeSTSegModel", "imagenet_resnet18_file", "load_teacher_state"]
