"""The public stage-1 step API (`encode_support`, `init_vectors`, `train_step`, `masked_mse`) and checkpoints."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from anogen_aug.backbone import Backbone
from anogen_aug.images import resize_image
from anogen_aug.inversion import (
    InversionConfig,
    encode_support,
    init_vectors,
    latest_checkpoint,
    learn_defect_embedding,
    load_checkpoint,
    masked_mse,
    save_checkpoint,
    template_ids,
    train_step,
)
from anogen_aug.masks import resize_mask
from anogen_aug.testing import tiny_backbone

SIZE, LATENT = 64, 16  # tiny backbones: 64 px, latents 4x16x16


@functools.cache
def backbone(family: str = "ldm") -> Backbone:
    return tiny_backbone(family)


def support_batch(k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` random images ``(k, 3, 64, 64)`` and masks ``(k, 1, 64, 64)`` whose edges are off the latent grid."""
    images = torch.rand(k, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(k, 1, SIZE, SIZE)
    for i in range(k):
        masks[i, :, 9 + 5 * i : 22 + 5 * i, 6 : 19 + 7 * i] = 1
    return images, masks


# --- masked_mse: the formula, written out here -------------------------------------------------------------------
def _masked_mse_by_hand(prediction, target, mask, normalizer):
    batch, channels, height, width = prediction.shape
    total = 0.0
    for b in range(batch):
        error = 0.0
        for c in range(channels):
            error += float((((prediction[b, c] - target[b, c]) * mask[b, 0]) ** 2).sum())
        area = channels * (height * width if normalizer == "latent" else float(mask[b].sum()))
        total += error / area
    return total / batch


@pytest.mark.parametrize("normalizer", ["latent", "mask"])
def test_masked_mse_is_the_papers_masked_error(normalizer):
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float64)
    mask = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    mask[0, :, :2, :3] = 1  # areas 6, 20 and 64: a per-sample mean differs from one pooled mean
    mask[1, :, 2:6, 1:6] = 1
    mask[2] = 1
    loss = masked_mse(prediction, target, mask, normalizer=normalizer)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_masked_mse_by_hand(prediction, target, mask, normalizer), rel=1e-12)


def test_masked_mse_ignores_the_error_outside_the_mask_and_refuses_unknown_normalizers():
    prediction, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    target[..., 2:, 2:] = 100.0  # only outside the mask
    assert masked_mse(prediction, target, mask).item() == 0.0
    target[..., 0, 0] = 2.0  # one cell inside, both channels: squared error 2 * 4 over 2 * 4 masked cells
    assert masked_mse(prediction, target, mask, normalizer="mask").item() == 1.0
    assert masked_mse(prediction, target, mask, normalizer="latent").item() == 8.0 / 32
    with pytest.raises(ValueError, match="`normalizer`"):
        masked_mse(prediction, target, mask, normalizer="pixels")


# --- encode_support: flips encoded, the authors' latent mask -----------------------------------------------------
@pytest.mark.parametrize("family", ["ldm", "sd"])
def test_encode_support_encodes_the_flips_and_keeps_any_overlap_in_the_latent_mask(family):
    model = backbone(family)
    images, masks = support_batch(2)
    support = encode_support(model, images, masks)

    assert support.num_images == 2
    assert support.mean.shape == support.std.shape == (4, 4, LATENT, LATENT)
    assert support.mean.dtype == support.std.dtype == support.mask.dtype == torch.float32
    # The latent mask: bilinear to the latent size, then any non-zero value counts; rows 2, 3 are the flips.
    overlap = (F.interpolate(masks, size=(LATENT, LATENT), mode="bilinear") != 0).float()
    assert torch.equal(support.mask, torch.cat([overlap, overlap.flip(-1)]))
    nearest = F.interpolate(masks, size=(LATENT, LATENT), mode="nearest")
    assert not torch.equal(support.mask[:2], nearest), "the fixture's mask edges must tell the rules apart"
    # The flips are encoded (the VAE is not flip-equivariant), with the scaling factor from the VAE's config.
    with torch.no_grad():
        flipped = model.encode_distribution(images.flip(-1))
    scale = model.vae.config.scaling_factor
    assert torch.allclose(support.mean[2:], flipped.mean * scale, atol=1e-6)
    assert torch.allclose(support.std[2:], flipped.std * scale, atol=1e-6)
    assert not torch.allclose(support.mean[2:], support.mean[:2].flip(-1), atol=1e-3)


def test_encode_support_refuses_misshapen_inputs():
    model = backbone()
    images, masks = support_batch(2)
    with pytest.raises(ValueError, match=r"`images` must be \(K, 3, R, R\)"):
        encode_support(model, images[0], masks)
    with pytest.raises(ValueError, match=r"`masks` must be \(K, 1, R, R\) with K = 2"):
        encode_support(model, images, masks[:1])
    with pytest.raises(ValueError, match="height and width"):
        encode_support(model, images, masks[..., :32])


# --- init_vectors and train_step ---------------------------------------------------------------------------------
def test_init_vectors_repeats_the_init_words_embedding():
    model = backbone()
    vectors = init_vectors(model, InversionConfig(init_word="crack", num_vectors=3))
    assert vectors.shape == (3, model.token_dim) and vectors.dtype == torch.float32
    assert all(torch.equal(row, model.init_vector("crack").float()) for row in vectors)
    assert not torch.equal(vectors[0], model.init_vector("defect").float())


@pytest.mark.parametrize("family", ["ldm", "sd"])
def test_driving_train_step_reproduces_learn_defect_embedding_bit_for_bit(family):
    # The seam the speed benchmark drives: the public parts, called in the documented order, ARE the story.
    model = backbone(family)
    images, masks = support_batch(2)
    config = InversionConfig(max_train_steps=3, train_batch_size=2)
    expected = []
    embedding = learn_defect_embedding(
        model,
        images,
        masks,
        config=config,
        generator=torch.Generator().manual_seed(4),
        progress=False,
        callback=lambda step, loss: expected.append(loss),
    )

    support = encode_support(model, images, masks)
    vectors = init_vectors(model, config).requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=config.effective_learning_rate, weight_decay=1e-2)
    scheduler, generator = model.make_noise_scheduler(), torch.Generator().manual_seed(4)
    losses = [
        train_step(model, support, vectors, optimizer, scheduler, config=config, generator=generator)
        for _ in range(3)
    ]
    assert losses == expected
    assert torch.equal(vectors.detach(), embedding.vectors)
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_template_ids_tokenise_each_template_once_with_the_placeholders_in_place():
    model = backbone("sd")
    config = InversionConfig(
        num_vectors=2, templates=("a photo of a {}", "{} on a cable"), train_batch_size=3
    )
    ids = template_ids(model, config)  # (T, L)
    placeholder = model.tokenizer(model.placeholder_text(1), add_special_tokens=False)["input_ids"][0]
    assert ids.shape == (2, model.max_length)
    for row, template in zip(ids, config.prompt_templates):
        assert torch.equal(row, model.token_ids([template.format(model.placeholder_text(2))])[0])
        assert int((row == placeholder).sum()) == 2
    # Passing them gives the very losses of tokenising at every step; ids of other templates are refused.
    images, masks = support_batch(2)
    support = encode_support(model, images, masks)
    losses = []
    for prompt_ids in (None, ids):
        vectors = init_vectors(model, config).requires_grad_(True)
        optimizer = torch.optim.AdamW([vectors], lr=config.effective_learning_rate)
        generator, scheduler = torch.Generator().manual_seed(1), model.make_noise_scheduler()
        losses.append([
            train_step(model, support, vectors, optimizer, scheduler, config=config, generator=generator,
                       prompt_ids=prompt_ids)
            for _ in range(2)
        ])  # fmt: skip
    assert losses[0] == losses[1]
    with pytest.raises(ValueError, match="prompt_ids"):
        train_step(model, support, vectors, optimizer, scheduler, config=config, generator=generator,
                   prompt_ids=ids[:1])  # fmt: skip


def test_each_row_is_conditioned_on_the_template_drawn_for_it():
    # The draws in the documented order (support index, flip, timestep, template), replayed here with the same
    # seed; each row's text must be its own template with the placeholder, tokenised independently of the step.
    model = backbone("sd")
    config = InversionConfig(
        templates=("a photo of a {}", "{} on a cable", "a close-up of {}"), train_batch_size=4
    )
    images, masks = support_batch(2)
    support = encode_support(model, images, masks)
    vectors = init_vectors(model, config).requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=config.effective_learning_rate)
    scheduler = model.make_noise_scheduler()
    replay = torch.Generator().manual_seed(7)
    torch.randint(0, support.num_images, (4,), generator=replay)
    torch.rand(4, generator=replay)
    torch.randint(0, scheduler.config.num_train_timesteps, (4,), generator=replay)
    choice = torch.randint(0, 3, (4,), generator=replay).tolist()
    assert len(set(choice)) > 1  # the seed draws different templates, so a row mix-up shows
    texts = [config.prompt_templates[j].format(model.placeholder_text(1)) for j in choice]
    expected = model.tokenizer(texts, padding="max_length", max_length=model.max_length, truncation=True,
                               return_tensors="pt").input_ids  # fmt: skip
    seen = []
    encode_text = model.encode_text
    model.encode_text = lambda ids: seen.append(ids) or encode_text(ids)
    try:
        for prompt_ids in (None, template_ids(model, config)):
            generator = torch.Generator().manual_seed(7)
            train_step(model, support, vectors, optimizer, scheduler, config=config, generator=generator,
                       prompt_ids=prompt_ids)  # fmt: skip
    finally:
        del model.encode_text
    assert len(seen) == 2 and all(torch.equal(ids.cpu(), expected) for ids in seen)


def test_the_support_set_is_resized_bicubically_mask_and_all_before_encoding():
    # A 128 px support set: learn_defect_embedding's losses equal a drive on the bicubic resize of the images
    # and masks (images.resize_image, masks.resize_mask rule "bicubic"). The mask's 1 px line survives the
    # bilinear "majority" rule but not the bicubic one, so the latent masks (and losses) of the two rules differ.
    model = backbone()
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 128, 128)
    mask[:, 20:50, 30:60] = 1
    mask[:, 90:120, 100] = 1  # a 1 px vertical line, away from the rectangle's latent cells
    config = InversionConfig(max_train_steps=2, train_batch_size=2)
    expected = []
    learn_defect_embedding(
        model,
        [image],
        [mask],
        config=config,
        progress=False,
        callback=lambda step, loss: expected.append(loss),
    )

    def drive(rule):
        pixels, pixel_mask = resize_image(image, (SIZE, SIZE)), resize_mask(mask, SIZE, rule=rule)
        support = encode_support(model, pixels[None], pixel_mask[None])
        vectors = init_vectors(model, config).requires_grad_(True)
        optimizer = torch.optim.AdamW([vectors], lr=config.effective_learning_rate, weight_decay=1e-2)
        scheduler, generator = model.make_noise_scheduler(), torch.Generator().manual_seed(0)
        steps = range(config.max_train_steps)
        losses = [
            train_step(model, support, vectors, optimizer, scheduler, config=config, generator=generator)
            for _ in steps
        ]
        return support.mask, losses

    bicubic_mask, losses = drive("bicubic")
    assert losses == expected
    majority_mask, other_losses = drive("majority")
    assert not torch.equal(majority_mask, bicubic_mask) and other_losses != expected


# --- checkpoints ---------------------------------------------------------------------------------------------------
def _stepped(value: float) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    vectors = torch.full((1, 4), value, requires_grad=True)
    optimizer = torch.optim.AdamW([vectors], lr=0.1)
    vectors.sum().backward()
    optimizer.step()
    return vectors, optimizer


def test_checkpoints_round_trip_and_the_latest_complete_one_is_found(tmp_path):
    meta = {"config": {"a": 1}, "support_hashes": ["x"], "backbone": "b", "token_dim": 4, "resolution": 64}
    vectors, optimizer = _stepped(1.0)
    generator = torch.Generator().manual_seed(9)
    save_checkpoint(tmp_path, 2, vectors, optimizer, generator, meta)
    torch.rand(3, generator=generator)
    save_checkpoint(tmp_path, 10, vectors, optimizer, generator, meta)
    (tmp_path / "checkpoint-11").mkdir()  # incomplete: no checkpoint.json
    (tmp_path / "checkpoint-11" / "state.safetensors").write_bytes(b"")
    (tmp_path / ".checkpoint-12.tmp").mkdir()  # a staging folder
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert latest_checkpoint(tmp_path / "missing") is None

    save_checkpoint(tmp_path, 10, vectors, optimizer, generator, meta)  # a rerun swaps in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".checkpoint-12.tmp",
        "checkpoint-10",
        "checkpoint-11",
        "checkpoint-2",
    ]

    restored, restored_optimizer = _stepped(5.0)
    restored_generator = torch.Generator()
    step = load_checkpoint(tmp_path / "checkpoint-10", restored, restored_optimizer, restored_generator, meta)
    assert step == 10
    assert torch.equal(restored, vectors)
    saved_state, state = optimizer.state_dict()["state"][0], restored_optimizer.state_dict()["state"][0]
    assert all(torch.equal(torch.as_tensor(saved_state[k]), torch.as_tensor(state[k])) for k in saved_state)
    assert torch.equal(restored_generator.get_state(), generator.get_state())

    with pytest.raises(ValueError, match=r"settings \['a'\] differ"):
        load_checkpoint(
            tmp_path / "checkpoint-10", restored, restored_optimizer, generator, {**meta, "config": {"a": 2}}
        )
    with pytest.raises(ValueError, match="different support set"):
        load_checkpoint(
            tmp_path / "checkpoint-10",
            restored,
            restored_optimizer,
            generator,
            {**meta, "support_hashes": []},
        )
