"""Window geometry of stage 2: which part of an image is generated, at the model's resolution, and where.

The authors resize the whole image to the model's resolution. Local mode (beyond the paper, see DESIGN.md)
generates in a window around the boxes instead, so a large image with a small defect costs the same as a
model-sized one and keeps its detail. A window is ``(left, top, right, bottom)`` in whole pixels of its image.
"""

from __future__ import annotations

import logging
import math

import torch

from ..boxes import boxes_to_mask
from ..images import resize_image

logger = logging.getLogger(__name__)

Window = tuple[int, int, int, int]


def choose_window(
    boxes: torch.Tensor, height: int, width: int, *, resolution: int, context: float, local: bool = True
) -> Window:
    """The window of an image to generate in: the whole image, or in local mode a square around the boxes.

    Args:
        boxes: ``(N, 4)`` XYXY pixels of the image.
        height, width: The image's size.
        resolution: The model's pixel side.
        context: Window side as a multiple of the boxes' extent (the side is at least ``resolution``).
        local: ``False`` always gives the whole image (the authors' behaviour); so does an image no larger
            than ``resolution``.

    Returns:
        ``(left, top, right, bottom)``: the whole image, or a window of side ``max(resolution, context *
        extent)`` (clipped to the image) centred on the boxes' union, shifted into the image, holding every box.
    """
    if not local or max(height, width) <= resolution:
        return 0, 0, width, height
    x0, y0 = math.floor(boxes[:, 0].min()), math.floor(boxes[:, 1].min())
    x1, y1 = math.ceil(boxes[:, 2].max()), math.ceil(boxes[:, 3].max())
    side = max(resolution, math.ceil(context * max(x1 - x0, y1 - y0)))
    win_w, win_h = min(side, width), min(side, height)
    # Centred on the boxes' union, then shifted into the image; win >= union extent, so it still holds them.
    left = min(max(round((x0 + x1 - win_w) / 2), x1 - win_w, 0), x0, width - win_w)
    top = min(max(round((y0 + y1 - win_h) / 2), y1 - win_h, 0), y0, height - win_h)
    logger.debug(
        "window %s for boxes %s in a %dx%d image", (left, top, win_w, win_h), boxes.tolist(), width, height
    )
    return left, top, left + win_w, top + win_h


def crop_window(image: torch.Tensor, window: Window, resolution: int) -> torch.Tensor:
    """The window of ``image`` ``(3, H, W)`` resized (bicubic, antialiased) to ``(1, 3, resolution, resolution)``."""
    left, top, right, bottom = window
    return resize_image(image[None, :, top:bottom, left:right].float(), (resolution, resolution))


def place_window(image: torch.Tensor, decoded: torch.Tensor, window: Window) -> torch.Tensor:
    """A copy of ``image`` ``(3, H, W)`` with ``decoded`` ``(3, r, r)`` resized (bicubic) into ``window``."""
    left, top, right, bottom = window
    placed = image.clone()
    placed[:, top:bottom, left:right] = resize_image(decoded, (bottom - top, right - left)).to(image)
    return placed


def latent_keep_mask(boxes: torch.Tensor, window: Window, latent_size: tuple[int, int]) -> torch.Tensor:
    """``keep`` ``(1, h, w)`` of a window's latents: 0 on cells that touch any box, 1 elsewhere.

    Any overlap counts, as the authors' box mask resized to latent size and tested with ``!= 0``.

    Args:
        boxes: ``(N, 4)`` XYXY pixels of the full image.
        window: The window the latents encode.
        latent_size: ``(h, w)`` of the latents.
    """
    left, top, right, bottom = window
    h, w = latent_size
    scale = torch.tensor([w / (right - left), h / (bottom - top)] * 2)
    latent_boxes = (boxes - torch.tensor([left, top, left, top])) * scale  # (N, 4) in latent cells
    # Round outwards to whole cells, ignoring float noise at cell edges.
    latent_boxes[:, :2] = (latent_boxes[:, :2] + 1e-4).floor()
    latent_boxes[:, 2:] = (latent_boxes[:, 2:] - 1e-4).ceil()
    return 1 - boxes_to_mask(latent_boxes, h, w)
