"""Supervised segmentation from generated anomalies: `AnoGenAugment` in a plain PyTorch training loop.

The protocol of later few-shot generation papers (AnomalyDiffusion, DualAnoDiff, SeaS): a small U-Net is
trained from scratch on normal images into which anomalies are put on the fly, then tested on real anomalies.
It is also the library's example of using the transform in your own training script::

    augment = AnoGenAugment(bank, p=0.5, mask_from="box_mask")       # the paper's weak label: the box
    train_set = SyntheticAnomalySet(normal_images, augment=augment)
    run = train_segmenter(train_set, epochs=20, tau=0.9, generator=torch.Generator().manual_seed(0))
    metrics = evaluate_segmenter(run.model, test_set)                 # items {"image", "gt_mask"}

How labels reach the loss: every training item carries ``gt_mask`` (the target) and ``box_mask`` (where the
target is only a box). With ``mask_from="box_mask"`` the augment writes the box into the `tv_tensors.Mask`,
and the item's ``box_mask`` is that box: `WeakSupervisionLoss` then drops the loss of confidently normal
pixels inside it (``tau < 1``). With ``mask_from="mask"`` (exact crop-and-paste masks) or a Perlin anomaly the
target is a pixel mask and ``box_mask`` is empty: plain, full supervision.

Perlin anomalies and the metrics F1-max and AUPRO come from anomalib (extra ``anogen-aug[anomalib]``).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from tqdm.auto import tqdm

from anogen_aug.bank import resize_source
from anogen_aug.images import load_image
from anogen_aug.losses import WeakSupervisionLoss, binary_focal_loss_per_pixel

logger = logging.getLogger(__name__)

LOSSES = ("focal", "bce")
IMAGE_SCORES = ("max", "topk")


def _require_anomalib(what: str):
    try:
        import anomalib  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{what} needs anomalib: pip install 'anogen-aug[anomalib]'") from error


# --- model -------------------------------------------------------------------------------------------------
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
        if depth < 2 or base_channels < 1:
            raise ValueError(
                f"`depth` must be >= 2 and `base_channels` >= 1, got {depth} and {base_channels}"
            )
        if not 0 < prior < 1:
            raise ValueError(f"`prior` must be in (0, 1), got {prior!r}")
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


# --- training data -----------------------------------------------------------------------------------------
class SyntheticAnomalySet(Dataset):
    """Normal images with anomalies put in on the fly: items ``{"image", "gt_mask", "box_mask"}``.

    Per item, with probability ``perlin_p`` a Perlin anomaly (anomalib's `PerlinAnomalyGenerator`, noise
    textures) is drawn; otherwise the image goes through ``augment`` (an `AnoGenAugment`, which adds a bank
    anomaly with its own ``p``); what is left stays normal.

    Args:
        images: Normal images: paths or ``(3, H, W)`` tensors in [0, 1] (loaded and resized once).
        augment: `AnoGenAugment` (or None: Perlin only). Its ``mask_from`` decides the label: ``"box_mask"``
            gives box labels (``box_mask`` = the box), ``"mask"`` exact pixel masks (``box_mask`` empty).
        perlin_p: Probability of a Perlin anomaly instead of ``augment``.
        size: Resize every image to ``(size, size)`` (None: keep; all images must then share one size).

    Items: ``image`` ``(3, H, W)`` in [0, 1]; ``gt_mask`` ``(1, H, W)`` {0, 1}, the training target;
    ``box_mask`` ``(1, H, W)`` {0, 1}, where the target is a box rather than the defect's pixels.
    Randomness comes from the global torch RNG, as in torchvision transforms (`train_segmenter` forks and
    seeds it from its ``generator``).
    """

    def __init__(self, images, *, augment=None, perlin_p: float = 0.0, size: int | None = None) -> None:
        if not 0.0 <= perlin_p <= 1.0:
            raise ValueError(f"`perlin_p` must be a probability in [0, 1], got {perlin_p!r}")
        if augment is None and perlin_p == 0.0:
            logger.warning("SyntheticAnomalySet without augment and perlin_p=0: every item is normal")
        self.images = [self._load(image, size) for image in images]
        if not self.images:
            raise ValueError("`images` must hold at least one normal image")
        self.augment = augment
        self.perlin_p = float(perlin_p)
        self.perlin = None
        if perlin_p > 0:
            _require_anomalib("Perlin anomalies")
            from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

            self.perlin = PerlinAnomalyGenerator(probability=1.0)

    @staticmethod
    def _load(image, size: int | None) -> torch.Tensor:
        image = load_image(image)
        # Resized as `write_bank` resizes sources, so AnoGenAugment finds the samples made from this image.
        return image if size is None else resize_source(image, (size, size))

    def _box_labelled(self, params: dict) -> bool:
        mask_from = getattr(self.augment, "mask_from", "mask")
        return mask_from == "box_mask" or (mask_from == "auto" and not params.get("mask_exact", True))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.images[index]
        empty = torch.zeros(1, *image.shape[-2:])
        if self.perlin is not None and float(torch.rand(())) < self.perlin_p:
            anomalous, mask = self.perlin(image)  # (3, H, W), (1, H, W)
            return {"image": anomalous.clamp(0, 1), "gt_mask": (mask > 0.5).float(), "box_mask": empty}
        if self.augment is None:
            return {"image": image, "gt_mask": empty, "box_mask": empty}
        (out, mask), params = self.augment.forward_with_params(image, tv_tensors.Mask(empty))
        gt_mask = mask.as_subclass(torch.Tensor).float()
        box_mask = gt_mask if params["apply"] and self._box_labelled(params) else empty
        return {"image": out, "gt_mask": gt_mask, "box_mask": box_mask}


# --- training ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmenterRun:
    """A finished training run: the model (in eval mode) and the loss of every step."""

    model: nn.Module
    losses: list[float]


def segmentation_criterion(*, tau: float = 0.9, loss: str = "focal") -> WeakSupervisionLoss:
    """The per-pixel loss with box weak supervision (AnoGen Sec. 3.3), averaged over all pixels.

    Call it as ``criterion(logits, gt_mask, box_mask, 1 - torch.sigmoid(logits))`` with ``(B, 1, H, W)``
    tensors: inside ``box_mask``, pixels with ``P(normal) >= tau`` get no loss; elsewhere every pixel counts.

    Args:
        tau: Threshold on P(normal), in (0, 1].
        loss: ``"focal"`` (sigmoid focal loss, gamma 2) or ``"bce"``.
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}")
    if loss == "focal":
        base = functools.partial(binary_focal_loss_per_pixel, gamma=2.0)
    else:
        base = functools.partial(F.binary_cross_entropy_with_logits, reduction="none")
    return WeakSupervisionLoss(base, tau=tau, reduction="mean")


def train_segmenter(
    data: Dataset | DataLoader,
    *,
    model: nn.Module | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 8,
    tau: float = 0.9,
    weak: bool = True,
    loss: str = "focal",
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> SegmenterRun:
    """Train a segmenter on items ``{"image", "gt_mask", "box_mask"}`` (e.g. a `SyntheticAnomalySet`).

    Args:
        data: A dataset (batched here with ``batch_size``, shuffled) or a ready DataLoader of such items.
        model: The model (default: a fresh `UNet`); ``(B, 3, H, W)`` -> logits ``(B, 1, H, W)``.
        epochs: Passes over ``data``.
        lr: AdamW learning rate (cosine decay to 0 over the run).
        batch_size: Batch size when ``data`` is a dataset.
        tau: Weak-supervision threshold on P(normal), in (0, 1]; 1.0 keeps (almost) every pixel.
        weak: Use the items' ``box_mask`` (False: every pixel fully supervised, boxes taken as masks).
        loss: ``"focal"`` or ``"bce"`` per pixel.
        device: Where to train.
        generator: Seeds everything of the run (model init, shuffling, augmentations): the global torch RNG
            (used by torchvision-style transforms and anomalib's Perlin generator) is forked, seeded from it
            and restored on return. None: the global RNG as it is.
        progress: Show a tqdm bar.

    Returns:
        `SegmenterRun` with the model in eval mode and the per-step losses.
    """
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"`epochs`, `lr`, `batch_size` must be positive, got {epochs}, {lr}, {batch_size}")
    criterion = segmentation_criterion(tau=tau, loss=loss)
    seed = None if generator is None else int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return _train(data, model, criterion, epochs, lr, batch_size, weak, torch.device(device), progress)


def _train(data, model, criterion, epochs, lr, batch_size, weak, device, progress) -> SegmenterRun:
    # 1. Model, data, optimiser; the learning rate decays along a cosine over every step of the run.
    model = (UNet() if model is None else model).to(device).train()
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=True)
    steps = epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses: list[float] = []
    bar = tqdm(total=steps, disable=not progress, desc="segmenter", unit="step")
    for _ in range(epochs):
        for batch in loader:
            # 2. Forward; box-labelled pixels that are already confidently normal drop out of the loss.
            image = batch["image"].to(device)  # (B, 3, H, W)
            gt_mask = batch["gt_mask"].to(device)  # (B, 1, H, W)
            box_mask = batch["box_mask"].to(device) if weak else torch.zeros_like(gt_mask)
            logits = model(image)  # (B, 1, H, W)
            value = criterion(logits, gt_mask, box_mask, 1 - torch.sigmoid(logits))
            # 3. Step.
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(value.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return SegmenterRun(model=model.eval(), losses=losses)


# --- evaluation --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentationMetrics:
    """Image AUROC, and pixel AUROC, AP (area under precision-recall), F1-max and AUPRO (FPR <= 0.3)."""

    image_auroc: float
    pixel_auroc: float
    pixel_ap: float
    pixel_f1_max: float
    pixel_aupro: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def image_scores(anomaly_map: torch.Tensor, *, image_score: str = "topk", top_k: int = 16) -> torch.Tensor:
    """One score per image from ``(N, 1, H, W)`` maps: the maximum or the mean of the ``top_k`` top pixels."""
    if image_score not in IMAGE_SCORES:
        raise ValueError(f"`image_score` must be one of {IMAGE_SCORES}, got {image_score!r}")
    flat = anomaly_map.flatten(1)  # (N, H * W)
    if image_score == "max":
        return flat.amax(dim=1)
    return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)


def score_maps(
    anomaly_map: torch.Tensor,
    gt_mask: torch.Tensor,
    gt_label: torch.Tensor | None = None,
    *,
    image_score: str = "topk",
    top_k: int = 16,
) -> SegmentationMetrics:
    """Metrics of anomaly maps against ground truth (torchmetrics AUROC/AP, anomalib F1Max/AUPRO).

    Args:
        anomaly_map: ``(N, 1, H, W)`` scores (higher = more anomalous).
        gt_mask: ``(N, 1, H, W)`` {0, 1}.
        gt_label: ``(N,)`` {0, 1}; default: whether ``gt_mask`` has a foreground pixel.
        image_score, top_k: How a map becomes an image score (`image_scores`).
    """
    _require_anomalib("F1-max and AUPRO")
    from anomalib.metrics import AUPRO, F1Max
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    if anomaly_map.shape != gt_mask.shape or anomaly_map.ndim != 4 or anomaly_map.shape[1] != 1:
        raise ValueError(
            f"`anomaly_map` and `gt_mask` must both be (N, 1, H, W), got {tuple(anomaly_map.shape)} "
            f"and {tuple(gt_mask.shape)}"
        )
    maps, target = anomaly_map.float().cpu(), (gt_mask.cpu() > 0).long()
    labels = target.flatten(1).amax(dim=1) if gt_label is None else torch.as_tensor(gt_label).long().cpu()
    if labels.unique().numel() < 2 or target.unique().numel() < 2:
        raise ValueError("evaluation needs both normal and anomalous images, and anomalous pixels")
    pixels, pixel_target = maps.flatten(), target.flatten()
    # anomalib metrics read named fields of a batch; they get a plain namespace with those fields.
    batch = SimpleNamespace(anomaly_map=maps[:, 0], gt_mask=target[:, 0].bool())
    f1_max = F1Max(fields=("anomaly_map", "gt_mask"))
    f1_max.update(batch)
    aupro = AUPRO(fields=("anomaly_map", "gt_mask"), fpr_limit=0.3)
    aupro.update(batch)
    return SegmentationMetrics(
        image_auroc=float(BinaryAUROC()(image_scores(maps, image_score=image_score, top_k=top_k), labels)),
        pixel_auroc=float(BinaryAUROC()(pixels, pixel_target)),
        pixel_ap=float(BinaryAveragePrecision()(pixels, pixel_target)),
        pixel_f1_max=float(f1_max.compute()),
        pixel_aupro=float(aupro.compute()),
    )


@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """P(anomalous) maps ``(N, 1, H, W)`` of images ``(N, 3, H, W)``, run on the model's device, on CPU."""
    model.eval()
    device = next(model.parameters()).device
    maps = [
        torch.sigmoid(model(images[i : i + batch_size].to(device))).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(maps)


def evaluate_segmenter(
    model: nn.Module, test_items, *, batch_size: int = 16, image_score: str = "topk", top_k: int = 16
) -> SegmentationMetrics:
    """Run ``model`` on test items ``{"image" (3, H, W), "gt_mask" (1, H, W)[, "gt_label"]}`` and score it.

    Args:
        model: ``(B, 3, H, W)`` -> logits ``(B, 1, H, W)``.
        test_items: A sequence or dataset of such dicts (normal images have an all-zero ``gt_mask``).
        batch_size: Inference batch size.
        image_score, top_k: How a map becomes an image score (`image_scores`).
    """
    items = [test_items[i] for i in range(len(test_items))]
    if not items:
        raise ValueError("`test_items` is empty")
    images = torch.stack([item["image"] for item in items])  # (N, 3, H, W)
    gt_mask = torch.stack([item["gt_mask"] for item in items])  # (N, 1, H, W)
    labels = None
    if all("gt_label" in item for item in items):
        labels = torch.tensor([int(item["gt_label"]) for item in items])
    maps = predict_maps(model, images, batch_size=batch_size)
    return score_maps(maps, gt_mask, labels, image_score=image_score, top_k=top_k)
