"""The `anogen-aug` command end to end on tiny offline backbones: every command, its files and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from anogen_aug import DefectEmbedding
from anogen_aug.cli import main
from anogen_aug.demo import make_demo_data
from anogen_aug.images import list_images, load_image
from anogen_aug.testing import save_tiny_backbone


@pytest.fixture(scope="module")
def widget(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"), seed=1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-sd", "sd", seed=0)


def _support(widget):
    images = list_images(widget / "test" / "scratch")[:2]
    masks = [widget / "ground_truth" / "scratch" / f"{p.stem}_mask.png" for p in images]
    return [str(p) for p in images], [str(p) for p in masks]


def test_learn_then_generate_then_show(tmp_path, widget, tiny_dir, capsys):
    images, masks = _support(widget)
    out = tmp_path / "emb"
    code = main(["learn", "--backbone", str(tiny_dir), "--images", *images, "--masks", *masks, "--out", str(out),
                 "--max-train-steps", "3", "--train-batch-size", "2", "--defect-type", "scratch", "--seed", "1"])  # fmt: skip
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert (
        config["steps"] == 3
        and config["config"]["max_train_steps"] == 3
        and config["defect_type"] == "scratch"
    )
    assert (out / "learned_embeds.safetensors").is_file() and (out / "checkpoints").is_dir()

    bank = tmp_path / "bank"
    normals = widget / "train" / "good"
    args = ["generate", "--embedding", str(out), "--backbone", str(tiny_dir), "--images", str(normals), "--out",
            str(bank), "--num-inference-steps", "2", "--boxes-per-image", "1", "--samples-per-box", "1"]  # fmt: skip
    assert main([*args[:6], str(list_images(normals)[0]), *args[7:]]) == 0
    records = [json.loads(line) for line in (bank / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["generator"]["name"] == "anogen"
    assert records[0]["generator"]["settings"]["num_inference_steps"] == 2
    # pixels outside the box are the (resized) source's, exactly
    image = load_image(bank / records[0]["image"])
    box_mask = load_image(bank / records[0]["box_mask"])[:1]
    assert image.shape[-2:] == box_mask.shape[-2:]

    sheet = tmp_path / "grid.png"
    assert main(["show", str(bank), "--png", str(sheet)]) == 0
    assert sheet.is_file() and sheet.stat().st_size > 0
    assert "grid.png" in capsys.readouterr().out


def test_generate_with_paste_generator_is_resumable(tmp_path, widget):
    images, masks = _support(widget)
    bank = tmp_path / "bank"
    args = ["generate", "--generator", "paste", "--support-images", *images, "--support-masks", *masks, "--images",
            str(widget / "train" / "good"), "--out", str(bank), "--category", "widget", "--defect-type", "scratch"]  # fmt: skip
    assert main(args) == 0
    first = (bank / "manifest.jsonl").read_text().splitlines()
    assert len(first) == 12 * 2 * 2  # every image x 2 boxes x 2 samples (the reference volume)
    assert all(json.loads(line)["mask_exact"] for line in first)
    assert main(args) == 0  # the same command again skips what exists
    assert (bank / "manifest.jsonl").read_text().splitlines() == first


@pytest.mark.slow  # the full-width DRAEM (97 M parameters) even at 32 px; train_detector itself is tested by default
def test_train_command_writes_metrics_and_maps(tmp_path, widget):
    images, masks = _support(widget)
    bank = tmp_path / "bank"
    assert main(["generate", "--generator", "paste", "--support-images", *images, "--support-masks", *masks,
                 "--images", str(widget / "train" / "good"), "--out", str(bank), "--samples-per-box", "1"]) == 0  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--data", str(widget.parent), "--category", widget.name, "--bank", str(bank), "--model",
            "draem", "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--limit-train-batches", "1",
            "--accelerator", "cpu", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["tau"] == 0.9 and record["config"]["model"] == "draem"
    assert {"image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "pixel_AUPR"} <= set(
        record["metrics"]
    )
    assert list((out / "maps").glob("*.png"))
    assert main([*argv[:-1], str(tmp_path / "bad"), "--tau", "1.5"]) == 1  # tau outside (0, 1]


def test_push_command_routes_embeddings_and_banks(tmp_path, monkeypatch):
    from anogen_aug.embedding import DefectEmbedding

    pushed = []
    monkeypatch.setattr(
        DefectEmbedding,
        "push_to_hub",
        lambda self, repo_id, **kw: pushed.append((self.placeholder_token, repo_id)),
    )
    DefectEmbedding(torch.zeros(1, 8), placeholder_token="<x>").save_pretrained(tmp_path / "emb")
    assert main(["push", str(tmp_path / "emb"), "acme/x"]) == 0
    assert pushed == [("<x>", "acme/x")]
    assert main(["push", str(tmp_path), "acme/y"]) == 1


_NO_BACKBONE = "{tmp}/no-such-backbone"  # inputs are checked before the backbone loads: its error never shows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["learn", "--images", "missing.png", "--masks", "m.png", "--out", "o", "--backbone", _NO_BACKBONE],
         "missing.png"),
        (["learn", "--images", "{img}", "--masks", "{img}", "--out", "o", "--backbone", _NO_BACKBONE,
          "--max-train-steps", "0"], "--max-train-steps must be an integer >= 1, got 0"),
        (["learn", "--images", "{img}", "{img}", "--masks", "{mask}", "--out", "o", "--backbone", _NO_BACKBONE],
         "--masks must hold one mask per image"),
        (["learn", "--images", "{img}", "--masks", "{img}", "--out", "o", "--backbone", "{tmp}"],
         "model_index.json"),
        (["generate", "--images", "{img}", "--out", "b"], "--embedding"),
        (["generate", "--generator", "paste", "--images", "{img}", "--out", "b"], "--support-images"),
        (["generate", "--generator", "paste", "--images", "{img}", "--out", "b", "--support-images", "{img}",
          "--support-masks", "{mask}", "{mask}"], "--support-masks must hold one mask per image"),
        (["generate", "--generator", "paste", "--images", "{img}", "--out", "b", "--support-images", "{img}",
          "--support-masks", "{mask}", "--boxes-per-image", "0"], "--boxes-per-image must be an integer >= 1"),
        (["generate", "--generator", "paste", "--images", "{img}", "--out", "b", "--support-images", "{img}",
          "--support-masks", "{mask}", "--blend", "soft"], "--blend must be"),
        (["generate", "--embedding", "{emb}", "--images", "missing.png", "--out", "b", "--backbone", _NO_BACKBONE],
         "missing.png"),
        (["show", "{tmp}", "--out", "x.png"], "manifest"),
    ],
)  # fmt: skip
def test_errors_are_one_line_name_flags_and_exit_non_zero(tmp_path, widget, tiny_dir, capsys, argv, message):
    images, masks = _support(widget)
    DefectEmbedding(torch.zeros(1, 32), placeholder_token="<x>").save_pretrained(tmp_path / "emb")
    argv = [
        a.format(tiny=tiny_dir, img=images[0], mask=masks[0], tmp=tmp_path, emb=tmp_path / "emb")
        for a in argv
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    assert "no-such-backbone" not in err


def test_generate_finds_a_relative_backbone_from_another_working_directory(
    tmp_path, widget, tiny_dir, monkeypatch
):
    """`learn --backbone tiny-sd` in one folder, `generate` (no --backbone) from another: the embedding's backbone
    is stored absolute."""
    images, masks = _support(widget)
    monkeypatch.chdir(tiny_dir.parent)
    argv = ["learn", "--backbone", tiny_dir.name, "--images", *images, "--masks", *masks, "--out", str(tmp_path / "emb"),
            "--max-train-steps", "1", "--train-batch-size", "1"]  # fmt: skip
    assert main(argv) == 0
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--embedding", "emb", "--images", images[0], "--out", "bank", "--num-inference-steps", "1",
            "--boxes-per-image", "1", "--samples-per-box", "1"]  # fmt: skip
    assert main(argv) == 0
    assert len((tmp_path / "bank" / "manifest.jsonl").read_text().splitlines()) == 1


def test_console_script_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "anogen_aug.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("learn", "generate", "show", "push", "convert-official", "train", "demo"):
        assert command in result.stdout
