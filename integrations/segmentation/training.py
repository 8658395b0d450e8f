"""`train_segmenter`: a plain PyTorch training loop with box weak supervision (AnoGen Sec. 3.3)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from anogen_aug.checks import check_bool, check_choice, check_int, check_number
from anogen_aug.losses import WeakSupervisionLoss, binary_focal_loss_per_pixel

from .model import UNet

LOSSES = ("focal", "bce")


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
    check_choice(loss, "loss", LOSSES)
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
    check_int(epochs, "epochs")
    check_number(lr, "lr", low=0.0, low_open=True)
    check_int(batch_size, "batch_size")
    check_bool(weak, "weak")
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
