"""Boxes: validation, box <-> mask, the packaged size table and `BoxSampler`."""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import pickle

import numpy as np
import pytest
import torch

from anogen_aug.boxes import (
    BoxSampler,
    allowed_region,
    box_range_table,
    boxes_to_mask,
    check_boxes,
    check_region,
    foreground_mask,
    mask_to_box,
    otsu_threshold,
)

MVTEC = [
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def disc_image(height: int, width: int, *, bright_disc: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A disc (radius 0.3 * side) off-centre on a flat background, with mild noise: (3, H, W) and (H, W) bool."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    radius = 0.3 * min(height, width)
    disc = (yy - 0.5 * height) ** 2 + (xx - 0.45 * width) ** 2 < radius**2
    value = torch.where(disc, 0.8, 0.15) if bright_disc else torch.where(disc, 0.15, 0.8)
    noise = 0.03 * torch.rand(3, height, width, generator=seeded(0))
    return (value + noise).clamp(0, 1), disc


def fraction_inside(boxes: torch.Tensor, region: torch.Tensor) -> list[float]:
    region = region.reshape(region.shape[-2:]).bool()
    out = []
    for box in boxes:
        one = boxes_to_mask(box[None], *region.shape)[0].bool()
        out.append(float((one & region).sum() / one.sum()))
    return out


# --- validation and conversions -----------------------------------------------------------------------------


def test_check_boxes_accepts_one_box_and_refuses_bad_ones():
    assert check_boxes([1, 2, 5, 6], 10, 10).shape == (1, 4)
    with pytest.raises(ValueError, match="outside the image"):
        check_boxes([[0, 0, 11, 5]], 10, 10)
    with pytest.raises(ValueError, match="zero area"):
        check_boxes([[3, 3, 3, 8]], 10, 10)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        check_boxes(torch.zeros(0, 4), 10, 10)


def test_boxes_to_mask_and_back():
    boxes = torch.tensor([[2.0, 3.0, 7.0, 5.0], [4.5, 1.2, 6.0, 2.0]])
    mask = boxes_to_mask(boxes, 8, 10)
    assert mask.shape == (1, 8, 10)
    assert mask[0, 3:5, 2:7].all() and mask[0, 1:2, 4:6].all()
    assert mask.sum() == 5 * 2 + 2 * 1
    assert mask_to_box(boxes_to_mask(boxes[:1], 8, 10)).tolist() == boxes[0].tolist()


# --- the packaged table --------------------------------------------------------------------------------------


def test_table_is_package_data_with_source_and_valid_ranges():
    text = importlib.resources.files("anogen_aug").joinpath("data", "box_ranges.json").read_text()
    raw = json.loads(text)
    assert "gaobb/AnoGen" in raw["_source"]
    table = box_range_table()
    assert not any(key.startswith("_") for key in table)
    assert set(MVTEC) <= set(table)
    assert table["default"]["default"]["width"] == [0.05, 0.25]
    assert table["default"]["bad"]["height"] == [0.05, 0.2]
    assert table["pcb1"]["bad"]["width"] == [0.05, 0.2]
    assert len(table["zipper"]) == 7 and len(table["cable"]) == 8
    for defects in table.values():
        for entry in defects.values():
            for key in ("width", "height"):
                lo, hi = entry[key]
                assert 0 < lo <= hi <= 1


def test_from_table_uses_the_authors_ranges():
    sampler = BoxSampler.from_table("bottle", "broken_large", min_inside=0.5)
    assert sampler.width_range == (0.2, 0.25) and sampler.height_range == (0.25, 0.8)
    assert sampler.min_inside == 0.5
    assert BoxSampler.from_table("tile", "crack").height_range == (0.2, 1.0)
    boxes = sampler.sample((256, 256), 200, generator=seeded(0))
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert widths.min() >= math.ceil(0.2 * 256) and widths.max() <= math.floor(0.25 * 256)
    assert heights.min() >= 64 and heights.max() <= math.floor(0.8 * 256)


def test_from_table_unknown_names_raise_or_fall_back(caplog):
    with pytest.raises(ValueError, match="broken_large, broken_small, contamination"):
        BoxSampler.from_table("bottle", "dent")
    with pytest.raises(ValueError, match="known categories: .*bottle"):
        BoxSampler.from_table("bottel", "broken_large")
    with caplog.at_level(logging.WARNING, logger="anogen_aug.boxes"):
        sampler = BoxSampler.from_table("bottel", "dent", fallback=True)
    assert sampler.width_range == (0.05, 0.25)
    assert "default" in caplog.text


# --- sampling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (256, 200)])
@pytest.mark.parametrize(
    ("width_range", "height_range"), [((0.05, 0.25), (0.05, 0.25)), ((0.1, 0.4), (0.3, 0.3))]
)
def test_boxes_lie_inside_with_sizes_in_range(height, width, width_range, height_range):
    sampler = BoxSampler(width_range=width_range, height_range=height_range)
    for seed in range(40):
        boxes = sampler.sample(torch.zeros(3, height, width), 3, generator=seeded(seed))
        assert boxes.shape == (3, 4) and boxes.dtype == torch.float32
        check_boxes(boxes, height, width)  # inside, non-zero area
        assert torch.equal(boxes, boxes.round())
        w, h = (boxes[:, 2] - boxes[:, 0]) / width, (boxes[:, 3] - boxes[:, 1]) / height
        # integer sizes inside the range, except when the range holds no integer size (then the nearest)
        assert (w >= width_range[0] - 1 / width).all() and (w <= width_range[1] + 1e-6).all()
        assert (h >= height_range[0] - 1 / height).all() and (h <= height_range[1] + 1 / height).all()


def test_positions_cover_the_image():
    boxes = BoxSampler(width_range=(0.1, 0.1), height_range=(0.1, 0.1)).sample(
        (100, 100), 400, generator=seeded(1)
    )
    assert boxes[:, 0].min() <= 5 and boxes[:, 2].max() >= 95
    assert boxes[:, 1].min() <= 5 and boxes[:, 3].max() >= 95


def test_same_seed_same_boxes_and_pickles():
    sampler = BoxSampler(region="auto", rotation=True)
    image, _ = disc_image(64, 64)
    first = sampler.sample(image, 5, generator=seeded(7))
    assert torch.equal(first, sampler.sample(image, 5, generator=seeded(7)))
    assert not torch.equal(first, sampler.sample(image, 5, generator=seeded(8)))
    clone = pickle.loads(pickle.dumps(sampler))
    assert torch.equal(first, clone.sample(image, 5, generator=seeded(7)))
    masked = BoxSampler(region=torch.ones(1, 64, 64))
    assert torch.equal(pickle.loads(pickle.dumps(masked)).region, masked.region)
    assert json.loads(json.dumps(masked.to_dict()))["region"] == "mask"


def test_region_mask_is_respected():
    region = torch.zeros(1, 64, 96)
    region[:, 10:40, 50:90] = 1  # a window in the right half
    sampler = BoxSampler(width_range=(0.1, 0.2), height_range=(0.1, 0.3), region=region)
    boxes = torch.cat([sampler.sample(torch.zeros(3, 64, 96), 4, generator=seeded(s)) for s in range(25)])
    inside = fraction_inside(boxes, region)
    assert min(inside) >= 0.75
    # a region given at another size (a 256 px template) is resized to the image
    small = BoxSampler(
        width_range=(0.1, 0.2),
        height_range=(0.1, 0.2),
        region=torch.nn.functional.interpolate(region[None], size=(128, 192))[0],
    )
    assert min(fraction_inside(small.sample((64, 96), 20, generator=seeded(0)), region)) >= 0.75
    # the per-call region overrides the sampler's
    left = torch.zeros(1, 64, 96)
    left[:, :, :40] = 1
    boxes = sampler.sample((64, 96), 20, region=left, generator=seeded(3))
    assert min(fraction_inside(boxes, left)) >= 0.75


def test_regions_are_checked_once_and_fitted_to_each_image():
    assert check_region(None) is None and check_region("auto") == "auto"
    template = check_region(np.eye(4, dtype=np.uint8) * 255)  # array, any non-zero pixel counts
    assert template.shape == (1, 4, 4) and template.dtype == torch.float32 and template.sum() == 4
    with pytest.raises(ValueError, match="`region` is empty"):
        check_region(torch.zeros(8, 8))
    assert allowed_region(None, (32, 32), 32, 32) is None
    fitted = allowed_region(template, (8, 8), 8, 8)  # nearest: each template pixel becomes 2 x 2
    assert torch.equal(fitted, torch.eye(4).repeat_interleave(2, 0).repeat_interleave(2, 1))
    image, disc = disc_image(64, 64)
    assert torch.equal(allowed_region("auto", image, 64, 64), foreground_mask(image)[0])
    with pytest.raises(ValueError, match="auto"):
        allowed_region("auto", (64, 64), 64, 64)


def test_min_inside_is_a_real_constraint():
    region = torch.zeros(1, 64, 64)
    region[:, 20:44, 20:44] = 1
    loose = BoxSampler(region=region, min_inside=0.0).sample((64, 64), 200, generator=seeded(0))
    assert min(fraction_inside(loose, region)) < 0.75  # without the constraint boxes fall outside


@pytest.mark.parametrize(
    ("height", "width", "bright_disc"), [(96, 128, True), (96, 128, False), (300, 260, True)]
)
def test_auto_region_finds_the_object(height, width, bright_disc):
    image, disc = disc_image(height, width, bright_disc=bright_disc)
    foreground = foreground_mask(image)[0].bool()
    iou = (foreground & disc).sum() / (foreground | disc).sum()
    assert iou > 0.95
    boxes = BoxSampler(region="auto").sample(image, 30, generator=seeded(2))
    assert min(fraction_inside(boxes, disc)) >= 0.7
    # the same draws anywhere would often leave the disc
    anywhere = BoxSampler().sample(image, 30, generator=seeded(2))
    assert min(fraction_inside(anywhere, disc)) < 0.5


def test_auto_region_of_a_flat_image_is_everything():
    assert foreground_mask(torch.full((3, 32, 48), 0.5)).all()
    boxes = BoxSampler(region="auto").sample(torch.full((3, 32, 48), 0.5), 3, generator=seeded(0))
    check_boxes(boxes, 32, 48)


def test_rotation_gives_bigger_boxes_inside_the_image():
    plain = BoxSampler(width_range=(0.25, 0.25), height_range=(0.1, 0.1))
    rotated = BoxSampler(width_range=(0.25, 0.25), height_range=(0.1, 0.1), rotation=True)

    def area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    straight = torch.cat([plain.sample((256, 256), 1, generator=seeded(s)) for s in range(100)])
    turned = torch.cat([rotated.sample((256, 256), 1, generator=seeded(s)) for s in range(100)])
    check_boxes(turned, 256, 256)
    assert torch.equal(area(straight), torch.full((100,), 64.0 * 26))
    assert area(turned).mean() > 1.5 * area(straight).mean()
    sides = torch.maximum(turned[:, 2] - turned[:, 0], turned[:, 3] - turned[:, 1])
    assert sides.max() <= math.ceil(math.hypot(64, 26)) + 1
    # the rotated box keeps the centre of the drawn rectangle unless clipped by the border
    centres = (turned[:, :2] + turned[:, 2:]) / 2
    unclipped = (turned[:, 0] > 0) & (turned[:, 1] > 0) & (turned[:, 2] < 256) & (turned[:, 3] < 256)
    straight_centres = (straight[:, :2] + straight[:, 2:]) / 2
    assert (centres - straight_centres)[unclipped].abs().max() <= 1.0


def test_impossible_region_raises_after_max_tries():
    region = torch.zeros(1, 64, 64)
    region[:, :4, :4] = 1
    sampler = BoxSampler(width_range=(0.3, 0.4), height_range=(0.3, 0.4), region=region, max_tries=50)
    with pytest.raises(ValueError, match="50 tries"):
        sampler.sample((64, 64), generator=seeded(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width_range": (0.3, 0.2)}, "width_range"),
        ({"height_range": (0.0, 0.2)}, "height_range"),
        ({"width_range": 0.2}, "width_range"),
        ({"min_inside": 1.5}, "min_inside"),
        ({"max_tries": 0}, "max_tries"),
        ({"region": torch.zeros(1, 8, 8)}, "empty"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BoxSampler(**kwargs)


def test_bad_sample_arguments_raise():
    with pytest.raises(ValueError, match="num_boxes"):
        BoxSampler().sample((64, 64), 0)
    with pytest.raises(ValueError, match="auto"):
        BoxSampler(region="auto").sample((64, 64))
    with pytest.raises(ValueError, match="image"):
        BoxSampler().sample(torch.zeros(1, 3, 64, 64))


def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(500, 0.1), np.full(300, 0.7)]) + np.random.default_rng(0).normal(
        0, 0.02, 800
    )
    threshold = otsu_threshold(values)
    assert 0.2 < threshold < 0.6
    assert 6 < otsu_threshold(np.r_[np.full(50, 5.0), np.full(50, 9.0)]) < 8  # range from the values
    assert otsu_threshold(np.full(10, 0.3)) is None and otsu_threshold([]) is None
