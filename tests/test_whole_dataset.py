"""A whole data set in two commands: every defect type learned and generated, over two CPU ranks (torchrun, gloo).

The data: two categories, three defect types that learn and one (``tile/oil``) whose masks are empty, so its job
fails. The flow runs once in this process (the reference, the Python API), then as ``anogen-aug learn-all`` over
two ranks that is killed mid-run (SIGKILL to the launcher and both ranks) and relaunched, then ``generate-all``
over two ranks; the results must equal the reference byte for byte, and a later start must redo nothing.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image, ImageDraw

from anogen_aug.backbone import load_backbone
from anogen_aug.cli import main
from anogen_aug.generation import GenerationConfig
from anogen_aug.inversion import InversionConfig
from anogen_aug.mvtec import read_mvtec, split_support
from anogen_aug.testing import save_tiny_backbone
from anogen_aug.whole_dataset import (
    generate_all,
    learn_all,
    plan_dataset,
    read_support_json,
    support_files,
)

DEFECTS = {"bottle": ["broken_large", "contamination"], "tile": ["crack", "oil"]}
LEARNED = ["bottle_broken_large", "bottle_contamination", "tile_crack"]
CONFIG = InversionConfig(max_train_steps=20, train_batch_size=1, resolution=32, checkpointing_steps=5)
LEARN_FLAGS = ["--max-train-steps", "20", "--train-batch-size", "1", "--resolution", "32", "--checkpointing-steps", "5"]  # fmt: skip
GENERATE_FLAGS = ["--num-inference-steps", "2", "--boxes-per-image", "1", "--samples-per-box", "1"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def _picture(rng: np.random.Generator, defect: bool, marked: bool) -> tuple[Image.Image, Image.Image]:
    """A grey disc on a dark background (32 px), with a red square and its mask when ``defect``."""
    image, mask = Image.new("RGB", (32, 32), (25, 25, 25)), Image.new("L", (32, 32), 0)
    margin = 4 + int(rng.integers(0, 3))
    ImageDraw.Draw(image).ellipse([margin, margin, 32 - margin, 32 - margin], fill=(150, 145, 140))
    if defect:
        x, y = (int(v) for v in rng.integers(10, 18, 2))
        ImageDraw.Draw(image).rectangle([x, y, x + 4, y + 4], fill=(230, 40, 40))
        ImageDraw.Draw(mask).rectangle([x, y, x + 4, y + 4], fill=255 if marked else 0)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (32, 32, 1))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8)), mask


def make_dataset(root: Path) -> Path:
    """Two MVTec-layout categories: 2 normal train images, 1 normal and 4 anomalous test images per defect type."""
    rng = np.random.default_rng(0)
    for category, defects in DEFECTS.items():
        folder = root / category
        for split, count in (("train", 2), ("test", 1)):
            (folder / split / "good").mkdir(parents=True)
            for i in range(count):
                _picture(rng, False, False)[0].save(folder / split / "good" / f"{i:03d}.png")
        for defect in defects:
            (folder / "test" / defect).mkdir(parents=True)
            (folder / "ground_truth" / defect).mkdir(parents=True)
            for i in range(4):
                image, mask = _picture(rng, True, marked=defect != "oil")  # oil: empty masks, a failing job
                image.save(folder / "test" / defect / f"{i:03d}.png")
                mask.save(folder / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    save_tiny_backbone(root / "backbone", "ldm")
    return make_dataset(root / "mvtec"), root / "backbone"


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The flow in one process through the Python API (one CPU thread, as the ranks run)."""
    data, backbone_dir = dataset
    out, threads = tmp_path_factory.mktemp("reference"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # As a rank loads it (`--device` defaults to the rank's, "cpu:0"): moved, so its weights are copied out of
        # the safetensors mapping. CPU kernels round differently on 8-byte- and 64-byte-aligned weights.
        backbone = load_backbone(backbone_dir, device="cpu:0")
        learned = learn_all(backbone, data, out, config=CONFIG, progress=False)
        generated = generate_all(
            backbone, out, config=GenerationConfig(num_inference_steps=2), boxes_per_image=1, samples_per_box=1,
            progress=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out, learned, generated


def test_one_process_learns_every_defect_type_and_reports_the_failing_one(reference):
    out, learned, generated = reference
    status = {r.job: r.status for r in learned.records}
    assert status == {**dict.fromkeys(LEARNED, "done"), "tile_oil": "failed"}
    (oil,) = learned.failed
    assert "ValueError" in oil.error and "empty" in oil.error
    assert all(
        r.steps == 20 and r.final_loss is not None and r.resumed_from == 0 for r in learned.records[:3]
    )
    for name in LEARNED:  # the Hub layout with a model card, learned from the recorded support draw
        files = sorted(p.name for p in (out / "embeddings" / name).iterdir())
        assert files == ["README.md", "config.json", "learned_embeds.safetensors"]
        assert (out / "sheets" / f"{name}.png").is_file()
    assert {r.job: r.status for r in generated.records} == {
        **dict.fromkeys(LEARNED, "done"),
        "tile_oil": "skipped",
    }
    assert all(r.samples == 2 for r in generated.records[:3])  # 2 normal images x 1 box x 1 sample
    assert "| tile_oil | - | - |" in learned.path.read_text()


def test_support_json_is_the_benchmarks_draw(dataset, reference):
    data, _ = dataset
    record = read_support_json(reference[0])
    assert (record["k"], record["seed"]) == (3, 0)
    files = support_files(record)
    for category in DEFECTS:
        support, evaluation = split_support(read_mvtec(data / category).test, k=3, seed=0)
        assert {d: [s.image_path.resolve() for s in v] for d, v in support.items()} == files[category]
        assert not {s.image_path.resolve() for s in evaluation} & {
            p for v in files[category].values() for p in v
        }


def test_a_relaunch_with_another_support_draw_is_refused(dataset, reference):
    data, backbone_dir = dataset
    with pytest.raises(ValueError, match="another support draw"):
        learn_all(load_backbone(backbone_dir), data, reference[0], config=CONFIG, k=2, progress=False)


def test_plan_reports_an_unreadable_category_and_plans_the_others(dataset, tmp_path):
    data, _ = dataset
    (tmp_path / "cable" / "train" / "good").mkdir(parents=True)
    (tmp_path / "cable" / "test" / "bent").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "cable" / "train" / "good" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cable" / "test" / "bent" / "0.png")  # no ground_truth/bent
    os.symlink(data / "bottle", tmp_path / "bottle")
    plan = plan_dataset(tmp_path)
    assert [job.name for job in plan.jobs] == ["bottle_broken_large", "bottle_contamination"]
    assert "cable" in plan.unreadable and "FileNotFoundError" in plan.unreadable["cable"]
    assert [job.name for job in plan_dataset(data / "tile").jobs] == ["tile_crack", "tile_oil"]
    with pytest.raises(ValueError, match="not found"):
        plan_dataset(data, categories=["carpet"])


def test_the_cli_names_a_missing_data_folder(tmp_path, capsys):
    assert main(["learn-all", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 1
    assert "nowhere" in capsys.readouterr().err


def _torchrun(*args: str) -> list[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port), "-m", "anogen_aug.cli", "-v", *args]  # fmt: skip


def _kill_when(process: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    """SIGKILL the launcher and its ranks (each in its own session) as soon as ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.01)
    for child in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        os.kill(child.pid, signal.SIGKILL)
    process.wait()


def test_two_ranks_survive_a_kill_and_equal_one_process(dataset, reference, tmp_path):
    data, backbone_dir = dataset
    ref, ref_learned, _ = reference
    out = tmp_path / "two-ranks"
    learn = _torchrun(
        "learn-all", "--data", str(data), "--out", str(out), "--backbone", str(backbone_dir), *LEARN_FLAGS
    )
    # 1. A real kill mid-run: the first job has a checkpoint, and not every job has finished.
    with open(tmp_path / "killed.log", "wb") as log:
        killed = subprocess.Popen(learn, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        _kill_when(killed, out / "checkpoints" / "bottle_broken_large" / "checkpoint-5")
    finished = {name for name in LEARNED if (out / "embeddings" / name / "config.json").is_file()}
    assert finished != set(LEARNED)
    # 2. The relaunch learns each unfinished job once, resuming from its checkpoint; tile_oil fails again.
    relaunch = subprocess.run(learn, env=ENV, capture_output=True, text=True)
    assert relaunch.returncode != 0  # a job failed: the command says so
    learned = {r["job"]: r for r in map(json.loads, map(Path.read_text, (out / "jobs/learn").glob("*.json")))}
    assert {job: r["status"] for job, r in learned.items()} == {
        **dict.fromkeys(LEARNED, "done"),
        "tile_oil": "failed",
    }
    assert any(r["resumed_from"] for r in learned.values())
    for name in [
        *LEARNED,
        "tile_oil",
    ]:  # every job once, over both ranks; none finished before the kill again
        assert relaunch.stderr.count(f"learns {name} ") == (name not in finished)
    assert {r["rank"] for r in learned.values()} == {0, 1}
    generate = subprocess.run(_torchrun("generate-all", "--out", str(out), *GENERATE_FLAGS), env=ENV, capture_output=True, text=True)  # fmt: skip
    assert generate.returncode == 0, generate.stderr[-2000:]
    # 3. The same support draw, vectors, losses and banks as the single process, byte for byte.
    assert read_support_json(out) == read_support_json(ref)
    ref_losses = {r.job: r.final_loss for r in ref_learned.records}
    for name in LEARNED:
        assert learned[name]["final_loss"] == ref_losses[name]
        weights = Path("embeddings") / name / "learned_embeds.safetensors"
        assert filecmp.cmp(out / weights, ref / weights, shallow=False)
        records = [
            json.loads(line) for line in (out / "banks" / name / "manifest.jsonl").read_text().splitlines()
        ]
        assert len(records) == 2
        for record in records:
            assert filecmp.cmp(out / "banks" / name / record["image"], ref / "banks" / name / record["image"], shallow=False)  # fmt: skip
    # 4. A later start, in one process this time, redoes nothing that is finished.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "embeddings").rglob("*") if p.is_file()}
    stamps |= {p: p.stat().st_mtime_ns for p in (out / "banks").rglob("manifest.jsonl")}
    backbone = load_backbone(backbone_dir)
    again = learn_all(backbone, data, out, config=CONFIG, progress=False)
    assert {r.job: r.status for r in again.records} == {
        **dict.fromkeys(LEARNED, "skipped"),
        "tile_oil": "failed",
    }
    again = generate_all(backbone, out, config=GenerationConfig(num_inference_steps=2), boxes_per_image=1, samples_per_box=1, progress=False)  # fmt: skip
    assert {r.status for r in again.records} == {"skipped"}
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
