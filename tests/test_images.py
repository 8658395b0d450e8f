"""Image and mask loading: grey, RGBA, palette and 16-bit are converted; bad files are clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from anogen_aug.images import content_hash, load_image, load_mask, save_png


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


def test_mask_any_nonzero_is_foreground_and_png_round_trip(tmp_path):
    mask = load_mask(np.array([[0, 1], [255, 0]], np.uint8))
    assert torch.equal(mask, torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
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
