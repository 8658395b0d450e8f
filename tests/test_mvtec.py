"""MVTec AD folders: reading a category, finding each anomaly's mask by name, the seeded support draw."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anogen_aug.images import save_png
from anogen_aug.mvtec import NORMAL, MVTecFolder, Sample, read_mvtec, split_support


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _category(root: Path, counts=(("good", 3), ("crack", 5), ("hole", 2))) -> Path:
    """``root/widget`` with one train image and ``counts`` test images per type, masks ``<stem>_mask.png``."""
    category = root / "widget"
    save_png(_image(0), category / "train" / "good" / "0.png")
    for defect, count in counts:
        for i in range(count):
            image = save_png(_image(i), category / "test" / defect / f"{i}.png")
            if defect != NORMAL:
                save_png(torch.ones(1, 8, 8), category / "ground_truth" / defect / f"{image.stem}_mask.png")
    return category


def test_read_indexes_train_test_and_masks(tmp_path):
    folder = read_mvtec(_category(tmp_path))
    assert (
        isinstance(folder, MVTecFolder) and folder.category == "widget" and folder.root == tmp_path / "widget"
    )
    assert folder.train == (tmp_path / "widget/train/good/0.png",)
    assert folder.defect_types == ["crack", "hole"] and folder.has_test_normals and len(folder.test) == 10
    assert [s.defect_type for s in folder.test] == ["crack"] * 5 + ["good"] * 3 + ["hole"] * 2
    for sample in folder.test:
        assert sample.gt_label == int(sample.defect_type != NORMAL)
        if sample.gt_label:
            assert sample.mask_path == (
                tmp_path / "widget/ground_truth" / sample.defect_type / f"{sample.image_path.stem}_mask.png"
            )
        else:
            assert sample.mask_path is None
    assert [s.image_path.name for s in folder.anomalies("hole")] == ["0.png", "1.png"]
    with pytest.raises(ValueError, match="defect_type"):
        folder.anomalies(NORMAL)


def test_masks_named_like_their_image_and_any_suffix(tmp_path):
    category = _category(tmp_path, counts=(("crack", 2),))
    mask = category / "ground_truth/crack/1_mask.png"
    save_png(torch.ones(1, 8, 8), mask.with_name("1.jpg"))  # a mask named like its image, another suffix
    mask.unlink()
    folder = read_mvtec(category)
    assert [s.mask_path.name for s in folder.test] == ["0_mask.png", "1.jpg"] and not folder.has_test_normals


def test_missing_parts_are_named(tmp_path):
    category = _category(tmp_path)
    (category / "ground_truth/hole/1_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="no mask for .*hole.1.png"):
        read_mvtec(category)
    for path in (category / "ground_truth/hole").iterdir():
        path.unlink()
    (category / "ground_truth/hole").rmdir()
    with pytest.raises(FileNotFoundError, match="no mask folder"):
        read_mvtec(category)
    with pytest.raises(FileNotFoundError, match="MVTec AD layout"):
        read_mvtec(tmp_path / "absent")


def test_support_anomalies_are_drawn_by_seed_and_removed_from_evaluation(tmp_path):
    folder = read_mvtec(_category(tmp_path))
    support, evaluation = split_support(folder.test, k=3, seed=0)
    assert {k: len(v) for k, v in support.items()} == {"crack": 3, "hole": 1}  # a type keeps >= 1 test image
    assert all(s.defect_type == defect for defect, v in support.items() for s in v)
    taken = {s.image_path for v in support.values() for s in v}
    assert not taken & {s.image_path for s in evaluation} and len(evaluation) == 6
    assert [s for s in folder.test if s.image_path not in taken] == evaluation  # order kept
    assert split_support(folder.test, k=3, seed=0) == (support, evaluation)
    assert split_support(folder.test, k=3, seed=1)[0] != support
    with pytest.raises(ValueError, match="`k`"):
        split_support(folder.test, k=0)


def test_support_draw_is_pythons_seeded_sample():
    """The draw is `random.Random(seed).sample` per defect type in sorted order: stable across versions."""
    import random

    test = [Sample(Path(f"{d}/{i}.png"), Path(f"m{d}{i}"), d) for d in ("b", "a") for i in range(4)]
    support, _ = split_support(test, k=2, seed=7)
    rng = random.Random(7)
    expected_a = rng.sample([s for s in test if s.defect_type == "a"], 2)
    expected_b = rng.sample([s for s in test if s.defect_type == "b"], 2)
    assert support == {"a": expected_a, "b": expected_b}
