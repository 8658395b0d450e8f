"""DeSTSeg networks in plain torch (Zhang et al., "DeSTSeg: Segmentation Guided Denoising Student-Teacher
for Anomaly Detection", CVPR 2023), written from the paper.

- Teacher: an ImageNet ResNet18, frozen; features of ``layer1..layer3`` (1/4, 1/8, 1/16 of the input).
- Denoising student: a randomly initialised ResNet18 encoder and a reversed-ResNet decoder whose three stages
  mimic the teacher's features of the CLEAN image while seeing the CORRUPTED one (cosine distance).
- Segmentation network: two residual blocks and an ASPP head on the element-wise products of the
  L2-normalised teacher and student features (all upsampled to 1/4); it outputs anomaly logits at 1/4.

At inference the anomaly map is the sigmoid of the logits upsampled to the input size, and the image score is
the mean of its top ``top_k`` pixels. Inputs are ImageNet-normalised images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.models.resnet import BasicBlock

logger = logging.getLogger(__name__)

TEACHER_CHANNELS = (64, 128, 256)


def imagenet_resnet18_file() -> Path:
    """Where torchvision caches its ImageNet ResNet18 weights (``<torch hub dir>/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def load_teacher_state(pretrained: bool, teacher_weights: str | os.PathLike | None) -> dict | None:
    """The teacher's ResNet18 state dict, from a file; never downloads.

    Args:
        pretrained: Use torchvision's ImageNet weights from the local torch hub cache when
            ``teacher_weights`` is None (FileNotFoundError if they are not there).
        teacher_weights: A ResNet18 state dict file (``.safetensors``, or a ``.pth`` read with
            ``weights_only=True``); overrides ``pretrained``.

    Returns:
        The state dict, or None for a randomly initialised teacher (``pretrained=False``).
    """
    if teacher_weights is None and not pretrained:
        logger.warning("DeSTSeg teacher is randomly initialised (pretrained=False): fine for tests only")
        return None
    path = Path(teacher_weights) if teacher_weights is not None else imagenet_resnet18_file()
    if not path.is_file():
        raise FileNotFoundError(
            f"DeSTSeg teacher weights not found at {path}. Put torchvision's ImageNet ResNet18 weights there "
            "(e.g. run torchvision.models.resnet18(weights='IMAGENET1K_V1') once where a network is available), "
            "pass `teacher_weights=FILE`, or `pretrained=False` for a random teacher (tests only)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _stem(net: nn.Module) -> nn.Sequential:
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two ResNet basic blocks, the first projecting ``in_channels`` to ``out_channels``."""
    project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, downsample=project), BasicBlock(out_channels, out_channels)
    )


class Teacher(nn.Module):
    """Frozen ResNet18 ``layer1..layer3``; always in eval mode."""

    def __init__(self, state_dict: dict | None = None) -> None:
        super().__init__()
        net = resnet18(weights=None)
        if state_dict is not None:
            net.load_state_dict(state_dict)
        self.stem, self.layer1, self.layer2, self.layer3 = _stem(net), net.layer1, net.layer2, net.layer3
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> ``[(B, 64, H/4, W/4), (B, 128, H/8, W/8), (B, 256, H/16, W/16)]``."""
        f1 = self.layer1(self.stem(image))
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


class Student(nn.Module):
    """Denoising student: ResNet18 encoder (random init) and a reversed-ResNet decoder, no skip connections."""

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.encoder = nn.Sequential(_stem(net), net.layer1, net.layer2, net.layer3, net.layer4)
        self.decode3, self.decode2, self.decode1 = _stage(512, 256), _stage(256, 128), _stage(128, 64)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> features shaped like the teacher's, in the same order."""
        x = self.encoder(image)  # (B, 512, H/32, W/32)
        d3 = self.decode3(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        d2 = self.decode2(F.interpolate(d3, scale_factor=2.0, mode="bilinear", align_corners=False))
        d1 = self.decode1(F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False))
        return [d1, d2, d3]  # (B, 64, H/4, W/4), (B, 128, H/8, W/8), (B, 256, H/16, W/16)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (rates 6, 12, 18, a 1x1 branch and image pooling) -> 1 logit map."""

    def __init__(self, in_channels: int, channels: int = 128, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()

        def branch(kernel: int, dilation: int) -> nn.Sequential:
            padding = 0 if kernel == 1 else dilation
            conv = nn.Conv2d(in_channels, channels, kernel, padding=padding, dilation=dilation, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

        self.branches = nn.ModuleList([branch(1, 1), *(branch(3, rate) for rate in rates)])
        # no BatchNorm after pooling: a (B, C, 1, 1) map of batch 1 has one value per channel
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU())
        merged = channels * (len(rates) + 2)
        self.project = nn.Sequential(
            nn.Conv2d(merged, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(x).expand(-1, -1, *x.shape[-2:])  # (B, C, h, w)
        merged = torch.cat([*(branch(x) for branch in self.branches), pooled], dim=1)
        return self.classifier(self.project(merged))  # (B, 1, h, w)


class SegmentationNet(nn.Module):
    """Residual blocks (``res``, own learning rate) and an ASPP head (``head``) -> anomaly logits."""

    def __init__(self, in_channels: int = sum(TEACHER_CHANNELS), channels: int = 256) -> None:
        super().__init__()
        self.res = _stage(in_channels, channels)
        self.head = ASPP(channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.res(features))


class DeSTSegModel(nn.Module):
    """Teacher, denoising student and segmentation network.

    Args:
        teacher_state: ResNet18 state dict for the teacher (None: random, for tests).
        top_k: Pixels averaged into the image score.
    """

    def __init__(self, teacher_state: dict | None = None, *, top_k: int = 100) -> None:
        super().__init__()
        self.teacher = Teacher(teacher_state)
        self.student = Student()
        self.segmentation_net = SegmentationNet()
        self.top_k = top_k

    def student_loss(self, augmented: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
        """Denoising loss: sum over levels of the mean cosine distance student(augmented) <-> teacher(origin)."""
        with torch.no_grad():
            targets = self.teacher(origin)
        outputs = self.student(augmented)
        return sum((1 - F.cosine_similarity(s, t, dim=1)).mean() for s, t in zip(outputs, targets))

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """Anomaly logits ``(B, 1, H/4, W/4)``; teacher and student are not trained through this."""
        with torch.no_grad():
            teacher = [F.normalize(t, dim=1) for t in self.teacher(image)]
            student = [F.normalize(s, dim=1) for s in self.student(image)]
            size = teacher[0].shape[-2:]
            products = [  # (B, C_k, H/4, W/4) each
                F.interpolate(t * s, size=size, mode="bilinear", align_corners=False)
                for t, s in zip(teacher, student)
            ]
        return self.segmentation_net(torch.cat(products, dim=1))  # input (B, 448, H/4, W/4)

    def forward(self, image: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Training: logits ``(B, 1, H/4, W/4)``. Eval: `InferenceBatch` with ``anomaly_map (B, H, W)`` in
        [0, 1] and ``pred_score (B,)`` = mean of the top-``top_k`` map pixels."""
        logits = self.segment(image)
        if self.training:
            return logits
        upsampled = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        anomaly_map = torch.sigmoid(upsampled)[:, 0]  # (B, H, W), as anomalib's models return it
        flat = anomaly_map.flatten(1)  # (B, H * W)
        pred_score = flat.topk(min(self.top_k, flat.shape[1]), dim=1).values.mean(dim=1)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)
