"""`anogen-aug demo`: the offline pipeline on its own sample data."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from anogen_aug.demo import run_demo


def test_demo_pipeline_without_detector(tmp_path):
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", steps=3, detector=False, say=lines.append)
    sheet = Image.open(summary["contact_sheet"])
    assert sheet.size[0] > 0 and sheet.size[1] > 0
    assert summary["banks"]["anogen"] == 4 and summary["banks"]["paste"] == 12 * 2 * 2
    assert any("TINY RANDOM backbone" in line for line in lines)
    assert any("CompVis/ldm-text2im-large-256" in line for line in lines)
    assert (tmp_path / "demo" / "embedding" / "learned_embeds.safetensors").is_file()


@pytest.mark.slow
def test_full_demo_trains_a_detector(tmp_path):
    summary = run_demo(tmp_path / "demo", steps=10, detector=True, say=lambda _: None)
    metrics = summary["metrics"]
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    assert all(value is None or math.isfinite(value) for value in metrics.values())
