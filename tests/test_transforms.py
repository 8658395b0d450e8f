"""AnoGenAugment: direct and transplanted anomalies, Mask/BoundingBoxes updates, types, p, pickling, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.images import save_png
from anogen_aug.paste import CopyPasteGenerator, PasteConfig
from anogen_aug.transforms import AnoGenAugment

SIZE = 40


class EstimatedPaste(CopyPasteGenerator):
    """Stands in for diffusion: the same pixels, but the bank is told its masks are estimates."""

    name = "estimated"
    mask_exact = False


def _support():
    image = torch.zeros(3, 16, 16)
    image[0] = 1.0  # pure red on a grey-blue background: every pasted pixel differs
    mask = torch.zeros(1, 16, 16)
    mask[:, 2:14, 4:12] = 1
    return [image], [mask]


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp("transforms")
    sources = []
    for i in range(2):
        noise = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)) * 0.1
        sources.append(
            save_png(noise + torch.tensor([0.2, 0.4, 0.6])[:, None, None], root / f"normal{i}.png")
        )
    sampler = BoxSampler(width_range=(0.3, 0.45), height_range=(0.3, 0.45))
    options = dict(
        category="widget", defect_type="spot", box_sampler=sampler, boxes_per_image=1, progress=False
    )
    config = PasteConfig(blend="hard")
    exact = write_bank(CopyPasteGenerator(*_support(), config=config), sources, root / "exact", **options)
    estimated = write_bank(EstimatedPaste(*_support(), config=config), sources, root / "estimated", **options)
    return exact, estimated


def _augment(bank, **kwargs) -> AnoGenAugment:
    return AnoGenAugment(
        bank, p=1.0, generator=torch.Generator().manual_seed(kwargs.pop("seed", 0)), **kwargs
    )


def test_direct_match_uses_the_sample_of_this_source(banks):
    bank = banks[0]
    source = tv_tensors.Image(bank.load_source(0))
    mask = tv_tensors.Mask(torch.zeros(1, SIZE, SIZE, dtype=torch.bool))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[1.0, 1.0, 3.0, 3.0]]), format="XYWH", canvas_size=(SIZE, SIZE)
    )
    (image, mask, boxes), params = _augment(bank).forward_with_params(source, mask, boxes)
    assert params["mode"] == "direct" and params["index"] in bank.indices_for_source(
        bank.records[0]["source"]["hash"]
    )
    sample = bank[params["index"]]
    assert params["id"] == sample.id
    assert isinstance(image, tv_tensors.Image) and torch.equal(image.as_subclass(torch.Tensor), sample.image)
    assert mask.dtype == torch.bool and torch.equal(mask[0], sample.mask[0].bool()), "exact bank: pixel mask"
    x0, y0, x1, y1 = sample.boxes[0].tolist()
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.XYWH
    assert boxes.tolist() == [[1.0, 1.0, 3.0, 3.0], [x0, y0, x1 - x0, y1 - y0]]


def test_transplant_puts_the_box_at_the_same_relative_place(banks):
    bank = banks[0]
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(5)) * 0.1 + 0.3
    before = tv_tensors.Mask(torch.zeros(60, 80, dtype=torch.uint8))
    before[0, 0] = 1
    (result, mask), params = _augment(bank).forward_with_params(tv_tensors.Image(image), before)
    assert params["mode"] == "transplant"
    sample = bank[params["index"]]
    x0, y0, x1, y1 = sample.boxes[0].tolist()
    expected = [np.floor(x0 * 2), np.floor(y0 * 1.5), np.ceil(x1 * 2), np.ceil(y1 * 1.5)]
    assert params["boxes"][0].tolist() == expected
    changed = (result.as_subclass(torch.Tensor) != image).any(0)
    assert changed.any() and torch.equal(changed, params["pixel_mask"]), (
        "exact mask: changed = transplanted mask"
    )
    assert not (params["pixel_mask"] & ~params["box_mask"]).any()
    assert mask.dtype == torch.uint8 and mask[0, 0] == 1, "existing mask pixels are kept"
    assert torch.equal(mask.bool() & ~params["pixel_mask"], before.bool() & ~params["pixel_mask"])
    assert torch.equal(
        mask[params["pixel_mask"]], torch.ones(int(params["pixel_mask"].sum()), dtype=torch.uint8)
    )


def test_estimated_masks_label_the_box_and_fade_a_dilated_mask(banks):
    bank = banks[1]
    image = torch.full((3, 60, 80), 0.5)
    (result, mask), params = _augment(bank).forward_with_params(
        tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(60, 80))
    )
    assert not params["mask_exact"]
    assert torch.equal(mask.bool(), params["box_mask"]), "an estimated mask: the box is the (weak) label"
    changed = (result.as_subclass(torch.Tensor) != image).any(0)
    assert changed.any() and not (changed & ~params["pixel_mask"]).any()
    pixel_only = AnoGenAugment(bank, p=1.0, mask_from="mask", generator=torch.Generator().manual_seed(0))
    _, params = pixel_only.forward_with_params(tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(60, 80)))
    assert torch.equal(params["mask"], params["pixel_mask"])


def test_types_in_types_out_and_integer_pixels(banks):
    bank = banks[0]
    grey = torch.full((3, SIZE, SIZE), 128, dtype=torch.uint8)
    plain = _augment(bank)(grey)
    assert type(plain) is torch.Tensor and plain.dtype == torch.uint8 and not torch.equal(plain, grey)
    picture = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    out = _augment(bank)(picture)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == picture.size
    assert np.array_equal(np.asarray(out), plain.permute(1, 2, 0).numpy()), "PIL and uint8 tensor agree"
    one_channel = _augment(bank)(Image.new("L", (SIZE, SIZE), 128))
    assert one_channel.mode == "L"
    floats = _augment(bank)(tv_tensors.Image(grey.float() / 255))
    assert isinstance(floats, tv_tensors.Image) and floats.dtype == torch.float32


def test_only_the_first_image_changes_and_unknown_inputs_pass(banks):
    image = tv_tensors.Image(torch.full((3, SIZE, SIZE), 0.5))
    clean = tv_tensors.Image(torch.full((3, SIZE, SIZE), 0.5))
    extra = torch.arange(4)
    sample = {"image": image, "clean": clean, "label": 0, "name": "a.png", "extra": extra}
    out = _augment(banks[0])(sample)
    assert not torch.equal(out["image"], image)
    assert out["clean"] is clean and out["extra"] is extra and out["label"] == 0 and out["name"] == "a.png"


def test_p_zero_is_identity_and_p_is_checked(banks):
    image, mask = tv_tensors.Image(torch.rand(3, SIZE, SIZE)), tv_tensors.Mask(torch.zeros(SIZE, SIZE))
    out, params = AnoGenAugment(banks[0], p=0.0).forward_with_params(image, mask)
    assert out[0] is image and out[1] is mask and params == {"apply": False}
    for p in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="`p`"):
            AnoGenAugment(banks[0], p=p)


def test_same_generator_seed_same_result_and_inside_compose(banks):
    image = tv_tensors.Image(torch.full((3, SIZE, SIZE), 0.5))
    first = v2.Compose([_augment(banks[0], seed=3), v2.ToDtype(torch.float32)])(image)
    again = v2.Compose([_augment(banks[0], seed=3), v2.ToDtype(torch.float32)])(image)
    assert torch.equal(first, again)


def test_bank_argument_forms_and_errors(banks, tmp_path):
    by_path = AnoGenAugment(banks[0].root, defect_type="spot")
    assert len(by_path.bank) == len(banks[0]) and "AnomalyBank" in repr(by_path)
    with pytest.raises(ValueError, match="no record"):
        AnoGenAugment(banks[0], defect_type="scratch")
    with pytest.raises(TypeError, match="`bank`"):
        AnoGenAugment([1, 2, 3])
    with pytest.raises(ValueError, match="`mask_from`"):
        AnoGenAugment(banks[0], mask_from="pixels")
    with pytest.raises(ValueError, match="Mask is"):
        _augment(banks[0])(tv_tensors.Image(torch.rand(3, SIZE, SIZE)), tv_tensors.Mask(torch.zeros(8, 8)))
    with pytest.raises(ValueError, match="canvas"):
        boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(8, 8))
        _augment(banks[0])(tv_tensors.Image(torch.rand(3, SIZE, SIZE)), boxes)


def test_pickle_round_trip_keeps_behaviour(banks):
    augment = _augment(banks[0], seed=11)
    augment(tv_tensors.Image(torch.rand(3, SIZE, SIZE)))  # fill the cache
    clone = pickle.loads(pickle.dumps(augment))
    assert len(clone._cache) == 0, "cached samples are not pickled"
    image = tv_tensors.Image(torch.full((3, SIZE, SIZE), 0.5))
    assert torch.equal(augment(image), clone(image))


class _Augmented(Dataset):
    def __init__(self, augment, length: int = 4):
        self.augment, self.length = augment, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        image = tv_tensors.Image(torch.full((3, SIZE, SIZE), 0.5))
        return self.augment(image, tv_tensors.Mask(torch.zeros(SIZE, SIZE, dtype=torch.uint8)))


def test_dataloader_workers(banks):
    loader = DataLoader(_Augmented(AnoGenAugment(banks[0], p=1.0)), batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for images, masks in batches:
        assert images.shape == (2, 3, SIZE, SIZE) and masks.flatten(1).any(1).all()
    # With a generator, each worker reseeds it: the two workers (one batch each) do not repeat each other.
    seeded = _Augmented(_augment(banks[0], seed=0), length=16)
    loader = DataLoader(seeded, batch_size=8, num_workers=2, generator=torch.Generator().manual_seed(0))
    (first, _), (second, _) = list(loader)
    assert not torch.equal(first, second)


def test_a_generator_survives_spawn_started_workers(banks):
    """The "spawn" start method (macOS and Windows) pickles the transform; a torch.Generator used to crash it."""
    augment = _augment(banks[0], seed=7)
    clone = pickle.loads(pickle.dumps(augment))
    assert isinstance(clone.generator, torch.Generator)
    assert torch.equal(clone.generator.get_state(), augment.generator.get_state())
    assert clone.generator is not augment.generator
    loader = DataLoader(
        _Augmented(augment, length=4), batch_size=2, num_workers=2, multiprocessing_context="spawn"
    )
    batches = list(loader)
    assert len(batches) == 2
    for images, masks in batches:
        assert images.shape == (2, 3, SIZE, SIZE) and masks.flatten(1).any(1).all()
    (first, _), (second, _) = batches
    assert not torch.equal(first, second), "each worker reseeds its copy of the generator"
