"""Stage 2: box-conditioned generation on tiny real backbones of both families (64 px, a few DDIM steps)."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from anogen_aug.boxes import boxes_to_mask
from anogen_aug.embedding import DefectEmbedding
from anogen_aug.generation import (
    AnomalyGenerator,
    GenerationConfig,
    choose_window,
    crop_window,
    estimate_change_mask,
    latent_keep_mask,
    place_window,
    spawn_generators,
)
from anogen_aug.images import quantize
from anogen_aug.synthesis import AnomalyGeneratorProtocol, Synthesis
from anogen_aug.testing import tiny_backbone

STEPS = 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine two threads spin and run ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["ldm", "sd"])
def backbone(request):
    return tiny_backbone(request.param)


@pytest.fixture(scope="module")
def embedding(backbone):
    vectors = torch.randn(1, backbone.token_dim, generator=torch.Generator().manual_seed(0))
    return DefectEmbedding(vectors, placeholder_token="<scratch>", backbone=backbone.name_or_path)


def make(backbone, embedding, **kwargs) -> AnomalyGenerator:
    return AnomalyGenerator(backbone, embedding, config=GenerationConfig(num_inference_steps=STEPS, **kwargs))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random image (3, H, W) in [0, 1], deliberately NOT on the 8-bit grid."""
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=seeded(seed))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0].clamp(0, 1)


@contextlib.contextmanager
def unet_calls(backbone):
    """Record the input shape of every UNet call (a forward hook; nothing is replaced)."""
    shapes: list[tuple[int, ...]] = []
    handle = backbone.unet.register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        yield shapes
    finally:
        handle.remove()


def outside(tensor: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
    return tensor[:, ~box_mask[0].bool()]


# --- the background stays exact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "boxes"),
    [
        (64, 64, [[10.0, 12.0, 30.0, 40.0]]),
        (48, 80, [[50.0, 5.0, 70.0, 30.0], [3.5, 20.2, 15.0, 44.0]]),
        (200, 160, [[100.0, 120.0, 124.0, 140.0]]),  # larger than the model: local mode
    ],
)
def test_paste_back_keeps_every_pixel_outside_the_boxes(backbone, embedding, height, width, boxes):
    image = random_image(height, width)
    result = make(backbone, embedding).generate(image, torch.tensor(boxes), generator=seeded(0))
    assert result.image.shape == (3, height, width)
    assert torch.equal(outside(result.image, result.box_mask), outside(image, result.box_mask))
    inside = result.image[:, result.box_mask[0].bool()] - image[:, result.box_mask[0].bool()]
    assert inside.abs().mean() > 0.02  # the box was generated, not copied


def test_paste_back_false_is_the_authors_behaviour(backbone, embedding):
    image = random_image(64, 64)
    boxes = torch.tensor([[20.0, 20.0, 40.0, 40.0]])
    result = make(backbone, embedding, paste_back=False).generate(image, boxes, generator=seeded(0))
    changed = (outside(result.image, result.box_mask) != outside(image, result.box_mask)).any(0)
    assert changed.float().mean() > 0.5  # the whole decoded image replaces the input
    assert torch.equal(result.image, quantize(result.image))


def test_paste_back_false_in_local_mode_replaces_only_the_window(backbone, embedding):
    image = random_image(256, 256)
    boxes = torch.tensor([[100.0, 100.0, 116.0, 116.0]])  # window: side max(64, 2 * 16) = 64 around the box
    result = make(backbone, embedding, paste_back=False).generate(image, boxes, generator=seeded(0))
    window = torch.zeros(1, 256, 256, dtype=torch.bool)
    window[:, 76:140, 76:140] = True
    assert torch.equal(result.image[:, ~window[0]], image[:, ~window[0]])
    assert (result.image[:, window[0]] != image[:, window[0]]).any(0).float().mean() > 0.5


# --- output contract ----------------------------------------------------------------------------------------------


def test_synthesis_shapes_masks_and_grid(backbone, embedding):
    image = random_image(48, 80)
    boxes = torch.tensor([[5.0, 5.0, 30.0, 30.0], [50.0, 10.0, 75.0, 40.0]])
    generator = make(backbone, embedding)
    assert isinstance(generator, AnomalyGeneratorProtocol) and generator.name == "anogen"
    result = generator.generate(image, boxes, generator=seeded(1))
    assert isinstance(result, Synthesis)
    assert result.image.shape == (3, 48, 80) and result.image.dtype == torch.float32
    assert result.box_mask.shape == result.mask.shape == (1, 48, 80)
    assert torch.equal(result.box_mask, boxes_to_mask(boxes, 48, 80))
    assert torch.equal(result.boxes, boxes)
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0}
    assert (result.mask <= result.box_mask).all()
    assert result.mask.sum() > 0
    in_box = result.image[:, result.box_mask[0].bool()]
    assert torch.equal(in_box, quantize(in_box))  # generated pixels are on the 8-bit grid (PNG round trip)
    settings = json.loads(json.dumps(generator.settings()))
    assert settings["embedding_id"] == generator.embedding.id
    assert settings["backbone"] == backbone.name_or_path and settings["prompt_text"] == "*"


def test_same_seed_same_bytes_different_seed_different(backbone, embedding):
    image = random_image(64, 64)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 30.0]])
    generator = make(backbone, embedding, eta=0.5)  # eta > 0 draws DDIM noise too
    first = generator.generate(image, boxes, generator=seeded(3))
    again = generator.generate(image, boxes, generator=seeded(3))
    other = generator.generate(image, boxes, generator=seeded(4))
    assert torch.equal(first.image, again.image) and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.image, other.image)


def test_mask_threshold_is_monotone(backbone, embedding):
    image = random_image(64, 64)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    low = make(backbone, embedding, mask_threshold=0.02).generate(image, boxes, generator=seeded(5))
    high = make(backbone, embedding, mask_threshold=0.3).generate(image, boxes, generator=seeded(5))
    assert torch.equal(low.image, high.image)
    assert (high.mask <= low.mask).all() and low.mask.sum() > high.mask.sum()
    assert (
        make(backbone, embedding, mask_threshold=0.999).generate(image, boxes, generator=seeded(5)).mask.sum()
        == 0
    )


def test_change_mask_recovers_a_changed_blob():
    image = torch.full((3, 64, 64), 0.5)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    blob = (yy - 30) ** 2 + (xx - 28) ** 2 < 8**2
    final = image.clone()
    final[:, blob] = 0.9
    final[:, 12:44, 12:44] += 0.004 * torch.rand(3, 32, 32, generator=seeded(0))  # decoder noise
    boxes = torch.tensor([[12.0, 12.0, 44.0, 44.0]])
    mask = estimate_change_mask(image, final, boxes, threshold=None, scale=1.0)[0].bool()
    iou = (mask & blob).sum() / (mask | blob).sum()
    assert iou > 0.85
    assert not mask[:12].any() and not mask[44:].any()


# --- local mode -------------------------------------------------------------------------------------------------


def test_choose_window_is_a_model_sized_square_around_the_boxes_inside_the_image():
    small = torch.tensor([[100.0, 100.0, 116.0, 116.0]])
    assert choose_window(small, 256, 256, resolution=64, context=2.0) == (76, 76, 140, 140)  # centred
    assert choose_window(small, 256, 256, resolution=64, context=2.0, local=False) == (0, 0, 256, 256)
    assert choose_window(small, 64, 128, resolution=128, context=2.0) == (
        0,
        0,
        128,
        64,
    )  # no larger than the model
    corner = torch.tensor([[0.0, 250.0, 10.0, 256.0]])
    assert choose_window(corner, 256, 256, resolution=64, context=2.0) == (0, 192, 64, 256)  # shifted inside
    large = torch.tensor([[10.0, 20.0, 110.0, 60.0]])  # extent 100: side 2 * 100
    assert choose_window(large, 256, 256, resolution=64, context=2.0) == (0, 0, 200, 200)
    assert choose_window(large, 256, 256, resolution=64, context=3.0) == (
        0,
        0,
        256,
        256,
    )  # clipped to the image


def test_latent_keep_mask_zeroes_every_cell_a_box_touches():
    window = (0, 0, 64, 64)  # 4 px per cell of a 16 x 16 latent
    keep = latent_keep_mask(torch.tensor([[5.0, 5.0, 9.0, 9.0]]), window, (16, 16))
    assert keep.shape == (1, 16, 16) and keep[0, 1:3, 1:3].eq(0).all() and keep.sum() == 256 - 4
    on_grid = latent_keep_mask(torch.tensor([[4.0, 4.0, 8.0, 8.0]]), window, (16, 16))
    assert on_grid.sum() == 256 - 1 and on_grid[0, 1, 1] == 0  # edges on cell borders touch no neighbour
    shifted = latent_keep_mask(torch.tensor([[36.0, 36.0, 40.0, 40.0]]), (32, 32, 96, 96), (16, 16))
    assert shifted.sum() == 256 - 1 and shifted[0, 1, 1] == 0  # window coordinates


def test_crop_and_place_window_touch_only_the_window():
    image = random_image(96, 128)
    window = (40, 16, 104, 80)  # 64 x 64: no resize at resolution 64
    crop = crop_window(image, window, 64)
    assert crop.shape == (1, 3, 64, 64) and torch.equal(crop[0], image[:, 16:80, 40:104])
    assert crop_window(image, window, 32).shape == (1, 3, 32, 32)
    decoded = torch.zeros(3, 32, 32)
    placed = place_window(image, decoded, window)
    inside = torch.zeros(96, 128, dtype=torch.bool)
    inside[16:80, 40:104] = True
    assert torch.equal(placed[:, ~inside], image[:, ~inside]) and placed[:, inside].eq(0).all()


def test_local_mode_costs_the_same_as_a_model_sized_image(backbone, embedding):
    generator = make(backbone, embedding)
    latent = backbone.unet.config.sample_size
    large, small = random_image(256, 256), random_image(64, 64)
    with unet_calls(backbone) as shapes_large:
        generator.generate(large, torch.tensor([[100.0, 100.0, 116.0, 116.0]]), generator=seeded(0))
    with unet_calls(backbone) as shapes_small:
        generator.generate(small, torch.tensor([[24.0, 24.0, 40.0, 40.0]]), generator=seeded(0))
    assert shapes_large == shapes_small == [(2, 4, latent, latent)] * STEPS


def test_local_mode_encodes_a_window_around_the_box(backbone, embedding):
    large = random_image(256, 256)
    boxes = torch.tensor([[100.0, 100.0, 116.0, 116.0]])
    seen = []
    handle = backbone.vae.encoder.register_forward_hook(
        lambda module, args, output: seen.append(args[0].clone())
    )
    try:
        make(backbone, embedding).generate(large, boxes, generator=seeded(0))
        make(backbone, embedding, local=False).generate(large, boxes, generator=seeded(0))
    finally:
        handle.remove()
    window = large[:, 76:140, 76:140] * 2 - 1  # side max(64, 2 * 16) = 64, centred on the box: no resize
    assert seen[0].shape == seen[1].shape == (1, 3, 64, 64)
    assert torch.allclose(seen[0][0], window, atol=1e-6)
    assert not torch.allclose(seen[1][0], window, atol=0.05)  # global mode: the whole image, resized


# --- batching -----------------------------------------------------------------------------------------------------


def test_batch_equals_separate_calls_with_fewer_unet_calls(backbone, embedding):
    generator = make(backbone, embedding)
    images = [random_image(64, 64, 1), random_image(48, 80, 2), random_image(64, 64, 3)]
    boxes = [
        torch.tensor([[4.0, 4.0, 20.0, 30.0]]),
        torch.tensor([[60.0, 8.0, 78.0, 40.0]]),
        torch.tensor([[30.0, 30.0, 60.0, 60.0]]),
    ]
    with unet_calls(backbone) as batched_calls:
        batched = generator.generate_batch(images, boxes, generator=seeded(9), progress=False)
    again = generator.generate_batch(images, boxes, generator=seeded(9), progress=False)
    with unet_calls(backbone) as separate_calls:
        separate = [
            generator.generate(image, box, generator=g)
            for image, box, g in zip(images, boxes, spawn_generators(seeded(9), 3))
        ]
    assert len(batched_calls) == STEPS and batched_calls[0][0] == 6  # 3 images x (uncond, cond) in one call
    assert len(separate_calls) == 3 * STEPS
    for one, two, three in zip(batched, again, separate):
        assert torch.equal(one.image, two.image) and torch.equal(one.mask, two.mask)
        assert torch.allclose(
            one.image, three.image, atol=1.01 / 255, rtol=0
        )  # batched vs separate UNet calls
        assert torch.equal(one.box_mask, three.box_mask)


def test_max_batch_size_caps_unet_rows_and_a_list_of_generators(backbone, embedding):
    images = [random_image(64, 64, s) for s in range(3)]
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 30.0]])] * 3
    reference = make(backbone, embedding).generate_batch(
        images, boxes, generator=[seeded(s) for s in range(3)]
    )
    with unet_calls(backbone) as calls:
        capped = make(backbone, embedding, max_batch_size=1).generate_batch(
            images, boxes, generator=[seeded(s) for s in range(3)], progress=False
        )
    assert len(calls) == 2 * 3 * STEPS and all(shape[0] == 1 for shape in calls)
    single = make(backbone, embedding).generate(images[1], boxes[1], generator=seeded(1))
    assert torch.allclose(single.image, reference[1].image, atol=1.01 / 255, rtol=0)
    for one, two in zip(reference, capped):
        assert torch.allclose(one.image, two.image, atol=1.01 / 255, rtol=0)


def test_guidance_scale_one_skips_the_unconditional_pass(backbone, embedding):
    with unet_calls(backbone) as calls:
        make(backbone, embedding, guidance_scale=1.0).generate(
            random_image(64, 64), torch.tensor([[5.0, 5.0, 20.0, 20.0]]), generator=seeded(0)
        )
    assert [shape[0] for shape in calls] == [1] * STEPS


def test_bf16_autocast_keeps_the_background(backbone, embedding):
    image = random_image(64, 64)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    result = make(backbone, embedding, mixed_precision="bf16").generate(image, boxes, generator=seeded(0))
    assert torch.equal(outside(result.image, result.box_mask), outside(image, result.box_mask))
    assert torch.isfinite(result.image).all()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


def test_bf16_runs_the_unet_and_the_vae_in_bf16_and_stays_within_tolerance_of_float32(backbone, embedding):
    # The stated tolerance of the bf16 path (benchmarks/README.md measures it on SD-shaped backbones): images
    # within 30 dB PSNR of float32 inside the box, pixel masks overlapping with IoU >= 0.7.
    image, boxes = random_image(64, 64), torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    dtypes = []
    modules = (backbone.unet.conv_in, backbone.vae.encoder.conv_in, backbone.vae.decoder.conv_in)
    handles = [m.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype)) for m in modules]
    try:
        results = {
            precision: make(backbone, embedding, mixed_precision=precision).generate(
                image, boxes, generator=seeded(0)
            )
            for precision in ("no", "bf16")
        }
    finally:
        for handle in handles:
            handle.remove()
    assert set(dtypes[: len(dtypes) // 2]) == {torch.float32}
    assert set(dtypes[len(dtypes) // 2 :]) == {torch.bfloat16}
    fp32, bf16 = results["no"], results["bf16"]
    assert not torch.equal(fp32.image, bf16.image)  # bf16 did run
    inside = (slice(None), slice(10, 40), slice(10, 40))
    assert _psnr(fp32.image[inside], bf16.image[inside]) >= 30
    union = (fp32.mask.bool() | bf16.mask.bool()).sum()
    assert union == 0 or (fp32.mask.bool() & bf16.mask.bool()).sum() / union >= 0.7


def test_backbone_and_embedding_are_left_untouched(backbone, embedding):
    text_weights = backbone.text_encoder.get_input_embeddings().weight.clone()
    vectors = embedding.vectors.clone()
    make(backbone, embedding, prompt="a photo of a {}").generate(
        random_image(64, 64), torch.tensor([[5.0, 5.0, 20.0, 20.0]]), generator=seeded(0)
    )
    assert torch.equal(backbone.text_encoder.get_input_embeddings().weight, text_weights)
    assert not backbone.text_encoder.get_input_embeddings()._forward_hooks
    assert torch.equal(embedding.vectors, vectors)
    assert all(not p.requires_grad for p in backbone.unet.parameters())


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "boxes", "error", "match"),
    [
        (torch.rand(3, 64, 64), [[50.0, 50.0, 70.0, 60.0]], ValueError, "outside the image"),
        (torch.rand(3, 64, 64), [[10.0, 10.0, 10.0, 30.0]], ValueError, "zero area"),
        (torch.rand(1, 64, 64), [[1.0, 1.0, 9.0, 9.0]], ValueError, r"`image` must have shape \(3, H, W\)"),
        (torch.rand(64, 64), [[1.0, 1.0, 9.0, 9.0]], ValueError, r"\(3, H, W\)"),
        (torch.rand(3, 64, 64) * 255, [[1.0, 1.0, 9.0, 9.0]], ValueError, r"\[0, 1\]"),
        (torch.zeros(3, 64, 64, dtype=torch.uint8), [[1.0, 1.0, 9.0, 9.0]], ValueError, "float"),
        ("image.png", [[1.0, 1.0, 9.0, 9.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_raises(backbone, embedding, image, boxes, error, match):
    with pytest.raises(error, match=match):
        make(backbone, embedding).generate(image, torch.tensor(boxes))


def test_bad_batch_input_raises(backbone, embedding):
    generator = make(backbone, embedding)
    images = [torch.rand(3, 64, 64)] * 2
    with pytest.raises(ValueError, match="one box tensor per image"):
        generator.generate_batch(images, [torch.tensor([[1.0, 1.0, 9.0, 9.0]])])
    with pytest.raises(ValueError, match=r"`boxes\[1\]`"):
        generator.generate_batch(
            images, [torch.tensor([[1.0, 1.0, 9.0, 9.0]]), torch.tensor([[1.0, 1.0, 99.0, 9.0]])]
        )
    with pytest.raises(ValueError, match="list of 2"):
        generator.generate_batch(images, [torch.tensor([[1.0, 1.0, 9.0, 9.0]])] * 2, generator=[seeded(0)])


def test_embedding_of_another_width_is_refused(backbone):
    other = DefectEmbedding(torch.zeros(1, 16), backbone="elsewhere")
    with pytest.raises(ValueError, match=f"width 16.*width {backbone.token_dim}"):
        AnomalyGenerator(backbone, other)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_inference_steps", 0),
        ("eta", -0.1),
        ("guidance_scale", -1.0),
        ("context", 0.5),
        ("mask_threshold", 1.5),
        ("max_batch_size", 0),
        ("mixed_precision", "fp16"),
        ("prompt", "a photo of a defect"),
        ("paste_back", "yes"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        GenerationConfig(**{field: value})


def test_config_round_trips_through_json():
    config = GenerationConfig(num_inference_steps=20, prompt="a photo of a {}", mixed_precision="bf16")
    assert GenerationConfig(**json.loads(json.dumps(config.to_dict()))) == config
    assert GenerationConfig().to_dict()["guidance_scale"] == 10.0
