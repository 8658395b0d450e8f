"""DefectEmbedding files, offline Hub loading, the stock diffusers loader, and the official converter."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from anogen_aug import DefectEmbedding
from anogen_aug.testing import tiny_backbone


def _embedding(dim: int = 32, **kwargs) -> DefectEmbedding:
    generator = torch.Generator().manual_seed(0)
    return DefectEmbedding(
        vectors=torch.randn(1, dim, generator=generator),
        placeholder_token="<tile-crack>",
        category="tile",
        defect_type="crack",
        init_word="defect",
        steps=12,
        config={"learning_rate": 0.005},
        support_hashes=["abc"],
        **kwargs,
    )


def _hub_cache(tmp_path, folder, repo_id: str = "acme/tile-crack"):
    """Lay out files as huggingface_hub's cache does, so `local_files_only` resolves them offline."""
    sha = "a" * 40
    repo = tmp_path / "cache" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(folder, repo / "snapshots" / sha)
    return tmp_path / "cache"


def test_save_writes_diffusers_layout_config_and_card(tmp_path):
    embedding = _embedding(extra_field="kept")
    embedding.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "learned_embeds.safetensors")
    assert list(tensors) == ["<tile-crack>"] and torch.equal(tensors["<tile-crack>"], embedding.vectors)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dim"] == 32 and config["category"] == "tile" and config["extra_field"] == "kept"
    card = (tmp_path / "README.md").read_text()
    assert "library_name: anogen-aug" in card and "load_textual_inversion" in card and "tile" in card
    loaded = DefectEmbedding.from_pretrained(tmp_path)
    assert torch.equal(loaded.vectors, embedding.vectors)
    assert loaded.metadata() == embedding.metadata() and loaded.id == embedding.id


def test_a_config_written_before_the_rename_still_loads(tmp_path):
    """Files from before ``token`` became ``placeholder_token`` keep the placeholder under "token"."""
    _embedding().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["token"] = config.pop("placeholder_token")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = DefectEmbedding.from_pretrained(tmp_path)
    assert loaded.placeholder_token == "<tile-crack>" and "token" not in loaded.metadata()


def test_reading_an_embedding_does_not_import_diffusers(tmp_path):
    import subprocess
    import sys

    _embedding().save_pretrained(tmp_path)
    code = (
        "import sys; from anogen_aug import DefectEmbedding; "
        f"DefectEmbedding.from_pretrained({str(tmp_path)!r}).save_pretrained({str(tmp_path / 'copy')!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_from_pretrained_reads_an_offline_hub_cache(tmp_path):
    _embedding().save_pretrained(tmp_path / "src")
    cache = _hub_cache(tmp_path, tmp_path / "src")
    loaded = DefectEmbedding.from_pretrained("acme/tile-crack", cache_dir=cache, local_files_only=True)
    assert loaded.placeholder_token == "<tile-crack>" and loaded.defect_type == "crack"
    with pytest.raises(Exception, match="(?i)cannot find|not found|offline|locate"):
        DefectEmbedding.from_pretrained("acme/missing", cache_dir=cache, local_files_only=True)


def test_stock_diffusers_loader_reads_our_file(tmp_path):
    from diffusers import StableDiffusionPipeline

    backbone = tiny_backbone("sd")
    pipe = StableDiffusionPipeline(
        vae=backbone.vae,
        text_encoder=backbone.text_encoder,
        tokenizer=backbone.tokenizer,
        unet=backbone.unet,
        scheduler=backbone.make_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    embedding = _embedding()
    embedding.save_pretrained(tmp_path / "src")
    cache = _hub_cache(tmp_path, tmp_path / "src")
    pipe.load_textual_inversion("acme/tile-crack", cache_dir=cache, local_files_only=True)
    token_id = pipe.tokenizer.convert_tokens_to_ids("<tile-crack>")
    row = pipe.text_encoder.get_input_embeddings().weight[token_id]
    assert torch.equal(row, embedding.vectors[0])


def test_push_to_hub_uploads_weights_config_and_card(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded["repo_id"] = repo_id
        uploaded["files"] = {
            p.name: p.read_bytes() for p in __import__("pathlib").Path(folder_path).iterdir()
        }
        return "ok"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    _embedding().push_to_hub("acme/tile-crack", token="hf_test")
    assert uploaded["repo_id"] == "acme/tile-crack"
    assert {"learned_embeds.safetensors", "config.json", "README.md"} <= set(uploaded["files"])
    assert b"acme/tile-crack" in uploaded["files"]["README.md"]


def test_width_mismatch_names_both_widths(tiny_ldm):
    with pytest.raises(ValueError, match="width 1280.*width 32"):
        _embedding(dim=1280).check_backbone(tiny_ldm)
    _embedding(dim=32).check_backbone(tiny_ldm)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vectors": torch.zeros(1, 2, 3)}, "num_vectors, dim"),
        ({"vectors": torch.tensor([[float("nan")]])}, "NaN"),
        ({"vectors": torch.zeros(1, 4), "placeholder_token": "two words"}, "placeholder_token"),
    ],
)
def test_bad_embeddings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DefectEmbedding(**kwargs)
