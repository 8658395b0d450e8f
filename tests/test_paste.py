"""Crop-and-paste generator: exact masks, untouched background, determinism, fitting, input checks."""

from __future__ import annotations

import json

import pytest
import torch

from anogen_aug.images import quantize, save_png
from anogen_aug.paste import CopyPasteGenerator, PasteConfig
from anogen_aug.synthesis import AnomalyGeneratorProtocol, Synthesis

BOXES = torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 62.0]])


def _support(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A pure red rectangle with a thin arm (so rotation and scaling show), on black."""
    image = torch.zeros(3, size, size)
    image[0] = 1.0
    mask = torch.zeros(1, size, size)
    mask[:, 8:20, 10:26] = 1
    mask[:, 14, 4:30] = 1
    return image, mask


def _grey_image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A grey-blue image that is NOT on the 8-bit grid, so 'bit-identical' is a strong claim."""
    noise = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 0.05
    return noise + torch.tensor([0.3, 0.5, 0.6])[:, None, None]


@pytest.mark.parametrize("blend", ["feather", "hard"])
def test_mask_is_exactly_the_changed_pixels_and_outside_is_bit_identical(blend):
    image, mask = _support()
    generator = CopyPasteGenerator([image], [mask], config=PasteConfig(blend=blend, feather=3))
    source = _grey_image()
    for seed in range(6):
        result = generator.generate(source, BOXES, generator=torch.Generator().manual_seed(seed))
        assert isinstance(result, Synthesis)
        placed = result.mask.bool()
        changed = (result.image != source).any(0, keepdim=True)
        assert placed.any()
        assert torch.equal(changed, placed), f"seed {seed}: changed pixels differ from the mask"
        assert not (placed & ~result.box_mask.bool()).any(), "the mask leaks out of the boxes"
        outside = ~result.box_mask.bool().expand(3, -1, -1)
        assert torch.equal(result.image[outside], source[outside])
        inside = placed.expand(3, -1, -1)
        assert torch.equal(result.image[inside], quantize(result.image)[inside]), (
            "pasted pixels on the 8-bit grid"
        )
        assert torch.equal(result.boxes, BOXES)


def test_same_seed_same_bytes_other_seed_differs():
    image, mask = _support()
    generator = CopyPasteGenerator([image], [mask])
    source = quantize(_grey_image())
    first = generator.generate(source, BOXES, generator=torch.Generator().manual_seed(7))
    again = generator.generate(source, BOXES, generator=torch.Generator().manual_seed(7))
    other = generator.generate(source, BOXES, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.image, again.image) and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.image, other.image)
    assert torch.equal(first.image, quantize(first.image)), "an 8-bit input stays entirely on the 8-bit grid"


def test_seamless_blend_changes_only_inside_the_mask():
    textured = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    _, mask = _support()
    generator = CopyPasteGenerator([textured], [mask], config=PasteConfig(blend="seamless"))
    source = _grey_image()
    result = generator.generate(source, BOXES, generator=torch.Generator().manual_seed(0))
    changed = (result.image != source).any(0, keepdim=True)
    assert not (changed & ~result.mask.bool()).any()
    assert changed.sum() > 0.5 * result.mask.sum(), "Poisson cloning of a texture changes most mask pixels"


def test_fit_box_scales_to_the_box_and_fit_none_keeps_pixel_size():
    colour = torch.tensor([0.2, 0.8, 0.4])[:, None, None].expand(3, 10, 20)
    still = dict(scale_range=(1.0, 1.0), rotation_range=(0.0, 0.0), flip_p=0.0, brightness_range=(1.0, 1.0))
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])  # 40 x 40
    fitted = CopyPasteGenerator([colour], [torch.ones(1, 10, 20)], config=PasteConfig(blend="hard", **still))
    result = fitted.generate(torch.zeros(3, 64, 64), box, generator=torch.Generator().manual_seed(0))
    assert result.mask.sum() == 20 * 40, "a 10 x 20 anomaly fitted to a 40 x 40 box becomes 20 x 40"
    inside = result.mask.bool().expand(3, -1, -1)
    assert torch.allclose(
        result.image[inside], quantize(colour[:, :1, :1].expand(3, 20, 40)).flatten(), atol=0
    )
    native = CopyPasteGenerator(
        [colour], [torch.ones(1, 10, 20)], config=PasteConfig(blend="hard", fit="none", **still)
    )
    result = native.generate(torch.zeros(3, 64, 64), box, generator=torch.Generator().manual_seed(0))
    assert result.mask.sum() == 10 * 20


def test_an_oversized_anomaly_is_scaled_to_fit_its_box_not_cut():
    image, mask = _support()
    generator = CopyPasteGenerator([image], [mask], config=PasteConfig(scale_range=(1.3, 1.3)))
    for seed in range(4):
        result = generator.generate(_grey_image(), BOXES[:1], generator=torch.Generator().manual_seed(seed))
        assert result.mask.any() and not (result.mask.bool() & ~result.box_mask.bool()).any()
    # fit="none" with a 10 x 40 bar into a 20 x 20 box: shrunk to 5 x 20 (its outline), not cut to 10 x 20.
    bar = CopyPasteGenerator(
        [torch.ones(3, 10, 40)],
        [torch.ones(1, 10, 40)],
        config=PasteConfig(fit="none", blend="hard", rotation_range=(0.0, 0.0), scale_range=(1.0, 1.0)),
    )
    result = bar.generate(torch.zeros(3, 64, 64), torch.tensor([[10.0, 10.0, 30.0, 30.0]]))
    assert result.mask.sum() == 5 * 20


def test_a_thin_defect_shrunk_into_a_small_box_never_vanishes():
    # A frame of 1 px lines (20 x 20) fitted into a 5 x 5 box: a plain bilinear threshold samples between the
    # lines and loses them all; the mask resize keeps its peak pixels instead (masks rule "majority_nonempty").
    image, mask = torch.ones(3, 32, 32), torch.zeros(1, 32, 32)
    mask[:, 4, 4:24] = 1
    mask[:, 4:24, 4] = 1
    still = dict(scale_range=(1.0, 1.0), rotation_range=(0.0, 0.0), flip_p=0.0, brightness_range=(1.0, 1.0))
    generator = CopyPasteGenerator([image], [mask], config=PasteConfig(blend="hard", **still))
    box = torch.tensor([[10.0, 10.0, 15.0, 15.0]])
    result = generator.generate(torch.zeros(3, 32, 32), box, generator=torch.Generator().manual_seed(0))
    assert result.mask.any()
    assert not (result.mask.bool() & ~result.box_mask.bool()).any()
    assert torch.equal((result.image != 0).any(0, keepdim=True), result.mask.bool())


def test_support_items_are_all_used_and_files_work(tmp_path):
    red, mask = _support()
    blue = red.roll(2, dims=0)  # pure blue
    save_png(blue, tmp_path / "blue.png")
    save_png(mask, tmp_path / "blue_mask.png")
    generator = CopyPasteGenerator([red, tmp_path / "blue.png"], [mask, tmp_path / "blue_mask.png"])
    colours = set()
    for seed in range(12):
        result = generator.generate(
            torch.zeros(3, 64, 64), BOXES[:1], generator=torch.Generator().manual_seed(seed)
        )
        pasted = result.image[:, result.mask[0].bool()]
        colours.add(int(pasted.mean(1).argmax()))
    assert colours == {0, 2}, "both support anomalies are drawn"


def test_protocol_settings_and_device_of_result():
    generator = CopyPasteGenerator(*map(lambda t: [t], _support()))
    assert isinstance(generator, AnomalyGeneratorProtocol)
    assert generator.name == "paste" and generator.mask_exact is True
    settings = json.loads(json.dumps(generator.settings()))
    assert settings["config"]["blend"] == "feather" and settings["num_support"] == 1
    assert len(settings["support_hashes"][0]) == 16


def test_support_inputs_are_checked_with_clear_messages():
    image, mask = _support()
    with pytest.raises(ValueError, match="at least one"):
        CopyPasteGenerator([], [])
    with pytest.raises(ValueError, match="one mask per image"):
        CopyPasteGenerator([image, image], [mask])
    with pytest.raises(ValueError, match=r"support_masks\[1\].*32x32.*16x16"):
        CopyPasteGenerator([image, image], [mask, torch.ones(1, 16, 16)])
    with pytest.raises(ValueError, match=r"support_masks\[0\]` is empty"):
        CopyPasteGenerator([image], [torch.zeros(1, 32, 32)])
    with pytest.raises(TypeError, match="sequence"):
        CopyPasteGenerator("crack.png", "crack_mask.png")
    with pytest.raises(TypeError, match="PasteConfig"):
        CopyPasteGenerator([image], [mask], config={"blend": "hard"})
    with pytest.raises(ValueError, match="boxes"):
        CopyPasteGenerator([image], [mask]).generate(
            torch.zeros(3, 32, 32), torch.tensor([[0.0, 0.0, 40.0, 8.0]])
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("blend", "poisson"),
        ("fit", "stretch"),
        ("flip_p", 1.5),
        ("feather", -1),
        ("scale_range", (0.0, 1.0)),
        ("rotation_range", (10.0, -10.0)),
        ("brightness_range", (1.0,)),
    ],
)
def test_config_is_validated(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        PasteConfig(**{field: value})


def test_config_normalises_lists_from_json():
    config = PasteConfig(**json.loads(json.dumps({"scale_range": [0.5, 1], "rotation_range": [0, 0]})))
    assert config.scale_range == (0.5, 1.0) and config.rotation_range == (0.0, 0.0)
