"""The support set's one rule, shared by stage 1 and crop-and-paste: a sequence or a batch, never one image."""

from __future__ import annotations

import pytest
import torch

from anogen_aug.images import content_hash, save_png
from anogen_aug.inversion import InversionConfig, learn_defect_embedding
from anogen_aug.paste import CopyPasteGenerator
from anogen_aug.support import SupportSet, load_support_set
from anogen_aug.testing import tiny_backbone


def _pair(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, size, size)
    mask[:, 3:9, 4:11] = 1
    return image, mask


def test_a_list_a_tuple_and_a_batch_are_support_sets(tmp_path):
    image, mask = _pair()
    other, other_mask = _pair(1)
    save_png(other, tmp_path / "other.png")
    save_png(other_mask * 0.5, tmp_path / "other_mask.png")  # grey pixels are defect too

    from_list = load_support_set([image, tmp_path / "other.png"], [mask, tmp_path / "other_mask.png"])
    assert isinstance(from_list, SupportSet) and len(from_list) == 2
    assert torch.equal(from_list.images[0], image)
    assert from_list.images[1].shape == (3, 16, 16)
    assert torch.equal(from_list.masks[1], other_mask), "masks are read back as {0, 1}"
    # A file hashes as its bytes, a tensor as its 8-bit pixels.
    assert from_list.hashes == (content_hash(image), content_hash(tmp_path / "other.png"))

    from_tuple = load_support_set((image,), (mask,))
    from_batch = load_support_set(torch.stack([image, other]), torch.stack([mask, other_mask]))
    assert len(from_tuple) == 1 and len(from_batch) == 2
    assert torch.equal(from_batch.images[1], other) and torch.equal(from_batch.masks[1], other_mask)
    as_arrays = load_support_set([image.permute(1, 2, 0).numpy()], [mask[0].numpy()])  # (H, W, 3), (H, W)
    assert torch.equal(as_arrays.images[0], image) and torch.equal(as_arrays.masks[0], mask)


@pytest.mark.parametrize("single", ["crack.png", "tensor", "array", None])
def test_a_single_image_is_refused_by_both_users(single):
    image, mask = _pair()
    value = {"tensor": image, "array": image.permute(1, 2, 0).numpy()}.get(single, single)
    with pytest.raises(TypeError, match=r"`images` must be a sequence \(list\) of images"):
        load_support_set(value, [mask])
    with pytest.raises(TypeError, match=r"`support_images` must be a sequence"):
        CopyPasteGenerator(value, [mask])
    with pytest.raises(TypeError, match=r"`images` must be a sequence"):
        learn_defect_embedding(tiny_backbone("ldm"), value, [mask], config=InversionConfig(max_train_steps=1))


def test_errors_name_the_callers_arguments_and_the_item():
    image, mask = _pair()
    names = ("support_images", "support_masks")
    with pytest.raises(ValueError, match="`images` must hold at least one defect image"):
        load_support_set([], [])
    with pytest.raises(
        ValueError, match=r"`masks` must hold one mask per image: got 2 image\(s\) and 1 mask"
    ):
        load_support_set([image, image], [mask])
    with pytest.raises(ValueError, match=r"`support_masks\[1\]` must have the same height and width as "):
        load_support_set([image, image], [mask, torch.ones(1, 8, 12)], names=names)
    with pytest.raises(ValueError, match=r"\(16x16\), got 8x12"):
        load_support_set([image, image], [mask, torch.ones(1, 8, 12)])
    with pytest.raises(ValueError, match=r"`masks\[0\]` is empty"):
        load_support_set([image], [torch.zeros(1, 16, 16)])
    with pytest.raises(TypeError, match=r"`images\[1\]` must be a path"):
        load_support_set([image, 3], [mask, mask])
