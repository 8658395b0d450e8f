"""Backbones: loading both families through `from_pretrained`, frozen weights, the placeholder hook."""

from __future__ import annotations

import json

import pytest
import torch

from anogen_aug.backbone import PLACEHOLDER, detect_family, load_backbone
from anogen_aug.testing import save_tiny_backbone, tiny_backbone


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("family", ["ldm", "sd"])
def test_saved_tiny_backbone_loads_back_identically(tmp_path, family):
    save_tiny_backbone(tmp_path / "pipe", family, seed=3)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    expected = {"ldm": {"bert", "vqvae"}, "sd": {"text_encoder", "vae"}}[family]
    assert expected <= set(index)

    loaded = load_backbone(tmp_path / "pipe")
    built = tiny_backbone(family, seed=3)
    assert loaded.family == family
    assert loaded.token_dim == 32 and loaded.resolution == 64
    for name in ("text_encoder", "unet", "vae"):
        a, b = getattr(loaded, name).state_dict(), getattr(built, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert all(
        not p.requires_grad for m in (loaded.text_encoder, loaded.unet, loaded.vae) for p in m.parameters()
    )
    prompts = ["a photo of a *", ""]
    assert torch.equal(loaded.encode_text(prompts), built.encode_text(prompts))


def test_same_seed_same_weights_different_seed_differs():
    a, b, c = tiny_backbone("sd", seed=1), tiny_backbone("sd", seed=1), tiny_backbone("sd", seed=2)
    wa, wb, wc = (next(x.unet.parameters()) for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_placed_vector_changes_only_placeholder_positions_and_is_removed(backbone):
    prompts = ["a photo of a *", "a * photo"]
    before = _state(backbone.text_encoder)
    plain = backbone.encode_text(prompts)
    vector = torch.randn(1, backbone.token_dim, requires_grad=True)
    with backbone.placed(vector):
        placed = backbone.encode_text(prompts)
        # the input embeddings carry the vector exactly at the placeholder positions
        ids = backbone.tokenizer(
            prompts, padding="max_length", max_length=backbone.max_length, return_tensors="pt"
        ).input_ids
        embeds = backbone.text_encoder.get_input_embeddings()(ids)
        where = ids == backbone.tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"][0]
        assert where.sum() == 2
        assert torch.equal(embeds[where], vector.detach().expand(2, -1))
        assert torch.equal(embeds[~where], backbone.text_encoder.get_input_embeddings().weight[ids[~where]])
    assert not torch.equal(placed, plain)
    placed.sum().backward()
    assert vector.grad is not None and vector.grad.abs().sum() > 0
    # removing the hook leaves the backbone exactly as loaded
    assert torch.equal(backbone.encode_text(prompts), plain)
    after = _state(backbone.text_encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not backbone.text_encoder.get_input_embeddings()._forward_hooks


def test_placed_hook_removed_after_error(backbone):
    with pytest.raises(RuntimeError, match="boom"), backbone.placed(torch.zeros(1, backbone.token_dim)):
        raise RuntimeError("boom")
    assert not backbone.text_encoder.get_input_embeddings()._forward_hooks


def test_multi_vector_placeholders_take_vectors_in_order(backbone):
    vectors = torch.randn(2, backbone.token_dim)
    text = backbone.placeholder_text(2)
    assert text == "* *"
    ids = backbone.tokenizer(
        [f"a {text}"], padding="max_length", max_length=backbone.max_length, return_tensors="pt"
    ).input_ids
    with backbone.placed(vectors):
        embeds = backbone.text_encoder.get_input_embeddings()(ids)
    where = torch.nonzero(
        ids[0] == backbone.tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"][0]
    ).flatten()
    assert torch.equal(embeds[0, where[0]], vectors[0]) and torch.equal(embeds[0, where[1]], vectors[1])


def test_wrong_vector_width_is_refused(backbone):
    with (
        pytest.raises(ValueError, match=f"\\(n, {backbone.token_dim}\\)"),
        backbone.placed(torch.zeros(1, 7)),
    ):
        pass


def test_encode_decode_shapes(backbone):
    images = torch.rand(2, 3, 64, 64)
    latents = backbone.encode(images)
    assert latents.shape == (2, 4, 16, 16)
    decoded = backbone.decode(latents)
    assert decoded.shape == (2, 3, 64, 64) and decoded.min() >= 0 and decoded.max() <= 1


def test_the_vae_runs_channels_last_with_the_plain_calls_values(backbone):
    # encode/decode feed the VAE channels-last pixels (faster on the CPU); the values are the plain calls' to
    # float rounding, and what comes back is contiguous.
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    latents = backbone.encode(images)
    with torch.no_grad():
        plain = backbone.vae.encode(images * 2 - 1).latent_dist.mean * backbone.vae.config.scaling_factor
        plain_pixels = (
            (backbone.vae.decode(plain / backbone.vae.config.scaling_factor).sample + 1) / 2
        ).clamp(0, 1)
    assert latents.is_contiguous() and torch.allclose(latents, plain, atol=1e-5)
    decoded = backbone.decode(latents)
    assert decoded.is_contiguous() and torch.allclose(decoded, plain_pixels, atol=1e-4)
    bf16 = backbone.decode(latents, mixed_precision="bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, decoded)
    assert torch.allclose(bf16, decoded, atol=0.1)


def test_encode_text_takes_prompts_or_their_token_ids(backbone):
    prompts = ["a photo of *", "*"]
    ids = backbone.token_ids(prompts)
    assert ids.shape == (2, backbone.max_length) and ids.dtype == torch.long
    assert torch.equal(backbone.encode_text(ids), backbone.encode_text(prompts))


def test_unknown_layout_and_missing_folder_are_clear_errors(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "X", "unet": [], "transformer": []})
    )
    with pytest.raises(ValueError, match="unknown backbone layout"):
        load_backbone(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        load_backbone(empty)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_backbone(tmp_path / "does" / "not" / "exist")
    with pytest.raises(ValueError, match="unknown backbone layout"):
        detect_family({"unet": 1, "tokenizer": 1})


def test_init_vector_must_be_one_token(backbone):
    assert backbone.init_vector("defect").shape == (backbone.token_dim,)
    with pytest.raises(ValueError, match="single token"):
        backbone.init_vector("defect scratch")


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, caplog):
    from anogen_aug import precision

    for native, mixed_precision, warned in [
        (False, "bf16", True),
        (False, "no", False),
        (True, "bf16", False),
    ]:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="anogen_aug.precision"):
            precision.warn_if_slow_bf16(torch.device("cpu"), mixed_precision)
        assert ("emulated" in caplog.text) is warned
    with precision.autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.autocast(torch.device("cpu"), "no"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
