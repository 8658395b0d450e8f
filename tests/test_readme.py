"""The README is code that runs: every ```python block is executed, every command-line example is parsed.

Each Python block runs in a fresh namespace (so each is complete when copied), in the README's order, in one
working folder holding the files the README names: ``crack1.png`` .. ``crack3_mask.png``, ``normal.png`` and
``normal/`` (sample images of `make_demo_data`), and ``datasets/MVTecAD/tile`` (the same sample category in the
MVTec layout). A few substitutions, each checked to apply, stand in for what a test cannot afford: the tiny
backbone for the real backbone id, the CPU for ``cuda``, two stage-1 steps for 6100, two DDIM steps for 50, one
short epoch of a narrow DRAEM for 700. Pushing to the Hub runs huggingface_hub's real code up to the upload, which is recorded instead.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from anogen_aug.cli import build_parser
from anogen_aug.demo import make_demo_data
from anogen_aug.images import list_images
from anogen_aug.testing import save_tiny_backbone

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
#: The quickstart's two commands: CI runs them itself.
QUICKSTART = ("python3 -m venv .venv", "bash scripts/test.sh")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", TEXT, flags=re.DOTALL | re.MULTILINE)


def _substitutions(backbone: Path) -> dict[str, str]:
    return {
        '"CompVis/ldm-text2im-large-256"': repr(str(backbone)),
        'device="cuda"': 'device="cpu"',
        "InversionConfig()": "InversionConfig(max_train_steps=2)",
        "GenerationConfig()": "GenerationConfig(num_inference_steps=2)",
        'MVTecAD(root="datasets/MVTecAD", category="tile")': (
            'MVTecAD(root="datasets/MVTecAD", category="tile", train_batch_size=4, eval_batch_size=4, '
            "num_workers=0)"
        ),
        "Engine(max_epochs=700)": (
            'Engine(max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", logger=False, '
            "enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, "
            'default_root_dir="results")'
        ),
        "WeakDraem(tau=0.9)": (
            "WeakDraem(tau=0.9, reconstruction_width=32, discrimination_width=32, visualizer=False, "
            "pre_processor=WeakDraem.configure_pre_processor((64, 64)))"
        ),
    }


def _write_named_files(folder: Path) -> None:
    """The files the README's blocks name, from the sample category."""
    category = make_demo_data(folder / "sample", seed=0)
    defects = list_images(category / "test" / "scratch")
    for i, image in enumerate(defects[:3], start=1):
        shutil.copy(image, folder / f"crack{i}.png")
        shutil.copy(
            category / "ground_truth" / "scratch" / f"{image.stem}_mask.png", folder / f"crack{i}_mask.png"
        )
    normals = list_images(category / "train" / "good")
    shutil.copy(normals[0], folder / "normal.png")
    (folder / "normal").mkdir()
    for image in normals[:2]:  # two images: 8 bank samples
        shutil.copy(image, folder / "normal" / image.name)
    shutil.copytree(category, folder / "datasets" / "MVTecAD" / "tile")


def _record_uploads(monkeypatch) -> list[dict]:
    import huggingface_hub

    uploads: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploads.append({"repo_id": repo_id, "files": sorted(p.name for p in Path(folder_path).iterdir())})
        return "recorded"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def _run(block: str, substitutions: dict[str, str], used: set[str], name: str) -> None:
    for old, new in substitutions.items():
        if old in block:
            block = block.replace(old, new)
            used.add(old)
    exec(compile(block, name, "exec"), {"__name__": name})


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run every Python block but the anomalib one, in order; return the folder and what ran."""
    folder = tmp_path_factory.mktemp("readme")
    _write_named_files(folder)
    substitutions = _substitutions(save_tiny_backbone(folder / "tiny-ldm", "ldm", seed=0))
    used: set[str] = set()
    with pytest.MonkeyPatch.context() as monkeypatch:
        uploads = _record_uploads(monkeypatch)
        monkeypatch.chdir(folder)
        for i, block in enumerate(_blocks("python")):
            if "anomalib" not in block:
                _run(block, substitutions, used, f"README python block {i + 1}")
    return {"folder": folder, "substitutions": substitutions, "used": used, "uploads": uploads}


def test_every_python_block_runs_as_written(readme_run):
    from anogen_aug import AnomalyBank, DefectEmbedding

    folder = readme_run["folder"]
    embedding = DefectEmbedding.from_pretrained(folder / "tile-crack")
    assert (embedding.category, embedding.defect_type, embedding.steps) == ("tile", "crack", 2)
    assert (folder / "tile-crack" / "README.md").is_file() and (folder / "normal_crack.png").is_file()
    assert len(AnomalyBank(folder / "bank")) == 2 * 2 * 2  # 2 images x 2 boxes x 2 samples
    assert readme_run["uploads"] == [
        {"repo_id": "me/tile-crack", "files": ["README.md", "config.json", "learned_embeds.safetensors"]}
    ]


def test_the_anomalib_block_trains_a_detector(readme_run, monkeypatch):
    pytest.importorskip("anomalib")
    (block,) = [b for b in _blocks("python") if "anomalib" in b]
    monkeypatch.chdir(readme_run["folder"])
    _run(block, readme_run["substitutions"], readme_run["used"], "README anomalib block")
    assert readme_run["used"] == set(readme_run["substitutions"])  # every stand-in applied: none went stale
    assert list((readme_run["folder"] / "results").rglob("*.ckpt"))


def _cli_arguments(line: str) -> list[str] | None:
    """The `anogen-aug` arguments of a README command line (None for the quickstart's commands)."""
    if line.startswith(QUICKSTART):
        return None
    words = shlex.split(line, comments=True)
    if words[0] == "anogen-aug":
        return words[1:]
    if (
        words[0] == "anomalib"
    ):  # anomalib's own CLI on a shipped config (run for real by test_anomalib_cli.py)
        assert words[1] in ("fit", "test") and (README.parent / words[words.index("-c") + 1]).is_file(), line
        return None
    assert "anogen_aug.cli" in words, f"README command neither anogen-aug nor a launcher of it: {line}"
    return words[words.index("anogen_aug.cli") + 1 :]


def test_every_command_line_example_parses():
    lines = [
        line
        for lang in ("bash", "sh")
        for block in _blocks(lang)
        for line in block.splitlines()
        if line.strip()
    ]
    commands = [args for args in map(_cli_arguments, lines) if args is not None]
    assert len(commands) >= 8
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)  # an unknown flag or a missing required one exits here
        assert callable(parsed.func)
