"""DefectEmbedding files, offline Hub loading, the stock diffusers loader, and the official converter."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from anogen_aug import DefectEmbedding, GenerationConfig
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


# --- the model card: the Hub's metadata and code that runs -----------------------------------------------------
def test_model_card_carries_the_hubs_metadata(tmp_path):
    from huggingface_hub import ModelCard, ModelCardData, metadata_load
    from huggingface_hub.utils import validate_repo_id

    _embedding(dim=1280).save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")  # huggingface_hub's own parser of the YAML header
    data = card.data
    assert data.library_name == "anogen-aug" and data.license == "apache-2.0"
    assert data.base_model == "CompVis/ldm-text2im-large-256"
    validate_repo_id(data.base_model)  # a Hub id, as the Hub requires of base_model
    assert {"textual-inversion", "anomaly-detection"} <= set(data.tags)
    assert (data.placeholder_token, data.category, data.defect_type) == ("<tile-crack>", "tile", "crack")
    metadata = metadata_load(tmp_path / "README.md")
    assert ModelCardData(**metadata).to_dict() == data.to_dict()
    # links point to something real: the paper, not an invented repository address
    assert "https://arxiv.org/abs/2505.09263" in card.text and "github.com" not in card.text
    assert "load_textual_inversion" in card.text and "DefectEmbedding.from_pretrained" in card.text


def test_card_of_an_embedding_from_a_local_backbone_has_no_base_model(tmp_path):
    from huggingface_hub import ModelCard

    (tmp_path / "my-backbone").mkdir()
    _embedding(backbone=str(tmp_path / "my-backbone")).save_pretrained(tmp_path / "emb")
    card = ModelCard.load(tmp_path / "emb" / "README.md")
    assert card.data.base_model is None and str(tmp_path / "my-backbone") in card.text


def _python_blocks(text: str) -> list[str]:
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


@pytest.mark.parametrize("family", ["ldm", "sd"])
def test_every_code_block_of_the_card_runs(tmp_path, monkeypatch, family):
    """The card's anogen-aug snippet and its diffusers snippet for the family run as written (offline)."""
    import huggingface_hub
    from PIL import Image

    from anogen_aug.testing import save_tiny_backbone

    folder = save_tiny_backbone(tmp_path / f"tiny-{family}", family)
    embedding = _embedding(backbone=str(folder))
    embedding.save_pretrained(tmp_path / "src")
    cache = _hub_cache(tmp_path, tmp_path / "src")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # where the snippets look
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (120, 120, 120)).save("normal.png")
    card = str(embedding.generate_model_card(repo_id="acme/tile-crack"))
    pipeline = "LDMTextToImagePipeline" if family == "ldm" else "StableDiffusionPipeline"
    blocks = [b for b in _python_blocks(card) if "diffusers" not in b or pipeline in b]
    assert len(blocks) == 2
    fewer_steps = {  # 2 denoising steps instead of 50: the code runs as written otherwise
        "embedding)\n": "embedding, config=GenerationConfig(num_inference_steps=2))\n",
        "guidance_scale=10)": "guidance_scale=10, num_inference_steps=2)",
    }
    for block in blocks:
        shortened = block
        for old, new in fewer_steps.items():
            shortened = shortened.replace(old, new)
        assert shortened != block
        exec(compile(shortened, f"card block ({family})", "exec"), {"GenerationConfig": GenerationConfig})
    assert Image.open("defect.png").size == (64, 64)


# --- from_pretrained: the Hub's arguments, revisions, and local backbones ---------------------------------------
def test_from_pretrained_passes_the_hub_arguments_through(tmp_path, monkeypatch):
    import anogen_aug.embedding

    _embedding().save_pretrained(tmp_path / "src")
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / "src" / filename)

    monkeypatch.setattr(anogen_aug.embedding, "hf_hub_download", download)
    hub = {"revision": "v2", "cache_dir": str(tmp_path / "c"), "local_files_only": True, "token": "hf_x"}
    DefectEmbedding.from_pretrained("acme/tile-crack", force_download=True, **hub)
    assert {filename for _, filename, _ in calls} == {"config.json", "learned_embeds.safetensors"}
    for repo_id, _, kwargs in calls:
        assert repo_id == "acme/tile-crack" and kwargs["force_download"] is True
        assert {key: kwargs[key] for key in hub} == hub


def test_from_pretrained_reads_the_revision_asked_for(tmp_path):
    old, new = _embedding(), DefectEmbedding(torch.ones(1, 32), placeholder_token="<tile-crack>")
    old.save_pretrained(tmp_path / "old")
    new.save_pretrained(tmp_path / "new")
    cache = _hub_cache(tmp_path, tmp_path / "old")  # refs/main -> "a" * 40
    repo = cache / "models--acme--tile-crack"
    shutil.copytree(tmp_path / "new", repo / "snapshots" / ("b" * 40))
    (repo / "refs" / "v2").write_text("b" * 40)
    for revision, expected in ((None, old), ("v2", new), ("b" * 40, new)):
        loaded = DefectEmbedding.from_pretrained(
            "acme/tile-crack", revision=revision, cache_dir=cache, local_files_only=True
        )
        assert torch.equal(loaded.vectors, expected.vectors)


def test_a_local_backbone_is_found_from_another_working_directory(tmp_path, monkeypatch):
    """A backbone folder given relative to the working directory is stored absolute, so ``generate`` run from
    elsewhere still finds it; a Hub id is stored as it is."""
    (tmp_path / "project" / "backbones" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    _embedding(backbone="backbones/tiny").save_pretrained("emb")
    monkeypatch.chdir(tmp_path)
    loaded = DefectEmbedding.from_pretrained("project/emb")
    assert loaded.backbone == str(tmp_path / "project" / "backbones" / "tiny")
    assert _embedding(backbone="CompVis/ldm-text2im-large-256").backbone == "CompVis/ldm-text2im-large-256"
