"""`WeakDraem`: anomalib's DRAEM trained on Perlin AND bank anomalies, boxes weakly supervised (AnoGen Sec. 3.3).

anomalib's ``Draem.training_step`` always corrupts ``batch.image`` with its own Perlin generator and ignores the
anomalies a datamodule provides. `WeakDraem` replaces that step with the AnoGen recipe, per row of a batch from
`AnoGenDataModule`:

1. with probability ``perlin_p`` the row becomes a Perlin / DTD anomaly made from the clean source image
   (anomalib's `PerlinAnomalyGenerator`, which leaves half of them anomaly-free), with its exact mask;
2. otherwise the row is used as given: a bank anomaly (``is_generated``) with its mask or box, or a clean
   normal image with an empty mask.

The reconstruction target is always the clean source (``batch.source_image``). The focal term is computed per
pixel and, on generated rows, weighted by the tau mask inside the box (the target is the box for diffusion
samples and the exact mask for crop-and-paste samples; tau acts inside the box either way); it is averaged
over all pixels (the authors' code). With ``AnoGenDataModule(p=0.5)`` and ``perlin_p=0.5`` this is the paper's
mix: 1/2 Perlin (half of them clean), 1/4 generated, 1/4 clean normal. A batch without AnoGen fields (a plain
anomalib datamodule) gets Perlin on every row, as anomalib's DRAEM does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from anomalib.data import Batch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from anomalib.metrics import Evaluator
from anomalib.models import Draem
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from torch import nn

from anogen_aug.checks import check_bool, check_int, check_number, check_probability
from anogen_aug.losses import TauOf, check_tau

from ..batch import anomaly_targets
from ..evaluator import anogen_evaluator
from .loss import WeakDraemLoss
from .torch_model import SizedDraemModel


class WeakDraem(Draem):
    """DRAEM with AnoGen's weakly supervised training on bank anomalies.

    Everything but the training step is anomalib's `Draem` (networks, Adam 1e-4 with MultiStepLR [400, 600],
    evaluation with the softmax anomaly map); the default evaluator reports image / pixel AUROC, AUPR, F1Max
    and pixel AUPRO.

    Args:
        dtd_dir: An EXISTING folder of texture images (e.g. DTD) for the Perlin anomalies. None uses pure
            Perlin noise textures. Never downloads (anomalib's ``Draem`` downloads DTD when the folder is
            missing, also for ``dtd_dir=None``).
        tau: Weak-supervision threshold in (0, 1] on P(normal); `tau` reads and sets the loss's.
        perlin_p: Probability that a row becomes a Perlin anomaly.
        weak_on_perlin: Also apply the tau mask inside the (exact) Perlin masks, as the authors' code does;
            default False: exact masks are fully supervised.
        reconstruction_width, discrimination_width: Base widths of DRAEM's two sub-networks (anomalib's 128
            and 64, 97 M parameters); smaller widths give a cheaper DRAEM (CPU runs, tests).
        learning_rate: Adam's learning rate (anomalib's and the authors' 1e-4, divided by 10 at epochs 400 and
            600); a run of a few hundred steps learns little at 1e-4.
        enable_sspcab, sspcab_lambda, beta, pre_processor, post_processor, evaluator, visualizer: As anomalib's
            `Draem` (``pre_processor`` must not normalise).
    """

    def __init__(
        self,
        dtd_dir: Path | str | None = None,
        *,
        tau: float = 0.9,
        perlin_p: float = 0.5,
        weak_on_perlin: bool = False,
        reconstruction_width: int = 128,
        discrimination_width: int = 64,
        learning_rate: float = 1e-4,
        enable_sspcab: bool = False,
        sspcab_lambda: float = 0.1,
        beta: float | tuple[float, float] = (0.1, 1.0),
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if dtd_dir is not None and not Path(dtd_dir).is_dir():
            raise FileNotFoundError(f"`dtd_dir` must be an existing folder of texture images, got {dtd_dir}")
        check_tau(tau)
        perlin_p = check_probability(perlin_p, "perlin_p")
        check_int(reconstruction_width, "reconstruction_width")
        check_int(discrimination_width, "discrimination_width")
        self.learning_rate = check_number(learning_rate, "learning_rate", low=0.0, low_open=True)
        # Draem.__init__ is skipped on purpose: it downloads DTD when `dtd_dir` is missing (also for None) and
        # builds the full-width networks; the attributes it sets are set here the same way.
        AnomalibModule.__init__(
            self,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.augmenter = PerlinAnomalyGenerator(anomaly_source_path=dtd_dir, blend_factor=beta)
        self.model = SizedDraemModel(
            sspcab=enable_sspcab,
            reconstruction_width=reconstruction_width,
            discrimination_width=discrimination_width,
        )
        self.loss = WeakDraemLoss(tau=tau)
        self.sspcab = enable_sspcab
        if self.sspcab:
            self.sspcab_activations: dict = {}
            self.setup_sspcab()
            self.sspcab_loss = nn.MSELoss()
            self.sspcab_lambda = sspcab_lambda
        self.perlin_p = perlin_p
        self.weak_on_perlin = check_bool(weak_on_perlin, "weak_on_perlin")

    tau = TauOf("loss")  # the threshold lives in the loss; this reads and sets it

    #: Learns from the labelled anomalies of `AnoGenDataModule` (which refuses one-class models).
    consumes_anomalies = True

    @staticmethod
    def configure_evaluator():
        return anogen_evaluator()

    def configure_optimizers(self):
        """anomalib's: Adam on both sub-networks, MultiStepLR [400, 600] x 0.1, at `learning_rate`."""
        optimizer = torch.optim.Adam(params=self.model.parameters(), lr=self.learning_rate)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[400, 600], gamma=0.1)
        return [optimizer], [scheduler]

    def training_step(self, batch: Batch, *args, **kwargs) -> dict[str, torch.Tensor]:
        """One step of the AnoGen DRAEM recipe (see the module docstring)."""
        del args, kwargs
        image = batch.image.as_subclass(torch.Tensor)  # (B, 3, H, W) in [0, 1]
        rows = len(image)
        # 1. Fields and the rows that become Perlin anomalies (all rows for a batch without AnoGen fields).
        source, target_mask, weak_mask, generated = anomaly_targets(batch, image)
        perlin_rows = (
            torch.ones(rows, dtype=torch.bool) if generated is None else torch.rand(rows) < self.perlin_p
        )
        model_input = image.clone()
        # 2. Perlin / texture anomalies from the CLEAN source (half of them anomaly-free, as in anomalib).
        if perlin_rows.any():
            perlin_rows = perlin_rows.to(image.device)
            augmented, perlin_mask = self._perlin(source[perlin_rows])
            model_input[perlin_rows] = augmented
            target_mask = target_mask.clone()
            target_mask[perlin_rows] = perlin_mask
            weak_mask = weak_mask.clone()
            weak_mask[perlin_rows] = perlin_mask if self.weak_on_perlin else 0.0
        # 3. Reconstruct and segment; the reconstruction target is always the clean source.
        reconstruction, prediction = self.model(model_input)
        loss = self.loss(source, reconstruction, target_mask, prediction, weak_mask)
        if self.sspcab:
            loss = loss + self.sspcab_lambda * self.sspcab_loss(
                self.sspcab_activations["input"], self.sspcab_activations["output"]
            )
        self.log("train_loss", loss.item(), on_epoch=True, prog_bar=True)
        return {"loss": loss}

    def _perlin(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """anomalib's Perlin generator on ``(N, 3, H, W)`` images -> ``(augmented, mask (N, 1, H, W))``."""
        augmented, mask = self.augmenter(images)
        return augmented.to(images.dtype), mask.to(images.dtype)
