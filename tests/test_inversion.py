"""Stage 1 (mask-guided textual inversion) on tiny real backbones of both families."""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from anogen_aug.backbone import Backbone
from anogen_aug.embedding import DefectEmbedding
from anogen_aug.images import content_hash
from anogen_aug.inversion import (
    IMAGENET_TEMPLATES_SMALL,
    InversionConfig,
    encode_support,
    learn_defect_embedding,
    train_step,
)
from anogen_aug.testing import tiny_backbone

FAMILIES = ["ldm", "sd"]
SIZE, LATENT = 64, 16  # tiny backbones: 64 px, latents 4x16x16
#: Defect rows/columns; edges off the 4 px latent grid, so "bilinear then != 0" differs from nearest.
DEFECT = (slice(None), slice(9, 22), slice(6, 19))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny models gain nothing from intra-op threads, and on shared cores OpenMP threads spin-wait for
    # each other: one thread is ~10x faster here. Restored afterwards for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def backbone(family: str) -> Backbone:
    return tiny_backbone(family)


def support(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 64 px image and a rectangular defect mask in its top-left corner (not flip-symmetric)."""
    image = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[DEFECT] = 1
    return image, mask


def expected_latent_mask(mask: torch.Tensor, flip: bool) -> torch.Tensor:
    """The authors' latent mask, computed here independently: bilinear to latent size, any overlap counts."""
    latent = (F.interpolate(mask[None], size=(LATENT, LATENT), mode="bilinear") != 0).float()  # (1, 1, h, w)
    return latent.flip(-1) if flip else latent


def tiny_config(**changes) -> InversionConfig:
    return InversionConfig(**{"max_train_steps": 4, "train_batch_size": 2, **changes})


def one_step(model, image, mask, config, *, seed=3):
    """One `train_step` with a zero learning rate: returns (loss, the vector's gradient)."""
    latents = encode_support(model, image[None], mask[None])
    vectors = model.init_vector(config.init_word)[None].clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=0.0)
    generator = torch.Generator().manual_seed(seed)
    scheduler = model.make_noise_scheduler()
    loss = train_step(model, latents, vectors, optimizer, scheduler, config=config, generator=generator)
    return loss, vectors.grad.clone()


@contextmanager
def unet_output(model, delta=None):
    """Capture the UNet's prediction (its last layer's output) and optionally add ``delta`` to it."""
    captured = {}

    def hook(module, inputs, output):
        output = output if delta is None else output + delta
        output.retain_grad()
        captured["prediction"] = output
        return output

    handle = model.unet.conv_out.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


# --- 1. only the vector trains ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_vector_trains_and_the_backbone_is_untouched(family, tmp_path):
    model = backbone(family)
    modules = {"text_encoder": model.text_encoder, "unet": model.unet, "vae": model.vae}
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    image, mask = support()
    config = tiny_config()

    embedding = learn_defect_embedding(
        model, [image], [mask], config=config, category="bottle", defect_type="broken", progress=False
    )

    for name, module in modules.items():
        after = module.state_dict()
        assert after.keys() == before[name].keys()
        changed = [k for k, v in after.items() if not torch.equal(v, before[name][k])]
        assert not changed, f"{name} parameters changed: {changed[:3]}"
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training
    assert not model.text_encoder.get_input_embeddings()._forward_hooks
    init = model.init_vector("defect")
    assert embedding.vectors.shape == (1, model.token_dim)
    assert embedding.vectors.dtype == torch.float32
    assert not torch.equal(embedding.vectors[0], init)
    assert embedding.placeholder_token == "<broken>"
    assert (embedding.category, embedding.defect_type, embedding.init_word) == ("bottle", "broken", "defect")
    assert embedding.steps == 4 and embedding.config == config.to_dict()
    assert embedding.support_hashes == [content_hash(image)]
    assert embedding.backbone == model.name_or_path
    embedding.check_backbone(model)
    embedding.save_pretrained(tmp_path)
    loaded = DefectEmbedding.from_pretrained(tmp_path)
    assert torch.equal(loaded.vectors, embedding.vectors)
    assert loaded.config == config.to_dict() and loaded.extra["resolution"] == SIZE


# --- 2. the loss sees only the mask ------------------------------------------------------------------------------
@pytest.mark.parametrize("flip_p", [0.0, 1.0])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_loss_sees_only_the_mask(family, flip_p):
    # The UNet sees the whole noisy latent, so what is masked is the ERROR: the loss's gradient w.r.t. the
    # prediction must be non-zero exactly on the latent mask (flipped with the image), and changing the
    # prediction outside the mask must leave the loss and the vector's gradient bit-identical.
    model = backbone(family)
    image, mask = support()
    config = tiny_config(flip_p=flip_p)
    keep = expected_latent_mask(mask, flip=flip_p == 1.0)  # (1, 1, h, w)

    with unet_output(model) as captured:
        loss, grad = one_step(model, image, mask, config)
    prediction_grad = captured["prediction"].grad  # (B, C, h, w)
    assert torch.equal(prediction_grad != 0, keep.bool().expand_as(prediction_grad))

    shape = captured["prediction"].shape
    outside = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1)) * (1 - keep)
    with unet_output(model, delta=outside):
        loss_outside, grad_outside = one_step(model, image, mask, config)
    assert loss_outside == loss
    assert torch.equal(grad_outside, grad)

    inside = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1)) * keep
    with unet_output(model, delta=inside):
        loss_inside, grad_inside = one_step(model, image, mask, config)
    assert loss_inside != loss
    assert not torch.equal(grad_inside, grad)

    changed = image.clone()
    changed[DEFECT] = 1 - changed[DEFECT]  # pixels inside the defect
    assert not torch.equal(one_step(model, changed, mask, config)[1], grad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_loss_is_the_masked_objective(prediction_type):
    # Rebuild one step's batch from the documented draw order and check the loss against
    # mean(((prediction - target) * M)^2), target = eps or v.
    base = backbone("ldm")
    model = Backbone(
        family=base.family,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        vae=base.vae,
        scheduler_config=dict(
            DDIMScheduler.from_config(base.scheduler_config, prediction_type=prediction_type).config
        ),
        name_or_path=base.name_or_path,
    )
    image, mask = support()
    config = tiny_config(flip_p=0.5)
    with unet_output(model) as captured:
        loss, _ = one_step(model, image, mask, config, seed=11)
    prediction = captured["prediction"].detach()

    draws = torch.Generator().manual_seed(11)
    batch = config.train_batch_size
    torch.randint(0, 1, (batch,), generator=draws)  # which support image (there is one)
    flip = torch.rand(batch, generator=draws) < config.flip_p
    timesteps = torch.randint(0, 1000, (batch,), generator=draws)
    torch.randint(0, len(IMAGENET_TEMPLATES_SMALL), (batch,), generator=draws)
    posterior_noise = torch.randn(prediction.shape, generator=draws)
    noise = torch.randn(prediction.shape, generator=draws)
    with torch.no_grad():
        posterior = model.encode_distribution(torch.stack([image, image.flip(-1)]))
    rows = flip.long()
    scale = model.vae.config.scaling_factor
    latents = (posterior.mean[rows] + posterior.std[rows] * posterior_noise) * scale
    scheduler = model.make_noise_scheduler()
    velocity = scheduler.get_velocity(latents, noise, timesteps)
    keep = torch.cat([expected_latent_mask(mask, flip=bool(f)) for f in flip])  # (B, 1, h, w)

    def objective(target):
        return (((prediction - target) ** 2) * keep).mean().item()

    right, wrong = (noise, velocity) if prediction_type == "epsilon" else (velocity, noise)
    assert loss == pytest.approx(objective(right), rel=1e-4)
    assert loss != pytest.approx(objective(wrong), rel=1e-2)


def test_unsupported_prediction_type_is_refused():
    base = backbone("ldm")
    config = dict(DDIMScheduler.from_config(base.scheduler_config, prediction_type="sample").config)
    model = Backbone(base.family, base.text_encoder, base.tokenizer, base.unet, base.vae, config)
    image, mask = support()
    with pytest.raises(ValueError, match="'sample'"):
        learn_defect_embedding(model, [image], [mask], config=tiny_config())


# --- 3. resume equals uninterrupted ------------------------------------------------------------------------------
class _Crash(Exception):
    pass


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_reaches_the_same_vector_as_an_uninterrupted_run(family, tmp_path):
    model = backbone(family)
    image, mask = support()
    config = tiny_config(max_train_steps=4, checkpointing_steps=2)

    def learn(folder, *, resume=False, callback=None):
        return learn_defect_embedding(
            model,
            [image],
            [mask],
            config=config,
            generator=torch.Generator().manual_seed(7),
            output_dir=folder,
            resume=resume,
            progress=False,
            callback=callback,
        )

    uninterrupted = learn(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint-2", "checkpoint-4"]

    def crash_after_3(step, loss):
        if step == 3:
            raise _Crash

    with pytest.raises(_Crash):
        learn(tmp_path / "b", callback=crash_after_3)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-2"]  # no staging left behind

    steps = []
    resumed = learn(tmp_path / "b", resume=True, callback=lambda step, loss: steps.append(step))
    assert steps == [3, 4]
    assert torch.equal(resumed.vectors, uninterrupted.vectors)

    steps.clear()
    again = learn(tmp_path / "b", resume=True, callback=lambda step, loss: steps.append(step))
    assert steps == [] and torch.equal(again.vectors, uninterrupted.vectors)

    with pytest.raises(ValueError, match="learning_rate"):
        learn_defect_embedding(
            model,
            [image],
            [mask],
            config=tiny_config(learning_rate=1e-3),
            output_dir=tmp_path / "b",
            resume=True,
        )


# --- 4. same seed, same bytes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes_and_another_seed_differs(family):
    model = backbone(family)
    image, mask = support()
    second_image, second_mask = support(seed=1)
    second_mask = second_mask.flip(-2)

    def learn(seed):
        return learn_defect_embedding(
            model,
            [image, second_image],
            [mask, second_mask],
            config=tiny_config(max_train_steps=2),
            generator=torch.Generator().manual_seed(seed),
            progress=False,
        ).vectors

    first = learn(5)
    assert torch.equal(first, learn(5))
    assert not torch.equal(first, learn(6))


def test_bf16_mixed_precision_keeps_a_float32_vector():
    model = backbone("ldm")
    image, mask = support()
    embedding = learn_defect_embedding(
        model, [image], [mask], config=tiny_config(max_train_steps=2, mixed_precision="bf16"), progress=False
    )
    assert embedding.vectors.dtype == torch.float32
    assert torch.isfinite(embedding.vectors).all()
    assert not torch.equal(embedding.vectors[0], model.init_vector("defect"))


# --- 5. bad input ------------------------------------------------------------------------------------------------
def test_bad_support_sets_are_refused_with_the_argument_named():
    model = backbone("ldm")
    image, mask = support()

    def learn(images, masks, **kwargs):
        return learn_defect_embedding(model, images, masks, config=tiny_config(), progress=False, **kwargs)

    with pytest.raises(
        ValueError, match=r"`masks\[1\]` must have the same height and width as `images\[1\]` "
    ):
        learn([image, image], [mask, torch.ones(1, 32, 48)])
    with pytest.raises(ValueError, match=r"\(64x64\), got 32x48"):
        learn([image, image], [mask, torch.ones(1, 32, 48)])
    with pytest.raises(ValueError, match=r"`masks\[1\]` is empty"):
        learn([image, image], [mask, torch.zeros(1, SIZE, SIZE)])
    with pytest.raises(ValueError, match="at least one"):
        learn([], [])
    with pytest.raises(ValueError, match="one mask per image"):
        learn([image, image], [mask])
    with pytest.raises(ValueError, match="resume"):
        learn([image], [mask], resume=True)
    with pytest.raises(ValueError, match="defect_type"):
        learn([image], [mask], defect_type="broken large")
    big, tiny_mask = torch.rand(3, 256, 256), torch.zeros(1, 256, 256)
    tiny_mask[:, 100, 100] = 1
    with pytest.raises(ValueError, match=r"`masks\[0\]` has no pixel left after resizing"):
        learn([big], [tiny_mask])
    with pytest.raises(TypeError, match="config"):
        learn_defect_embedding(model, [image], [mask], config={"max_train_steps": 3})


@pytest.mark.parametrize("family", FAMILIES)
def test_init_word_must_be_one_known_token(family):
    model = backbone(family)
    image, mask = support()
    with pytest.raises(ValueError, match="single token"):
        learn_defect_embedding(model, [image], [mask], config=tiny_config(init_word="broken defect"))
    with pytest.raises(ValueError, match="multiple of"):
        learn_defect_embedding(model, [image], [mask], config=tiny_config(resolution=66))


def test_unknown_init_word_is_refused():
    model = backbone("ldm")  # the BERT tokenizer maps unknown words to one [UNK] token
    image, mask = support()
    with pytest.raises(ValueError, match="vocabulary"):
        learn_defect_embedding(model, [image], [mask], config=tiny_config(init_word="sculpture"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_train_steps", 0),
        ("train_batch_size", 1.5),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("scale_lr", "yes"),
        ("resolution", 0),
        ("init_word", " "),
        ("num_vectors", 0),
        ("flip_p", 1.5),
        ("templates", ["no placeholder"]),
        ("templates", ["{} and {}"]),
        ("templates", []),
        ("templates", "a photo of a {}"),
        ("loss_normalizer", "x"),
        ("adam_weight_decay", -1.0),
        ("checkpointing_steps", 0),
        ("mixed_precision", "fp16"),
    ],
)
def test_invalid_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        InversionConfig(**{field: value})


# --- 6. defaults and serialisation --------------------------------------------------------------------------------
def test_config_defaults_are_the_reference_settings():
    config = InversionConfig()
    assert config.max_train_steps == 6100
    assert config.train_batch_size == 4
    assert config.learning_rate == 5e-3 and config.scale_lr is True
    assert config.effective_learning_rate == pytest.approx(0.02)
    assert config.init_word == "defect" and config.num_vectors == 1
    assert config.flip_p == 0.5 and config.resolution is None
    assert config.loss_normalizer == "latent" and config.adam_weight_decay == 1e-2
    assert config.checkpointing_steps == 500 and config.mixed_precision == "no"
    templates = config.prompt_templates
    assert len(templates) == 81 and len(set(templates)) == 57
    assert templates[0] == "a photo of a {}" and templates[26] == "a photo of a small {}"
    assert templates[27] == "an illustration of a {}" and templates[54] == "a depiction of a {}"
    assert templates[80] == "a depiction of a small {}" and templates[57] == "the photo of a {}"


def test_config_round_trips_through_json():
    config = InversionConfig(max_train_steps=10, templates=["a {} on a part"], loss_normalizer="mask")
    assert config.templates == ("a {} on a part",)
    restored = InversionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    with pytest.raises(ValueError, match="unknown"):
        InversionConfig.from_dict({"max_steps": 3})


# --- 7. the mask normaliser --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_mask_normaliser_rescales_by_latent_area_over_mask_area(family):
    model = backbone(family)
    image, mask = support()
    latent_loss, _ = one_step(model, image, mask, tiny_config(loss_normalizer="latent"))
    mask_loss, _ = one_step(model, image, mask, tiny_config(loss_normalizer="mask"))
    area = expected_latent_mask(mask, flip=False).sum().item()  # flipping keeps the area
    assert 0 < area < LATENT * LATENT
    assert mask_loss == pytest.approx(latent_loss * LATENT * LATENT / area, rel=1e-5)
