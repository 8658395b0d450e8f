"""The downstream benchmark's two protocols, run end to end at toy size (slow: they train real detectors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_toy import write_mvtec_folder

pytest.importorskip("anomalib")
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    """The documented command, ``python -m benchmarks.downstream ARGS``, from the repository root."""
    command = [sys.executable, "-m", "benchmarks.downstream", *argv]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "arms", "budget"),
    [
        ("segmentation", ["perlin", "box_tau0.9"], ["--epochs", "1", "--image-size", "32"]),
        (
            "draem",
            ["perlin", "box_tau0.9", "pixel_mask"],
            ["--steps", "2", "--image-size", "64", "--batch-size", "2", "--reconstruction-width", "8",
             "--discrimination-width", "8", "--maps", "0"],
        ),
    ],
)  # fmt: skip
def test_protocol_runs_every_arm_keeps_the_support_out_and_resumes(tmp_path, protocol, arms, budget):
    data = write_mvtec_folder(tmp_path / "data") / "tiny"
    out = tmp_path / "result.json"
    argv = ["--protocol", protocol, "--data", str(data), "--seeds", "0", "--arms", *arms, "--out", str(out),
            "--work-dir", str(tmp_path / "work"), *budget]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.read_text())
    runs = record["results"]["tiny"]
    assert list(runs) == arms
    for arm in arms:
        result = runs[arm]["seeds"]["0"]
        assert result["support"] == {"scratch": result["support"]["scratch"]}
        assert len(result["support"]["scratch"]) == 3  # k = 3 of the 4 anomalies drawn as support
        assert 0.0 <= result["pixel_auroc"] <= 1.0 and runs[arm]["summary"]["pixel_ap"]["n"] == 1
        if protocol == "draem":
            assert result["excluded_images"] == 3  # the support is not tested on
    # --resume keeps the runs it finds and trains nothing new
    assert main([*argv, "--resume"]) == 0
    again = json.loads(out.read_text())
    assert again["results"] == record["results"] and len(again["resumed"]) == 1
