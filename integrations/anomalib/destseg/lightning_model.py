"""`DeSTSeg` as an anomalib model, trained on Perlin and bank anomalies with weak box supervision.

anomalib 2.7 has no DeSTSeg; this port follows the paper (networks in `torch_model`) and AnoGen's recipe:

1. Every training row is an anomaly (DeSTSeg never trains on clean images): with probability ``perlin_p``, or
   when the row is not generated, a Perlin / DTD anomaly made from the clean source (always anomalous);
   otherwise the bank anomaly with its mask or box. Use ``AnoGenDataModule(p=1.0)`` for the paper's 50/50 mix.
2. The first ``de_st_steps`` steps train the denoising student (cosine distance between student(corrupted)
   and teacher(clean)); later steps train the segmentation network with a focal term (gamma 4) weighted by
   the tau mask inside boxes of generated rows, plus an unmasked L1 term (as the authors' code).
3. SGD with momentum 0.9, weight decay 1e-4; learning rates 0.4 (student), 0.1 (segmentation residual
   blocks), 0.01 (ASPP head). Manual optimisation: one optimizer steps per training step.

The pre-processor is anomalib's default (Resize 256, ImageNet Normalize). anomalib normalises only
``batch.image``, so the step undoes it, builds the anomalies in [0, 1] and normalises them itself.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.data.transforms.utils import extract_transforms_by_type
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from torchvision.transforms.v2 import Normalize

from anogen_aug.checks import check_int, check_probability
from anogen_aug.losses import TauOf, check_tau
from anogen_aug.masks import resize_mask

from ..batch import anomaly_targets
from ..evaluator import anogen_evaluator
from .loss import DeSTSegLoss
from .torch_model import DeSTSegModel, load_teacher_state


class DeSTSeg(AnomalibModule):
    """DeSTSeg (CVPR 2023) with AnoGen weak supervision.

    Args:
        tau: Weak-supervision threshold in (0, 1] on P(normal); `tau` reads and sets the loss's.
        perlin_p: Probability that a generated row is replaced by a Perlin anomaly.
        de_st_steps: Steps that train the denoising student before the segmentation network (of 5000).
        dtd_dir: Existing folder of texture images for the Perlin anomalies; None: Perlin noise textures.
        pretrained: ImageNet teacher from torchvision's local cache (never downloaded); False: random
            teacher (tests only).
        teacher_weights: A ResNet18 state dict file for the teacher (overrides ``pretrained``).
        lr_student, lr_res, lr_seg_head: SGD learning rates of the student, the segmentation network's
            residual blocks and its ASPP head.
        gamma: Focal exponent. top_k: Pixels averaged into the image score.
        beta: Blend factor range of the Perlin anomalies.
        pre_processor, post_processor, evaluator, visualizer: As for any anomalib model.
    """

    def __init__(
        self,
        *,
        tau: float = 0.9,
        perlin_p: float = 0.5,
        de_st_steps: int = 1000,
        dtd_dir: str | os.PathLike | None = None,
        pretrained: bool = True,
        teacher_weights: str | os.PathLike | None = None,
        lr_student: float = 0.4,
        lr_res: float = 0.1,
        lr_seg_head: float = 0.01,
        gamma: float = 4.0,
        top_k: int = 100,
        beta: float | tuple[float, float] = (0.2, 1.0),
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if dtd_dir is not None and not os.path.isdir(dtd_dir):
            raise FileNotFoundError(f"`dtd_dir` must be an existing folder of texture images, got {dtd_dir}")
        check_tau(tau)
        check_int(de_st_steps, "de_st_steps", low=0)
        check_int(top_k, "top_k")
        perlin_p = check_probability(perlin_p, "perlin_p")
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.automatic_optimization = False
        self.perlin_p = perlin_p
        self.de_st_steps = de_st_steps
        self.learning_rates = {"student": lr_student, "res": lr_res, "seg_head": lr_seg_head}
        self.model = DeSTSegModel(load_teacher_state(pretrained, teacher_weights), top_k=top_k)
        self.loss = DeSTSegLoss(tau=tau, gamma=gamma)
        self.augmenter = PerlinAnomalyGenerator(
            anomaly_source_path=dtd_dir, probability=1.0, blend_factor=beta
        )
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))  # survives checkpoints

    tau = TauOf("loss")  # the threshold lives in the loss; this reads and sets it

    #: Learns from the labelled anomalies of `AnoGenDataModule` (which refuses one-class models).
    consumes_anomalies = True

    @staticmethod
    def configure_evaluator():
        return anogen_evaluator()

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Two SGD optimizers: the student; the segmentation network (residual blocks, ASPP head)."""
        sgd = {"momentum": 0.9, "weight_decay": 1e-4}
        student = torch.optim.SGD(self.model.student.parameters(), lr=self.learning_rates["student"], **sgd)
        segmentation = torch.optim.SGD(
            [
                {"params": self.model.segmentation_net.res.parameters(), "lr": self.learning_rates["res"]},
                {
                    "params": self.model.segmentation_net.head.parameters(),
                    "lr": self.learning_rates["seg_head"],
                },
            ],
            **sgd,
        )
        return [student, segmentation]

    def _normalization(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``(1, 3, 1, 1)`` of the pre-processor's Normalize (0 and 1 without one)."""
        transform = getattr(self.pre_processor, "transform", None)
        found = extract_transforms_by_type(transform, Normalize) if transform is not None else []
        if not found:
            return torch.zeros(1, 3, 1, 1, device=device), torch.ones(1, 3, 1, 1, device=device)
        mean = torch.tensor(found[0].mean, device=device).view(1, 3, 1, 1)
        return mean, torch.tensor(found[0].std, device=device).view(1, 3, 1, 1)

    def _anomalies(self, batch: Batch, mean: torch.Tensor, std: torch.Tensor):
        """Step 1: ``(corrupted, clean, mask, weak_mask)`` in [0, 1]; every row anomalous."""
        image = batch.image.as_subclass(torch.Tensor) * std + mean  # undo the pre-processor's Normalize
        rows = len(image)
        clean, mask, weak_mask, generated = anomaly_targets(batch, image)
        if generated is None:
            perlin_rows = torch.ones(rows, dtype=torch.bool)
        else:
            perlin_rows = ~generated.cpu() | (torch.rand(rows) < self.perlin_p)
        corrupted, mask, weak_mask = image.clone(), mask.clone(), weak_mask.clone()
        if perlin_rows.any():
            perlin_rows = perlin_rows.to(image.device)
            augmented, perlin_mask = self.augmenter(clean[perlin_rows])
            corrupted[perlin_rows] = augmented.to(image.dtype)
            mask[perlin_rows] = perlin_mask.to(image.dtype)
            weak_mask[perlin_rows] = 0.0
        return corrupted, clean, mask, weak_mask

    def training_step(self, batch: Batch, *args, **kwargs) -> torch.Tensor:
        """One step: student (``train_steps < de_st_steps``) or segmentation network (after)."""
        del args, kwargs
        student_optimizer, segmentation_optimizer = self.optimizers()
        mean, std = self._normalization(batch.image.device)
        corrupted, clean, mask, weak_mask = self._anomalies(batch, mean, std)
        corrupted, clean = (corrupted - mean) / std, (clean - mean) / std
        if int(self.train_steps) < self.de_st_steps:  # 2a. denoising student
            self.model.student.train()
            loss = self.model.student_loss(corrupted, clean)
            optimizer, name = student_optimizer, "train_student_loss"
        else:  # 2b. segmentation network, student frozen
            self.model.student.eval()
            logits = self.model.segment(corrupted)  # (B, 1, H/4, W/4)
            size = logits.shape[-2:]
            target = resize_mask(mask, size, rule="majority")  # (B, 1, H/4, W/4), DeSTSeg's rule
            weak = resize_mask(weak_mask, size, rule="majority")
            loss = self.loss(logits, target, weak)
            optimizer, name = segmentation_optimizer, "train_segmentation_loss"
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.train_steps += 1
        self.log(name, loss.item(), on_epoch=True, prog_bar=True)
        self.log("train_loss", loss.item(), on_epoch=True)
        return loss.detach()

    def validation_step(self, batch: Batch, *args, **kwargs):
        """Anomaly maps and scores of a validation batch (the same path as ``test_step``)."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())
