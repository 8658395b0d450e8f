"""Models that learn from anomalies, and those that must not: what `AnoGenDataModule` feeds to which.

- anomalib's ``Supersimplenet(supervised=True)`` reads ``gt_mask`` / ``gt_label`` in its training step, but
  anomalib's datamodules give it no anomalous train image; through `AnoGenDataModule` it trains on the bank's.
  Its ImageNet backbone cannot be downloaded here: the test serves timm random weights from a temporary
  Hugging Face cache (``HF_HUB_OFFLINE=1``), through the same loading path as the real weights.
- One-class models (anomalib's Draem, Supersimplenet(supervised=False), ...) would learn generated defects as
  normal: the datamodule refuses them, with the reason, unless ``allow_one_class=True`` (or ``p=0``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("anomalib")

import huggingface_hub.constants  # noqa: E402
from anomalib.data import Folder  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from anomalib.models import Draem, Supersimplenet  # noqa: E402

from anogen_aug.integrations.anomalib import (  # noqa: E402
    AnoGenDataModule,
    DeSTSeg,
    WeakDraem,
    consumes_anomalies,
)

from anomalib_toy import CATEGORY, serve_random_timm_weights  # noqa: E402

BACKBONE = "resnet18.tv_in1k"  # SuperSimpleNet wants torchvision V1 weights; resnet18 keeps the toy small
SIZE = 128  # SuperSimpleNet's feature-level Perlin noise needs feature maps of 32 px (input / 4) or more


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> tuple[Path, dict]:
    cache = tmp_path_factory.mktemp("hub")
    return cache, serve_random_timm_weights(cache, BACKBONE)


@pytest.fixture
def offline_weights(hub_cache, monkeypatch) -> dict:
    """timm's pretrained weights for `BACKBONE` come from the temporary cache (random), never the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache[0]))
    return hub_cache[1]


def _datamodule(data_root, bank, **kwargs) -> AnoGenDataModule:
    folder = Folder(
        name=CATEGORY,
        root=data_root / CATEGORY,
        normal_dir="train/good",
        abnormal_dir=["test/scratch"],
        normal_test_dir="test/good",
        mask_dir=["ground_truth/scratch"],
        train_batch_size=3,
        eval_batch_size=4,
        num_workers=0,
    )
    return AnoGenDataModule(folder, bank, seed=0, **kwargs)


def _engine(tmp_path, **kwargs) -> Engine:
    settings = {"max_epochs": 1, "limit_train_batches": 2, "logger": False, "enable_progress_bar": False}
    return Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, **{**settings, **kwargs})


def _supersimplenet(supervised: bool) -> Supersimplenet:
    return Supersimplenet(
        backbone=BACKBONE,
        supervised=supervised,
        pre_processor=Supersimplenet.configure_pre_processor((SIZE, SIZE)),
        visualizer=False,
    )


def test_supersimplenet_supervised_trains_and_tests_on_bank_anomalies(
    data_root, bank, offline_weights, tmp_path
):
    model = _supersimplenet(supervised=True)
    backbone = model.model.feature_extractor.feature_extractor.feature_extractor.state_dict()
    assert torch.equal(backbone["layer2.0.conv1.weight"], offline_weights["layer2.0.conv1.weight"])
    seen = []  # what SuperSimpleNet's training step hands its model: the datamodule's labels and masks

    def record(module, args, kwargs):
        if module.training:
            seen.append((kwargs["labels"].detach().clone(), kwargs["masks"].detach().clone()))

    model.model.register_forward_pre_hook(record, with_kwargs=True)
    head = [p.detach().clone() for p in model.model.segdec.parameters()]
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=_datamodule(data_root, bank, p=1.0))
    assert len(seen) == 2
    for labels, masks in seen:  # every train item is a labelled bank anomaly with its mask
        assert labels.bool().all() and all(masks[row].any() for row in range(len(masks)))
    assert any(not torch.equal(b, p) for b, p in zip(head, model.model.segdec.parameters()))
    metrics = engine.test(model, datamodule=_datamodule(data_root, bank, p=1.0), verbose=False)[0]
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    assert all(math.isfinite(value) for value in metrics.values())


def test_which_models_consume_anomalies(tmp_path, offline_weights):
    assert consumes_anomalies(WeakDraem(reconstruction_width=8, discrimination_width=8))
    assert consumes_anomalies(DeSTSeg(pretrained=False))
    assert consumes_anomalies(_supersimplenet(supervised=True))
    assert not consumes_anomalies(_supersimplenet(supervised=False))
    assert not consumes_anomalies(Draem(dtd_dir=tmp_path))

    class Declared:  # a model of the user's own declares what it does
        consumes_anomalies = True

    assert consumes_anomalies(Declared()) and not consumes_anomalies(object())


def test_one_class_model_is_refused_with_the_reason(data_root, bank, tmp_path):
    model = Draem(dtd_dir=tmp_path)  # an existing (empty) folder: anomalib downloads DTD otherwise
    with pytest.raises(ValueError, match="Draem is a one-class model") as refused:
        _engine(tmp_path).fit(model, datamodule=_datamodule(data_root, bank, p=0.5))
    reason = str(refused.value)
    assert "learn the generated defects as normal" in reason and "Supersimplenet(supervised=True)" in reason
    assert "set p=0" in reason and "allow_one_class=True" in reason
    assert model.global_step == 0  # refused before any training


def test_a_one_class_model_trains_with_p_0_or_when_allowed(data_root, bank, tmp_path):
    pre_processor = WeakDraem.configure_pre_processor((64, 64))
    model = WeakDraem(
        reconstruction_width=8, discrimination_width=8, pre_processor=pre_processor, visualizer=False
    )
    model.consumes_anomalies = False  # a model's own declaration decides: this one says it is one-class
    with pytest.raises(ValueError, match="WeakDraem is a one-class model"):
        _engine(tmp_path).fit(model, datamodule=_datamodule(data_root, bank, p=0.5))
    for datamodule in (
        _datamodule(data_root, bank, p=0.0),
        _datamodule(data_root, bank, p=0.5, allow_one_class=True),
    ):
        _engine(tmp_path, fast_dev_run=1).fit(model, datamodule=datamodule)  # one step, no checkpoint
        assert model.trainer.state.finished
    with pytest.raises(ValueError, match="allow_one_class"):
        _datamodule(data_root, bank, allow_one_class="yes")


def test_unsupervised_supersimplenet_is_refused_and_named_so(data_root, bank, offline_weights, tmp_path):
    with pytest.raises(ValueError, match=r"Supersimplenet\(supervised=False\) is a one-class model"):
        _engine(tmp_path).fit(
            _supersimplenet(supervised=False), datamodule=_datamodule(data_root, bank, p=0.5)
        )
