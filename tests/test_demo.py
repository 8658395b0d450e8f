"""`anogen-aug demo`: the offline pipeline on its own sample data."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from anogen_aug.demo import run_demo


def test_demo_pipeline_without_detector(tmp_path, capfd):
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging  # noqa: F401 (sets its logger's level)

    bars, level = diffusers_logging.is_progress_bar_enabled(), logging.getLogger("transformers").level
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", steps=3, detector=False, say=lines.append)
    # the demo's own lines: numbered 1/5 .. 5/5 in order, and no third-party noise between them
    numbered = [line.split(" ", 1)[0] for line in lines if line[:1].isdigit()]
    assert numbered == [f"{i}/5" for i in range(1, 6)]
    noise = capfd.readouterr()
    for known in ("Loading pipeline components", "use_return_dict", "FutureWarning", "learning <", "bank:"):
        assert known not in noise.out + noise.err
    # and what it quietened is restored
    assert diffusers_logging.is_progress_bar_enabled() == bars
    assert logging.getLogger("transformers").level == level
    sheet = Image.open(summary["contact_sheet"])
    assert sheet.size[0] > 0 and sheet.size[1] > 0
    assert summary["banks"]["anogen"] == 4 and summary["banks"]["paste"] == 12 * 2 * 2
    assert any("TINY RANDOM backbone" in line for line in lines)
    assert any("CompVis/ldm-text2im-large-256" in line for line in lines)
    assert (tmp_path / "demo" / "embedding" / "learned_embeds.safetensors").is_file()


@pytest.mark.slow
def test_full_demo_trains_a_detector(tmp_path, capfd):
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", steps=10, detector=True, say=lines.append)
    assert [line.split(" ", 1)[0] for line in lines if line[:1].isdigit()] == [f"{i}/6" for i in range(1, 7)]
    noise = capfd.readouterr()
    for known in ("Tip:", "GPU available", "Trainable params", "LeafSpec", "infer the `batch_size`"):
        assert known not in noise.out + noise.err
    metrics = summary["metrics"]
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    assert all(value is None or math.isfinite(value) for value in metrics.values())


def test_the_hint_for_the_real_backbone_is_a_valid_command_line():
    import shlex

    from anogen_aug.cli import build_parser
    from anogen_aug.demo import REAL_BACKBONE_HINT

    commands = [shlex.split(line)[1:] for line in REAL_BACKBONE_HINT.splitlines() if "anogen-aug " in line]
    assert len(commands) == 2
    for args in commands:
        build_parser().parse_args(args)
