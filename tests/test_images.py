"""Image and mask loading: grey, RGBA, palette and 16-bit are converted; bad files are clear errors."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from anogen_aug.images import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_PIXELS_ENV,
    content_hash,
    load_image,
    load_mask,
    max_image_pixels,
    resize_image,
    save_png,
)


def test_grey_rgba_palette_and_16bit_are_converted(tmp_path):
    grey = np.full((5, 7), 128, np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    deep = np.full((5, 7), 65535 // 2, np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    for name, value in [("grey", 128 / 255), ("deep", 0.5), ("palette", 128 / 255)]:
        image = load_image(tmp_path / f"{name}.png")
        assert image.shape == (3, 5, 7) and image.dtype == torch.float32
        assert torch.allclose(image, torch.full_like(image, value), atol=1e-3), name
    rgb = load_image(tmp_path / "rgba.png")
    assert rgb.shape == (3, 5, 7) and torch.allclose(rgb[0], torch.full((5, 7), 200 / 255))


def test_missing_and_broken_files_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="`support`"):
        load_image(tmp_path / "none.png", name="support")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "bad.png")


def test_binary_masks_keep_every_nonzero_pixel_and_png_round_trip(tmp_path):
    expected = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    for top, dtype in [(1, np.uint8), (255, np.uint8), (65535, np.uint16), (1, bool), (1.0, np.float32)]:
        assert torch.equal(load_mask(np.array([[0, top], [top, 0]], dtype)), expected), (top, dtype)
    assert torch.equal(load_mask(torch.tensor([[0, 7], [7, 0]])), expected), "one non-zero value: binary"
    assert torch.equal(
        load_mask(np.array([[0, 1], [255, 0]], np.uint8)), torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    )
    image = torch.rand(3, 6, 4)
    save_png(image, tmp_path / "x.png")
    again = load_image(tmp_path / "x.png")
    assert torch.allclose(again, (image * 255).round() / 255, atol=1e-6)
    assert content_hash(again) == content_hash(again.clone())
    assert content_hash(again) != content_hash(1 - again)
    assert not list(tmp_path.glob(".*tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def _disk(size: int = 96, radius: float = 14.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2).astype(np.uint8) * 255  # 0/255


def test_soft_and_jpeg_masks_are_thresholded_at_half_the_range(tmp_path, caplog):
    disk = _disk()
    area = int((disk > 0).sum())
    soft = cv2.GaussianBlur(disk, (0, 0), 4)  # a feathered mask: a wide halo of small values
    assert (soft > 0).sum() > 3 * area, "the old rule (any non-zero) would triple the defect"
    with caplog.at_level("WARNING", logger="anogen_aug.images"):
        loaded = load_mask(soft, name="soft")
    assert abs(int(loaded.sum()) - area) < 0.15 * area
    assert torch.equal(loaded[0].bool(), torch.from_numpy(soft >= 128))
    assert "`soft`" in caplog.text and "thresholded" in caplog.text
    Image.fromarray(disk).save(tmp_path / "mask.jpg", quality=60)
    jpeg = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert (jpeg > 0).sum() > 1.25 * area, "JPEG leaves small values around the edge: the old rule grew it"
    loaded = load_mask(tmp_path / "mask.jpg")
    assert abs(int(loaded.sum()) - area) < 0.05 * area
    float_soft = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert load_mask(float_soft).tolist() == [[[0.0, 0.0, 0.0, 1.0, 1.0]]], "floats: above 0.5"


def test_nan_and_infinite_pixels_are_refused_with_the_file_named(tmp_path):
    values = np.full((4, 5), 0.5, np.float32)
    values[1, 2] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ValueError, match=r"`image` \(.*nan\.tiff\) holds 1 NaN or infinite"):
        load_image(tmp_path / "nan.tiff")
    with pytest.raises(ValueError, match="`mask`.*nan.tiff.*NaN"):
        load_mask(tmp_path / "nan.tiff")
    values[1, 2] = np.inf  # an infinity used to rescale the whole image by 1/65535
    with pytest.raises(ValueError, match="`support` holds 1 NaN"):
        load_image(values, name="support")
    with pytest.raises(ValueError, match="`image` holds 2 NaN"):
        load_image(torch.tensor([[[0.5, float("nan"), float("-inf")]]]))
    with pytest.raises(ValueError, match="`region` holds 1 NaN"):
        load_mask(torch.tensor([[0.0, float("nan")]]), name="region")
    with pytest.raises(ValueError, match="`mask` holds negative values"):
        load_mask(np.array([[0.0, -1.0, 1.0]]))
    good = np.full((4, 5), 0.25, np.float32)
    Image.fromarray(good, mode="F").save(tmp_path / "good.tiff")
    assert torch.allclose(load_image(tmp_path / "good.tiff"), torch.full((3, 4, 5), 0.25))


def test_image_files_above_the_pixel_budget_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    assert max_image_pixels() == MAX_IMAGE_PIXELS == 8192 * 8192
    Image.new("1", (9000, 8000)).save(tmp_path / "huge.png")  # a few KB on disk, 72 megapixels decoded
    with pytest.raises(ValueError, match=r"`image` \(.*huge\.png\): 9000x8000 is 72000000 pixels, above"):
        load_image(tmp_path / "huge.png")
    save_png(torch.rand(3, 10, 20), tmp_path / "small.png")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "199")
    with pytest.raises(ValueError, match=f"above the pixel budget of 199 \\({MAX_IMAGE_PIXELS_ENV}"):
        load_mask(tmp_path / "small.png")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "200")
    assert load_image(tmp_path / "small.png").shape == (3, 10, 20)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "0")
    assert max_image_pixels() is None
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "many")
    with pytest.raises(ValueError, match=f"`{MAX_IMAGE_PIXELS_ENV}` must be a pixel count"):
        load_image(tmp_path / "small.png")
    tensor = torch.rand(3, 10, 20)
    assert torch.equal(load_image(tensor), tensor), "tensors in memory are not files: no budget"


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_resize_to_one_pixel_wide_keeps_the_rows_apart(mode):
    """torch's antialiased resize repeats the first row when the output is 1 px wide; resize_image must not."""
    rows = torch.linspace(0, 1, 6)[:, None].expand(6, 4)  # (H, W): constant along each row
    image = rows.expand(3, 6, 4).contiguous()
    narrow = resize_image(image, (3, 1), mode=mode)
    assert narrow.shape == (3, 3, 1)
    assert torch.allclose(narrow, resize_image(image, (3, 4), mode=mode)[..., :1], atol=1e-6)
    assert narrow[0, 0, 0] < narrow[0, 2, 0]
