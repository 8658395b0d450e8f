"""Contact sheets: grid geometry, red boxes where the boxes are, saved PNGs, bank sheets."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.contact_sheet import STRIP, bank_contact_sheet, contact_sheet
from anogen_aug.images import save_png
from anogen_aug.paste import CopyPasteGenerator

RED = (255, 0, 0)


def _row(label: str = "row"):
    source = torch.full((3, 32, 32), 0.5)
    result = source.clone()
    result[:, 12:20, 12:20] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    mask = torch.zeros(1, 32, 32)
    mask[:, 12:20, 12:20] = 1
    return {
        "source": source,
        "result": result,
        "mask": mask,
        "boxes": torch.tensor([[8.0, 10.0, 24.0, 26.0]]),
        "label": label,
    }


def test_grid_size_red_box_outline_and_png(tmp_path):
    out = tmp_path / "sheet.png"
    sheet = contact_sheet([_row("a"), _row("b")], out=out, cell=64, title="demo")
    assert sheet.size == (3 * 64, 2 * STRIP + 2 * 64)
    with Image.open(out) as saved:
        assert saved.format == "PNG" and saved.size == sheet.size
    scale = 64 / 32
    for row in range(2):
        top = 2 * STRIP + row * 64
        left_edge = (64 + round(8 * scale), top + round(18 * scale))  # the box's left side, result column
        top_edge = (64 + round(16 * scale), top + round(10 * scale))
        assert sheet.getpixel(left_edge) == RED and sheet.getpixel(top_edge) == RED
        inside = (64 + round(16 * scale), top + round(18 * scale))
        assert sheet.getpixel(inside) == (0, 0, 255), "inside the box the result shows through"
        assert sheet.getpixel((round(16 * scale), top + round(18 * scale))) != RED, "no box on the source"
        mask_pixel = sheet.getpixel((128 + round(16 * scale), top + round(16 * scale)))
        assert mask_pixel[0] > 100 and mask_pixel[1] > 100 and mask_pixel[2] < 200, "mask overlaid in yellow"


def test_tuple_rows_missing_cells_and_aspect(tmp_path):
    wide = torch.full((3, 16, 32), 0.5)
    sheet = contact_sheet(
        [(None, wide, torch.ones(1, 16, 32), [[0, 0, 8, 8]])], columns=("source", "result"), cell=32
    )
    assert sheet.size == (64, STRIP + 32)
    assert sheet.getpixel((16, STRIP + 16)) == (64, 64, 64), "a missing source is a grey cell"
    assert sheet.getpixel((32 + 16, STRIP + 24)) == (0, 0, 0), "a wide image fills the top half of its cell"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="`rows`"):
        contact_sheet([])
    with pytest.raises(ValueError, match="`columns`"):
        contact_sheet([_row()], columns=("source", "heatmap"))
    with pytest.raises(TypeError, match="each row"):
        contact_sheet([torch.zeros(3, 8, 8)])


def test_bank_contact_sheet(tmp_path):
    image = torch.zeros(3, 16, 16)
    image[0] = 1.0
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    sources = [save_png(torch.full((3, 32, 32), 0.4 + 0.1 * i), tmp_path / f"n{i}.png") for i in range(2)]
    sampler = BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5))
    bank = write_bank(
        CopyPasteGenerator([image], [mask]), sources, tmp_path / "bank", category="c", defect_type="d",
        box_sampler=sampler, boxes_per_image=1, samples_per_box=2, progress=False,
    )  # fmt: skip
    path = bank_contact_sheet(tmp_path / "bank", out=tmp_path / "grid.png", max_rows=3, cell=48)
    with Image.open(path) as sheet:
        assert sheet.size == (3 * 48, 2 * STRIP + 3 * 48)
    with pytest.raises(ValueError, match="max_rows"):
        bank_contact_sheet(bank, out=tmp_path / "x.png", max_rows=0)
