"""Box labels for a bank whose exact masks are known (`AnomalyBank(boxes_only=True)`, ``--bank-labels boxes``) and
the baseline without a bank (``anogen-aug train`` with no ``--bank``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anogen_aug.bank import AnomalyBank
from anogen_aug.transforms import AnoGenAugment


def test_boxes_only_hides_every_pixel_mask_behind_its_box(bank):
    view = AnomalyBank(bank.root, boxes_only=True)
    assert len(view) == len(bank) and "boxes_only=True" in repr(view)
    for index in range(len(bank)):
        exact, hidden = bank[index], view[index]
        assert exact.mask_exact and not hidden.mask_exact
        assert exact.mask.sum() < exact.box_mask.sum()  # the pasted defect does not fill its box
        assert torch.equal(hidden.mask, exact.box_mask) and torch.equal(hidden.box_mask, exact.box_mask)
        assert torch.equal(hidden.image, exact.image)
        assert view.file(index, "mask") == bank.file(index, "box_mask")
        assert view.file(index, "image") == bank.file(index, "image")


def test_open_keeps_or_replaces_boxes_only_like_a_filter(bank):
    assert AnomalyBank.open(bank) is bank and not bank.boxes_only
    view = AnomalyBank.open(bank, boxes_only=True)
    assert view is not bank and view.boxes_only
    assert AnomalyBank.open(view) is view
    assert AnomalyBank.open(view, defect_type="scratch").boxes_only  # another filter keeps it
    assert not AnomalyBank.open(view, boxes_only=False).boxes_only
    assert AnomalyBank.open(str(bank.root), boxes_only=True).boxes_only
    with pytest.raises(ValueError, match="`boxes_only` must be True or False"):
        AnomalyBank(bank.root, boxes_only="yes")


def test_transform_on_a_boxes_only_bank_labels_and_replaces_the_whole_box(bank):
    image = torch.full((3, 56, 64), 0.5)  # not a bank source: the transplant path

    def run(source):
        augment = AnoGenAugment(source, p=1.0, mask_from="auto", generator=torch.Generator().manual_seed(3))
        return augment.forward_with_params(image)

    exact_out, exact = run(bank)
    hidden_out, hidden = run(AnomalyBank(bank.root, boxes_only=True))
    assert exact["index"] == hidden["index"]
    box, pixels = exact["box_mask"], exact["pixel_mask"]
    assert torch.equal(exact["mask"], pixels) and torch.equal(hidden["mask"], hidden["box_mask"])
    assert torch.equal(hidden["box_mask"], box) and not hidden["mask_exact"]
    # exact masks change only the defect's pixels; a box label carries the whole box's content across
    background = box & ~pixels
    assert torch.equal(exact_out[:, background], image[:, background])
    assert (hidden_out[:, background] != image[:, background]).any()


anomalib = pytest.importorskip("anomalib")

from anogen_aug.integrations.anomalib import AnoGenDataModule, TrainConfig, train_detector  # noqa: E402


def _folder(data_root: Path):
    from anomalib.data import Folder

    return Folder(
        name="tiny", root=data_root / "tiny", normal_dir="train/good", abnormal_dir=["test/scratch"],
        normal_test_dir="test/good", mask_dir=["ground_truth/scratch"], train_batch_size=6,
        eval_batch_size=4, num_workers=0,
    )  # fmt: skip


def test_datamodule_boxes_only_labels_generated_rows_by_their_boxes(data_root, bank):
    def batch(**kwargs):
        datamodule = AnoGenDataModule(_folder(data_root), bank, p=1.0, seed=0, **kwargs)
        datamodule.setup()
        return next(iter(datamodule.train_dataloader()))

    exact, hidden = batch(), batch(boxes_only=True)
    box = hidden.box_mask.bool()[:, 0]
    assert hidden.is_generated.all() and torch.equal(hidden.gt_mask, box)
    assert torch.equal(exact.box_mask, hidden.box_mask)
    assert (exact.gt_mask.sum() < box.sum()) and not (exact.gt_mask & ~box).any()


def test_datamodule_without_a_bank_only_with_p_zero(data_root):
    with pytest.raises(ValueError, match="`bank` is None, but p=0.5"):
        AnoGenDataModule(_folder(data_root), None, p=0.5)
    datamodule = AnoGenDataModule(_folder(data_root), None, p=0.0)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert not batch.is_generated.any() and not batch.gt_mask.any()


def test_train_config_bank_labels_is_a_choice():
    assert TrainConfig().bank_labels == "auto" and TrainConfig(bank_labels="boxes").bank_labels == "boxes"
    with pytest.raises(ValueError, match="bank_labels"):
        TrainConfig(bank_labels="pixels")


def test_baseline_without_a_bank_is_perlin_on_every_row(data_root, tmp_path):
    config = TrainConfig(
        epochs=1, image_size=64, batch_size=2, limit_train_batches=1, accelerator="cpu", save_checkpoint=False,
        num_maps=0, model_options={"reconstruction_width": 8, "discrimination_width": 8},
    )  # fmt: skip
    result = train_detector(data_root, "tiny", None, config=config, out_dir=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["config"]["bank"] is None and written["config"]["bank_samples"] == 0
    assert written["config"]["p"] == 0.0 and written["config"]["perlin_p"] == 1.0
    assert result["metrics"]["pixel_AUROC"] is not None
    with pytest.raises(ValueError, match="no bank was given"):
        train_detector(data_root, "tiny", None, config=TrainConfig(p=0.5), out_dir=tmp_path / "other")


def test_train_detector_with_a_bank_keeps_the_models_perlin_share(data_root, bank, tmp_path):
    config = TrainConfig(
        epochs=1, image_size=64, batch_size=2, limit_train_batches=1, accelerator="cpu", save_checkpoint=False,
        num_maps=0, bank_labels="boxes", model_options={"reconstruction_width": 8, "discrimination_width": 8},
    )  # fmt: skip
    train_detector(data_root, "tiny", bank, config=config, out_dir=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert written["perlin_p"] == 0.5 and written["bank_labels"] == "boxes" and written["p"] == 0.5
