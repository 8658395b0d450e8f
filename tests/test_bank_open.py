"""`AnomalyBank.open`: the one rule for "a bank or its path", shared by the transform, the datamodule and sheets."""

from __future__ import annotations

import pytest
import torch

from anogen_aug.bank import AnomalyBank, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.contact_sheet import bank_contact_sheet
from anogen_aug.images import save_png
from anogen_aug.paste import CopyPasteGenerator
from anogen_aug.transforms import AnoGenAugment

LABELS = [("widget", "spot"), ("widget", "scratch"), ("bolt", "spot")]


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    """One folder holding three (category, defect_type) groups of 2 samples each."""
    root = tmp_path_factory.mktemp("open")
    sources = [save_png(torch.full((3, 24, 32), 0.3 + 0.2 * i), root / f"n{i}.png") for i in range(2)]
    image, mask = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
    image[0], mask[:, 2:6, 2:6] = 1.0, 1
    for category, defect_type in LABELS:
        write_bank(
            CopyPasteGenerator([image], [mask]), sources, root / "bank", category=category,
            defect_type=defect_type, box_sampler=BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5)),
            boxes_per_image=1, samples_per_box=1, progress=False,
        )  # fmt: skip
    return root / "bank"


def _ids(bank: AnomalyBank) -> list[str]:
    return [record["id"] for record in bank.records]


def _expected(bank_dir, category=None, defect_type=None) -> list[str]:
    return [
        r["id"]
        for r in AnomalyBank(bank_dir).records
        if category in (None, r["category"]) and defect_type in (None, r["defect_type"])
    ]


def test_open_a_path_applies_the_filters(bank_dir):
    assert len(AnomalyBank.open(bank_dir)) == 6
    assert _ids(AnomalyBank.open(str(bank_dir), defect_type="spot")) == _expected(
        bank_dir, defect_type="spot"
    )
    assert len(AnomalyBank.open(bank_dir, category="widget", defect_type="spot")) == 2


def test_open_a_bank_without_filters_is_that_bank(bank_dir):
    bank = AnomalyBank(bank_dir, category="bolt")
    assert AnomalyBank.open(bank) is bank


def test_open_a_bank_with_a_filter_keeps_its_other_filter(bank_dir):
    widget = AnomalyBank(bank_dir, category="widget")
    spots = AnomalyBank.open(widget, defect_type="spot")
    assert (spots.category, spots.defect_type) == ("widget", "spot")
    assert _ids(spots) == _expected(bank_dir, "widget", "spot") and len(spots) == 2
    bolts = AnomalyBank.open(widget, category="bolt")  # a filter given replaces the bank's own
    assert _ids(bolts) == _expected(bank_dir, "bolt") and len(widget) == 4, "the bank given is not changed"


def test_open_refuses_other_objects_and_empty_selections(bank_dir):
    with pytest.raises(TypeError, match="`bank` must be an AnomalyBank or a bank folder path, got list"):
        AnomalyBank.open([bank_dir])
    with pytest.raises(ValueError, match="holds no record with category='bolt', defect_type='scratch'"):
        AnomalyBank.open(AnomalyBank(bank_dir, category="bolt"), defect_type="scratch")


def test_the_transform_and_the_sheet_open_banks_the_same_way(bank_dir, tmp_path):
    for filters in ({}, {"defect_type": "spot"}, {"category": "widget", "defect_type": "scratch"}):
        by_bank = AnoGenAugment(AnomalyBank(bank_dir), **filters).bank
        by_path = AnoGenAugment(bank_dir, **filters).bank
        assert _ids(by_bank) == _ids(by_path) == _expected(bank_dir, **filters)
    with pytest.raises(TypeError, match="`bank`"):
        bank_contact_sheet(42, out=tmp_path / "sheet.png")


def test_the_datamodule_takes_a_bank_and_filters_as_the_transform_does(bank_dir, tmp_path):
    pytest.importorskip("anomalib")
    from anomalib.data import Folder

    from anogen_aug.integrations.anomalib import AnoGenDataModule

    for split in ("train/good", "test/good"):
        for i in range(2):
            save_png(torch.full((3, 24, 32), 0.5), tmp_path / "tiny" / split / f"{i:03d}.png")
    folder = Folder(name="tiny", root=tmp_path / "tiny", normal_dir="train/good", normal_test_dir="test/good")
    bank = AnomalyBank(bank_dir, category="widget")
    for filters in ({}, {"defect_type": "spot"}, {"category": "bolt", "defect_type": "spot"}):
        datamodule = AnoGenDataModule(folder, bank, p=1.0, **filters)
        augment = AnoGenAugment(bank, **filters)
        assert _ids(datamodule.bank) == _ids(augment.bank) == _ids(AnomalyBank.open(bank, **filters))
        assert _ids(AnoGenDataModule(folder, bank_dir, **filters).bank) == _ids(
            AnoGenAugment(bank_dir, **filters).bank
        )
    with pytest.raises(TypeError, match="`bank`"):
        AnoGenDataModule(folder, [bank_dir])
