"""anomalib's own CLI on the shipped example configs: ``anomalib fit -c`` and ``anomalib test -c``, at toy size.

Each run gives the example config first and a toy override second (jsonargparse merges them, later wins): a
56x64 MVTec-layout folder, a crop-and-paste bank, 64 px inputs (128 for SuperSimpleNet, whose feature noise
needs it), 1 epoch of 2 batches on the CPU. The subprocess runs the real ``anomalib`` command. Nothing is
downloaded: ``HF_HUB_OFFLINE=1``, and SuperSimpleNet's backbone gets random weights from a temporary Hugging
Face cache (`serve_random_timm_weights`).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("anomalib")

from anomalib.cli import AnomalibCLI  # noqa: E402

from anogen_aug import AnoGenAugment  # noqa: E402
from anogen_aug.integrations.anomalib import AnoGenDataModule, DeSTSeg, WeakDraem  # noqa: E402

from anomalib_toy import CATEGORY, serve_random_timm_weights, write_mvtec_folder, write_toy_bank  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "anomalib"
ANOMALIB = shutil.which("anomalib", path=str(Path(sys.executable).parent)) or shutil.which("anomalib")
INTEGRATION = "anogen_aug.integrations.anomalib"
SSN_BACKBONE = "resnet18.tv_in1k"
NORMALIZE = {
    "class_path": "torchvision.transforms.v2.Normalize",
    "init_args": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


def _pre_processor(size: int, *, normalize: bool) -> dict:
    resize = {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [size, size]}}
    transform = resize
    if normalize:
        transform = {
            "class_path": "torchvision.transforms.v2.Compose",
            "init_args": {"transforms": [resize, NORMALIZE]},
        }
    return {"class_path": "anomalib.pre_processing.PreProcessor", "init_args": {"transform": transform}}


TOY_MODELS = {
    "weak_draem": {
        "class_path": f"{INTEGRATION}.WeakDraem",
        "init_args": {"reconstruction_width": 8, "discrimination_width": 8, "pre_processor": _pre_processor(64, normalize=False)},
    },
    "destseg": {
        "class_path": f"{INTEGRATION}.DeSTSeg",
        "init_args": {"pretrained": False, "de_st_steps": 1, "pre_processor": _pre_processor(64, normalize=True)},
    },
    "supersimplenet": {
        "class_path": "anomalib.models.Supersimplenet",
        "init_args": {"backbone": SSN_BACKBONE, "pre_processor": _pre_processor(128, normalize=True)},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict:
    """The toy data folder, bank and Hugging Face cache every run of this module shares."""
    root = tmp_path_factory.mktemp("cli")
    data = write_mvtec_folder(root / "data")
    bank = write_toy_bank(data, root / "bank")
    serve_random_timm_weights(root / "hub", SSN_BACKBONE)
    return {"data": data / CATEGORY, "bank": bank.root, "hub": root / "hub"}


def _override(toy: dict, out: Path, model: dict) -> Path:
    """The toy config: data, bank, a small ``model`` (merged into the example's), 1 epoch of 2 batches."""
    folder = {
        "name": CATEGORY,
        "root": str(toy["data"]),
        "normal_dir": "train/good",
        "abnormal_dir": ["test/scratch"],
        "normal_test_dir": "test/good",
        "mask_dir": ["ground_truth/scratch"],
        "train_batch_size": 2,
        "eval_batch_size": 4,
        "num_workers": 0,
    }
    model = {**model, "init_args": {**model["init_args"], "visualizer": False}}
    config = {
        "default_root_dir": str(out / "results"),
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "logger": False},
        "model": model,
        "data": {
            "class_path": f"{INTEGRATION}.AnoGenDataModule",
            "init_args": {"datamodule": {"class_path": "anomalib.data.Folder", "init_args": folder}, "bank": str(toy["bank"])},
        },
    }  # fmt: skip
    path = out / "toy.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _anomalib(toy: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    if ANOMALIB is None:
        pytest.skip("the `anomalib` command is not installed beside this Python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(toy["hub"]), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [ANOMALIB, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _fit_then_test(toy: dict, tmp_path: Path, name: str, model_name: str, *extra: str) -> str:
    """``anomalib fit -c EXAMPLE -c TOY`` then ``anomalib test`` from its checkpoint; returns the test output."""
    configs = ["-c", str(EXAMPLES / f"{name}.yaml"), "-c", str(_override(toy, tmp_path, TOY_MODELS[name]))]
    fit = _anomalib(toy, tmp_path, "fit", *configs, *extra)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = (
        tmp_path / "results" / model_name / CATEGORY / "latest" / "weights" / "lightning" / "model.ckpt"
    )
    assert checkpoint.is_file()
    test = _anomalib(toy, tmp_path, "test", *configs, *extra, "--ckpt_path", str(checkpoint))
    assert test.returncode == 0, test.stderr[-3000:]
    output = test.stdout + test.stderr
    assert "image_AUROC" in output and "Testing took" in output
    return output


def test_weak_draem_example_fits_and_tests_with_anomalibs_cli(toy, tmp_path):
    output = _fit_then_test(toy, tmp_path, "weak_draem", "WeakDraem")
    assert "pixel_AUPRO" in output  # WeakDraem's evaluator (AnoGen's metrics), not anomalib's default


@pytest.mark.slow
def test_destseg_example_fits_and_tests_with_anomalibs_cli(toy, tmp_path):
    _fit_then_test(toy, tmp_path, "destseg", "DeSTSeg")


@pytest.mark.slow
def test_supervised_supersimplenet_example_fits_and_tests_with_anomalibs_cli(toy, tmp_path):
    _fit_then_test(toy, tmp_path, "supersimplenet", "Supersimplenet")


def _stock_draem(toy: dict, tmp_path: Path) -> list[str]:
    """A config of anomalib's own Draem (no downloaded weights; an existing, empty texture folder)."""
    (tmp_path / "dtd").mkdir()
    model = {"class_path": "anomalib.models.Draem", "init_args": {"dtd_dir": str(tmp_path / "dtd"), "pre_processor": _pre_processor(64, normalize=False)}}  # fmt: skip
    return ["-c", str(_override(toy, tmp_path, model))]


def test_stock_one_class_model_is_refused_by_the_cli_with_the_reason(toy, tmp_path):
    fit = _anomalib(toy, tmp_path, "fit", *_stock_draem(toy, tmp_path))
    assert fit.returncode != 0
    assert "Draem is a one-class model" in fit.stderr and "allow_one_class" in fit.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_stock_draem_fits_and_tests_with_the_override(toy, tmp_path):
    configs = [*_stock_draem(toy, tmp_path), "--data.init_args.allow_one_class", "true"]
    fit = _anomalib(toy, tmp_path, "fit", *configs)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = next(tmp_path.rglob("model.ckpt"))
    test = _anomalib(toy, tmp_path, "test", *configs, "--ckpt_path", str(checkpoint))
    assert test.returncode == 0, test.stderr[-3000:]
    assert "image_AUROC" in test.stdout + test.stderr


# --- the configs build in-process (fast): every argument is typed for jsonargparse ---------------------------


def test_every_constructor_argument_is_typed():
    for cls in (AnoGenDataModule, WeakDraem, DeSTSeg, AnoGenAugment):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        untyped = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{cls.__name__}: {untyped}"


@pytest.mark.parametrize("name", sorted(TOY_MODELS))
def test_each_example_builds_its_model_and_datamodule(name, toy, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(toy["hub"]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    override = _override(toy, tmp_path, TOY_MODELS[name])
    cli = AnomalibCLI(["fit", "-c", str(EXAMPLES / f"{name}.yaml"), "-c", str(override)], run=False)
    assert (
        isinstance(cli.datamodule, AnoGenDataModule)
        and Path(cli.datamodule.bank.root).resolve() == Path(toy["bank"]).resolve()
    )
    assert type(cli.model).__name__ == TOY_MODELS[name]["class_path"].rsplit(".", 1)[1]
    assert cli.datamodule.p == {"weak_draem": 0.5, "destseg": 1.0, "supersimplenet": 0.5}[name]
    assert getattr(cli.model, "supervised", True)  # the SuperSimpleNet example trains supervised


def test_the_transform_builds_from_a_config_as_anomalib_augmentations(toy):
    from anomalib.data import AnomalibDataModule
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(AnomalibDataModule, "data")
    augment = {"class_path": "anogen_aug.AnoGenAugment", "init_args": {"bank": str(toy["bank"]), "p": 0.25}}
    folder = {
        "name": CATEGORY,
        "root": str(toy["data"]),
        "normal_dir": "train/good",
        "train_augmentations": augment,
    }
    config = parser.parse_object({"data": {"class_path": "anomalib.data.Folder", "init_args": folder}})
    transform = parser.instantiate_classes(config).data.train_augmentations
    assert isinstance(transform, AnoGenAugment) and transform.p == 0.25 and len(transform.bank) == 6
