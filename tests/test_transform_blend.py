"""The transform's alpha blend, pinned: a soft mask edge mixes image and anomaly by its alpha, nothing else.

An estimated (diffusion) pixel mask is grown by a pixel and faded at its edge; there the result must lie strictly
between the input and the anomaly (``image * (1 - alpha) + content * alpha``), not equal either of them.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from anogen_aug import AnoGenAugment, Synthesis, write_bank
from anogen_aug.boxes import BoxSampler, boxes_to_mask
from anogen_aug.images import save_png


class WhiteSquare:
    """A protocol generator with an ESTIMATED mask: paints a white square inside each box."""

    name = "white-square"
    mask_exact = False

    def generate(self, image, boxes, *, generator=None) -> Synthesis:
        height, width = image.shape[-2:]
        box_mask = boxes_to_mask(boxes, height, width)
        square = torch.zeros(1, height, width)
        for x0, y0, x1, y1 in boxes.round().int().tolist():
            square[:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = 1
        result = torch.where(square.bool(), torch.ones_like(image), image)
        return Synthesis(image=result, box_mask=box_mask, mask=square, boxes=boxes)

    def settings(self) -> dict:
        return {}


def test_a_soft_mask_edge_blends_by_alpha(tmp_path):
    source = tmp_path / "normal.png"
    save_png(torch.full((3, 32, 32), 0.5), source)  # the bank's source: mid grey, with a white square put in
    sampler = BoxSampler(width_range=(0.5, 0.5), height_range=(0.5, 0.5), region=None)
    bank = write_bank(WhiteSquare(), [source], tmp_path / "bank", category="c", defect_type="d",
                      box_sampler=sampler, boxes_per_image=1, samples_per_box=1, progress=False)  # fmt: skip
    augment = AnoGenAugment(bank, p=1.0, match_source=False, generator=torch.Generator().manual_seed(0))
    black = augment(tv_tensors.Image(torch.zeros(3, 32, 32)))[0]
    assert (black == 1).any(), "the square's core is the anomaly itself"
    # The grown, faded ring around the square carries the source's grey at alpha in (0, 1): grey * alpha.
    grey = 128 / 255  # 0.5 as the bank's PNG stores it
    alphas = black[(black > 0) & (black < grey)].unique() / grey
    assert alphas.numel() > 0, "the faded edge mixes image and anomaly"
    # The same alphas on another input give image * (1 - alpha) + content * alpha, exactly.
    quarter = augment(tv_tensors.Image(torch.full((3, 32, 32), 0.25)))[0]
    ring = quarter[(quarter > 0.25) & (quarter < grey)].unique()
    expected = (0.25 * (1 - alphas) + grey * alphas).unique()
    assert torch.allclose(torch.sort(ring).values, torch.sort(expected).values, atol=1e-6)
