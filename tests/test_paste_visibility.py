"""Paste samples show what they label (issue 12): visible thin defects, no cut edges, recorded area/contrast."""

from __future__ import annotations

import json

import pytest
import torch

from anogen_aug.bank import AnomalyBank, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.cli import main
from anogen_aug.contact_sheet import bank_contact_sheet, select_samples
from anogen_aug.images import load_image, quantize, save_png
from anogen_aug.paste import CopyPasteGenerator, PasteConfig
from anogen_aug.visibility import mask_visibility


def _textured(height: int = 96, width: int = 96, seed: int = 0) -> torch.Tensor:
    """Mid-grey texture (+-4 grey levels), like a tile surface."""
    noise = torch.rand(1, height, width, generator=torch.Generator().manual_seed(seed)) * (8 / 255)
    return (noise + 0.5).expand(3, -1, -1).clone()


def _crack(size: int = 48, width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark diagonal crack ``width`` pixels wide on the same grey: ``(image (3, s, s), mask (1, s, s))``."""
    image, mask = _textured(size, size, seed=1), torch.zeros(1, size, size)
    for i in range(4, size - 4):
        mask[:, i, i : i + width] = 1
    image = torch.where(mask.bool(), torch.full_like(image, 0.15), image)
    return image, mask


def test_visibility_is_the_mean_8bit_change_inside_the_mask():
    source, image, mask = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)
    image[:, 0, :2] = 10 / 255
    image[:, 3, 3] = 1.0  # outside the mask: not counted
    mask[:, 0, :3] = 1
    area, contrast = mask_visibility(source, image, mask)
    assert area == 3 and contrast == pytest.approx(20 / 3, abs=1e-3)
    assert mask_visibility(source, image, torch.zeros(1, 4, 4)) == (0, 0.0)


@pytest.mark.parametrize("width", [1, 3])
def test_a_thin_crack_pasted_with_defaults_is_visible(width):
    crack, mask = _crack(width=width)
    generator = CopyPasteGenerator([crack], [mask])
    config = generator.config
    for seed in range(8):
        source = _textured(seed=seed)
        result = generator.generate(
            source, torch.tensor([[20, 20, 60, 60]]), generator=torch.Generator().manual_seed(seed)
        )
        area, contrast = mask_visibility(source, result.image, result.mask)
        assert area >= config.min_mask_pixels and contrast >= config.min_contrast, (seed, area, contrast)


def test_feather_keeps_a_one_pixel_scratch_opaque():
    # Old rule: alpha 1 / (feather + 1) on every pixel of a 1 px line, a third of its contrast.
    crack, mask = _crack(width=1)
    still = dict(scale_range=(1.0, 1.0), rotation_range=(0.0, 0.0), flip_p=0.0, brightness_range=(1.0, 1.0))
    generator = CopyPasteGenerator([crack], [mask], config=PasteConfig(feather=2, min_contrast=0.0, **still))
    result = generator.generate(_textured(), torch.tensor([[10, 10, 50, 50]]), generator=torch.Generator())
    inside = result.mask.bool().expand(3, -1, -1)
    assert torch.equal(result.image[inside], quantize(torch.full((int(inside.sum()),), 0.15)))


def test_an_invisible_draw_is_redrawn_and_the_count_of_tries_is_bounded():
    # Two support items: one the colour of the background (invisible), one dark. Defaults redraw the first.
    flat = torch.full((3, 20, 20), 0.5)
    dark = torch.full((3, 20, 20), 0.1)
    masks = [torch.ones(1, 20, 20)] * 2
    box = torch.tensor([[10, 10, 40, 40]])
    source = torch.full((3, 64, 64), 0.5)
    redrawing = CopyPasteGenerator([flat, dark], masks)
    single = CopyPasteGenerator([flat, dark], masks, config=PasteConfig(max_tries=1))
    invisible = 0
    for seed in range(12):
        for generator, must_show in ((redrawing, True), (single, False)):
            result = generator.generate(source, box, generator=torch.Generator().manual_seed(seed))
            area, contrast = mask_visibility(source, result.image, result.mask)
            assert area > 0
            if must_show:
                assert contrast >= 10, seed
            else:
                invisible += contrast < 10
    assert invisible > 0, "with max_tries=1 the flat item is sometimes kept: the redraw is what fixes it"
    # Nothing visible to draw: the best try is returned after max_tries, never an error or an empty mask.
    hopeless = CopyPasteGenerator([flat], masks[:1], config=PasteConfig(max_tries=3))
    assert hopeless.generate(source, box, generator=torch.Generator().manual_seed(0)).mask.any()


def _longest_run_on_box_edges(mask: torch.Tensor, box: list[int]) -> int:
    x0, y0, x1, y1 = box
    inside = mask[0, y0:y1, x0:x1].bool()
    edges = [inside[0], inside[-1], inside[:, 0], inside[:, -1]]
    best = 0
    for edge in edges:
        run = 0
        for value in edge.tolist():
            run = run + 1 if value else 0
            best = max(best, run)
    return best


def test_no_sample_has_a_cut_edge():
    # A disc touches each side of its own box at one point; cut at the box edge it leaves a long straight chord.
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    disc = (((yy - 20) ** 2 + (xx - 20) ** 2) <= 20**2).float()[None]  # (1, 41, 41)
    image = torch.zeros(3, 41, 41)
    generator = CopyPasteGenerator([image], [disc], config=PasteConfig(scale_range=(1.0, 1.6), blend="hard"))
    for seed in range(16):
        box = [8 + seed, 10, 8 + seed + 24 + seed % 5, 40]
        result = generator.generate(
            torch.ones(3, 64, 64), torch.tensor([box]), generator=torch.Generator().manual_seed(seed)
        )
        side = min(box[2] - box[0], box[3] - box[1])
        assert _longest_run_on_box_edges(result.mask, box) < side // 2, seed
        rows, cols = result.mask[0].any(1).nonzero(), result.mask[0].any(0).nonzero()
        height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert abs(height - width) <= 1, "scaled to fit, never squeezed: the disc stays round"


def _bank(tmp_path, count: int = 3):
    sources = []
    for i in range(count):
        save_png(_textured(64, 64, seed=i), tmp_path / f"normal{i}.png")
        sources.append(tmp_path / f"normal{i}.png")
    crack, mask = _crack(32, width=2)
    generator = CopyPasteGenerator([crack], [mask])
    sampler = BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5))
    return write_bank(
        generator,
        sources,
        tmp_path / "bank",
        category="tile",
        defect_type="crack",
        box_sampler=sampler,
        progress=False,
    )


def test_records_carry_mask_area_and_contrast_and_show_sorts_and_filters(tmp_path):
    bank = _bank(tmp_path)
    for index, record in enumerate(bank.records):
        sample = bank[index]
        area, contrast = mask_visibility(bank.load_source(index), sample.image, sample.mask)
        assert record["mask_area"] == area == int(sample.mask.sum()) and record["contrast"] == contrast
    by_contrast = select_samples(bank, max_rows=100, sort="contrast")
    contrasts = [bank.records[i]["contrast"] for i in by_contrast]
    assert contrasts == sorted(contrasts) and len(by_contrast) == len(bank)
    cut = sorted(contrasts)[len(contrasts) // 2]
    kept = select_samples(bank, max_rows=100, min_contrast=cut)
    assert set(kept) == {i for i, r in enumerate(bank.records) if r["contrast"] >= cut}
    area = max(r["mask_area"] for r in bank.records)
    assert [bank.records[i]["mask_area"] for i in select_samples(bank, max_rows=100, min_area=area)] == [
        area
    ] * sum(r["mask_area"] == area for r in bank.records)
    sheet = tmp_path / "sheet.png"
    assert (
        main(["show", str(bank.root), "--png", str(sheet), "--sort", "mask_area", "--min-contrast", "1"]) == 0
    )
    assert load_image(sheet).shape[-1] == 3 * 160
    with pytest.raises(ValueError, match="no sample"):
        bank_contact_sheet(bank, out=tmp_path / "none.png", min_area=10**9)


def test_a_bank_written_before_the_fields_still_reads_and_sorts(tmp_path):
    bank = _bank(tmp_path, count=2)
    manifest = bank.root / "manifest.jsonl"
    expected = {r["id"]: (r["mask_area"], r["contrast"]) for r in bank.records}
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for record in lines:
        del record["mask_area"], record["contrast"]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in lines))
    old = AnomalyBank(bank.root)
    assert len(old) == len(lines) and "contrast" not in old.records[0]
    order = select_samples(old, max_rows=100, sort="contrast")
    assert [expected[old.records[i]["id"]][1] for i in order] == sorted(v[1] for v in expected.values())
    bank_contact_sheet(old, out=tmp_path / "old.png", sort="mask_area", min_contrast=1.0)
