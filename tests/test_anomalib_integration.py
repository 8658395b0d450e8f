"""anomalib integration: the datamodule's train batches, WeakDraem and DeSTSeg training, `train_detector`.

Data: a tiny MVTec-layout folder (56x64 px, 6 train normals, 4 test normals, 4 test anomalies with masks) and
tiny banks written by the real `write_bank` + `CopyPasteGenerator`. Models train 2 steps at 64 px on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("anomalib")

from anomalib.data import Folder, ImageBatch, ImageItem  # noqa: E402
from anomalib.data.datamodules.base.image import AnomalibDataModule  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from anogen_aug.bank import write_bank  # noqa: E402
from anogen_aug.boxes import BoxSampler  # noqa: E402
from anogen_aug.integrations.anomalib import (  # noqa: E402
    METRIC_NAMES,
    AnoGenDataModule,
    AnoGenImageBatch,
    DeSTSeg,
    TrainConfig,
    WeakDraem,
    train_detector,
)
from anogen_aug.integrations.anomalib.train import check_mvtec_layout  # noqa: E402
from anogen_aug.paste import CopyPasteGenerator  # noqa: E402

from anomalib_toy import HEIGHT, WIDTH, write_mvtec_folder, write_toy_bank  # noqa: E402

SMALL_DRAEM = {"reconstruction_width": 8, "discrimination_width": 8}


def _folder(data_root: Path, **kwargs) -> Folder:
    return Folder(
        name="tiny",
        root=data_root / "tiny",
        normal_dir="train/good",
        abnormal_dir=["test/scratch"],
        normal_test_dir="test/good",
        mask_dir=["ground_truth/scratch"],
        train_batch_size=kwargs.pop("train_batch_size", 6),
        eval_batch_size=4,
        num_workers=kwargs.pop("num_workers", 0),
        **kwargs,
    )


def _datamodule(data_root, bank, *, p, **folder_kwargs) -> AnoGenDataModule:
    datamodule = AnoGenDataModule(_folder(data_root, **folder_kwargs), bank, p=p, seed=0)
    datamodule.setup()
    return datamodule


# --- datamodule ---------------------------------------------------------------------------------------------


def test_generated_batches_carry_labels_masks_boxes_and_sources(data_root, bank):
    batch = next(iter(_datamodule(data_root, bank, p=1.0).train_dataloader()))
    assert isinstance(batch, AnoGenImageBatch) and len(batch) == 6
    assert batch.is_generated.all()
    box = batch.box_mask.bool()  # (B, 1, H, W)
    gt = batch.gt_mask  # (B, H, W) bool
    assert torch.equal(batch.gt_label, gt.flatten(1).any(1)) and batch.gt_label.all()
    assert box.shape == (6, 1, HEIGHT, WIDTH) and box.flatten(1).any(1).all()
    assert not (gt & ~box[:, 0]).any()  # the exact paste mask lies inside the box
    image, source = batch.image.as_subclass(torch.Tensor), batch.source_image
    outside = ~box.expand_as(image)
    assert torch.equal(image[outside], source[outside])  # paste-back: bit-identical outside the box
    for row in range(6):
        assert not torch.equal(
            image[row][box[row].expand(3, -1, -1)], source[row][box[row].expand(3, -1, -1)]
        )
    # the source is the bank's clean source image
    sources = {Path(r["source"]["path"]).name for r in bank.records}
    assert sources <= {p.name for p in (data_root / "tiny/train/good").glob("*.png")}


def test_normal_batches_have_empty_masks_and_the_image_as_source(data_root, bank):
    batch = next(iter(_datamodule(data_root, bank, p=0.0).train_dataloader()))
    assert not batch.is_generated.any() and not batch.gt_label.any()
    assert not batch.gt_mask.any() and not batch.box_mask.any()
    assert torch.equal(batch.source_image, batch.image.as_subclass(torch.Tensor))
    assert all("train/good" in path for path in batch.image_path)


def test_first_item_normal_still_keeps_generated_masks(data_root, bank):
    normal = _datamodule(data_root, bank, p=0.0).train_data[0]
    generated = _datamodule(data_root, bank, p=1.0).train_data[0]
    batch = AnoGenImageBatch.collate([normal, generated])
    assert batch.is_generated.tolist() == [False, True]
    assert batch.gt_label.tolist() == [False, True]
    assert not batch.gt_mask[0].any() and batch.gt_mask[1].any() and batch.box_mask[1].any()
    # anomalib's rule, for contrast: a first item without a mask drops everybody's mask
    plain = ImageBatch.collate(
        [
            ImageItem(image=normal.image, gt_label=normal.gt_label),
            ImageItem(image=generated.image, gt_label=generated.gt_label, gt_mask=generated.gt_mask),
        ]
    )
    assert plain.gt_mask is None


def test_mixed_draws_are_seeded_and_val_test_untouched(data_root, bank):
    first, second = _datamodule(data_root, bank, p=0.5), _datamodule(data_root, bank, p=0.5)
    flags = [bool(first.train_data[i].is_generated) for i in range(6) for _ in range(3)]
    assert flags == [bool(second.train_data[i].is_generated) for i in range(6) for _ in range(3)]
    assert 0 < sum(flags) < len(flags)
    inner = first.datamodule
    assert first.val_data is inner.val_data and first.test_data is inner.test_data
    assert first.train_data.dataset is inner.train_data and first.name == "tiny"
    test_item = first.test_data[0]
    assert type(test_item).__name__ == "ImageItem"
    assert len(first.val_data) + len(first.test_data) == 8
    labels = first.test_data.samples.label_index.tolist() + first.val_data.samples.label_index.tolist()
    assert sorted(labels) == [0] * 4 + [1] * 4


def test_worker_draws_change_per_epoch_and_repeat_per_run(data_root, bank):
    def two_epochs():
        torch.manual_seed(0)  # what lightning.seed_everything does; the worker seeds derive from it
        datamodule = AnoGenDataModule(_folder(data_root, num_workers=2), bank, p=0.5, seed=0)
        datamodule.setup()
        return [sorted(p for b in datamodule.train_dataloader() for p in b.image_path) for _ in range(2)]

    first = two_epochs()
    assert first[0] != first[1]  # a seeded bank draw is not replayed every epoch
    assert first == two_epochs()


def test_augmentations_joint_and_model_resize_appended(data_root, bank):
    datamodule = _datamodule(data_root, bank, p=1.0, train_augmentations=v2.RandomHorizontalFlip(p=1.0))
    AnomalibDataModule._update_subset_augmentations(
        datamodule.train_data, datamodule.train_augmentations, v2.Resize((32, 32))
    )
    item = datamodule.train_data[0]
    assert item.image.shape == (3, 32, 32) and item.source_image.shape == (3, 32, 32)
    assert item.gt_mask.shape == (32, 32) and item.box_mask.shape == (1, 32, 32)
    assert (
        set(item.box_mask.unique().tolist()) <= {0.0, 1.0}
        and not (item.gt_mask & ~item.box_mask[0].bool()).any()
    )
    # the flip moved image, source and masks together: the box is where the pixels differ
    datamodule.train_data.augmentations = v2.RandomHorizontalFlip(p=1.0)
    item = datamodule.train_data[0]
    differs = (item.image != item.source_image).any(0)
    assert differs.any() and not (differs & ~item.box_mask[0].bool()).any()


def test_bank_samples_resized_to_the_normal_image_size(data_root, tmp_path):
    small = write_toy_bank(data_root, tmp_path / "small", size=(32, 32))
    assert small[0].image.shape == (3, 32, 32)
    item = _datamodule(data_root, small, p=1.0).train_data[0]
    assert item.image.shape == (3, HEIGHT, WIDTH) and item.source_image.shape == (3, HEIGHT, WIDTH)
    assert item.gt_mask.shape == (HEIGHT, WIDTH) and item.box_mask.shape == (1, HEIGHT, WIDTH)
    assert item.gt_label and bool(item.gt_mask.any()) == bool(item.gt_label)


def test_datamodule_rejects_bad_arguments(data_root, bank):
    with pytest.raises(ValueError, match="`p`"):
        AnoGenDataModule(_folder(data_root), bank, p=1.5)
    # a bank object takes the same filters as a bank folder (one rule: AnomalyBank.open)
    assert len(AnoGenDataModule(_folder(data_root), bank, defect_type="scratch").bank) == len(bank)
    with pytest.raises(TypeError, match="datamodule"):
        AnoGenDataModule(object(), bank)
    datamodule = AnoGenDataModule(_folder(data_root), str(bank.root), defect_type="scratch")
    assert len(datamodule.bank) == len(bank)


def test_excluded_images_leave_the_val_and_test_sets(data_root, bank, caplog):
    support = data_root / "tiny/test/scratch/000.png"
    absent = data_root / "tiny/test/scratch/nothing.png"
    datamodule = AnoGenDataModule(_folder(data_root), bank, exclude_images=[str(support), absent])
    with caplog.at_level("WARNING"):
        datamodule.setup()
    kept = [*datamodule.val_data.samples.image_path, *datamodule.test_data.samples.image_path]
    assert len(kept) == 7 and str(support) not in kept and str(support.resolve()) not in kept
    assert datamodule.excluded_images == [str(support.resolve())]
    assert "1 of 2 `exclude_images` are in no val or test set" in caplog.text
    datamodule.setup("test")  # set up again: nothing more removed, no second warning
    assert len(datamodule.val_data) + len(datamodule.test_data) == 7 and caplog.text.count("1 of 2") == 1
    with pytest.raises(ValueError, match="exclude_images"):
        AnoGenDataModule(_folder(data_root), bank, exclude_images=str(support))


def test_to_numpy_drops_the_extra_fields(data_root, bank):
    batch = next(iter(_datamodule(data_root, bank, p=1.0).train_dataloader()))
    numpy_batch = batch.to_numpy()
    assert type(numpy_batch).__name__ == "NumpyImageBatch" and numpy_batch.image.shape[0] == 6
    assert type(batch.items[0].to_numpy()).__name__ == "NumpyImageItem"


# --- WeakDraem ----------------------------------------------------------------------------------------------


def _capture_loss_inputs(model):
    captured = {}

    def hook(module, args):
        captured["target_image"], _, captured["mask"], _, captured["weak"] = (a.detach() for a in args)

    def input_hook(module, args):
        captured["input"] = args[0].detach()

    model.loss.register_forward_pre_hook(hook)
    model.model.register_forward_pre_hook(input_hook)
    return captured


def _resized_batch(data_root, bank):
    """A p=1 train batch at 64x64 (DRAEM needs sides divisible by 16)."""
    datamodule = _datamodule(
        data_root, bank, p=1.0, train_batch_size=2, train_augmentations=v2.Resize((64, 64))
    )
    return next(iter(datamodule.train_dataloader()))


def test_weak_draem_step_uses_bank_rows_as_given_and_clean_source_as_target(data_root, bank):
    batch = _resized_batch(data_root, bank)
    model = WeakDraem(perlin_p=0.0, **SMALL_DRAEM)
    captured = _capture_loss_inputs(model)
    loss = model.training_step(batch)["loss"]
    assert torch.isfinite(loss) and loss.requires_grad
    assert torch.equal(captured["input"], batch.image.as_subclass(torch.Tensor))
    assert torch.equal(captured["target_image"], batch.source_image)
    assert torch.equal(captured["mask"][:, 0].bool(), batch.gt_mask)
    assert torch.equal(captured["weak"], batch.box_mask)  # generated rows: weak inside the box


def test_weak_draem_perlin_rows_start_from_the_clean_source(data_root, bank):
    batch = _resized_batch(data_root, bank)
    model = WeakDraem(perlin_p=1.0, **SMALL_DRAEM)
    model.augmenter.probability = 0.0  # Perlin draws "anomaly-free" for every row: the input is the source
    captured = _capture_loss_inputs(model)
    model.training_step(batch)
    assert torch.equal(captured["input"], batch.source_image)
    assert not captured["mask"].any() and not captured["weak"].any()
    assert not torch.equal(captured["input"], batch.image.as_subclass(torch.Tensor))


def test_weak_draem_never_downloads_dtd(tmp_path):
    with pytest.raises(FileNotFoundError, match="dtd_dir"):
        WeakDraem(tmp_path / "missing")
    assert WeakDraem(tmp_path, **SMALL_DRAEM).augmenter.anomaly_source_paths == []
    with pytest.raises(ValueError, match="perlin_p"):
        WeakDraem(perlin_p=2.0)


def test_train_detector_draem_trains_tests_and_writes_metrics_and_maps(data_root, bank, tmp_path):
    config = TrainConfig(
        model="draem",
        epochs=1,
        image_size=64,
        batch_size=2,
        limit_train_batches=2,
        accelerator="cpu",
        model_options=SMALL_DRAEM,
        save_checkpoint=False,
        exclude_support=_support_json(data_root, tmp_path, ["000", "001"]),
    )
    result = train_detector(data_root, "tiny", bank, config=config, out_dir=tmp_path / "run")
    assert result["checkpoint"] is None and not list((tmp_path / "run").rglob("*.ckpt"))
    support = [str((data_root / f"tiny/test/scratch/{stem}.png").resolve()) for stem in ("000", "001")]
    assert result["config"]["excluded_images"] == support  # the bank's support images are not tested on
    assert not {Path(m).name for m in result["maps"]} & {"scratch_000.png", "scratch_001.png"}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written["metrics"]) == set(METRIC_NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in written["metrics"].values())
    assert 0.0 <= written["metrics"]["image_AUROC"] <= 1.0
    assert written["config"]["model"] == "draem" and written["config"]["p"] == 0.5
    assert written["config"]["model_options"] == SMALL_DRAEM and written["config"]["de_st_steps"] is None
    assert result["metrics"] == written["metrics"] and 1 <= len(result["maps"]) <= 4  # 6 left to test
    panel = Image.open(result["maps"][0])
    assert panel.size == (3 * 64, 64)


def _support_json(data_root: Path, out: Path, stems: list[str]) -> Path:
    """A support.json as ``anogen-aug learn-all`` writes it (format 1), drawing ``stems`` of test/scratch."""
    support = [
        {"image": f"test/scratch/{s}.png", "mask": f"ground_truth/scratch/{s}_mask.png"} for s in stems
    ]
    record = {
        "format_version": 1,
        "k": len(stems),
        "seed": 0,
        "categories": {"tiny": {"folder": str(data_root / "tiny"), "support": {"scratch": support}}},
        "unreadable": {},
    }
    (out / "support.json").write_text(json.dumps(record))
    return out / "support.json"


def test_exclude_support_names_a_missing_category(data_root, bank, tmp_path):
    path = _support_json(data_root, tmp_path, ["000"])
    path.write_text(path.read_text().replace('"tiny"', '"bottle"'))
    config = TrainConfig(exclude_support=str(path), accelerator="cpu")
    with pytest.raises(ValueError, match="no support draw for category 'tiny'"):
        train_detector(data_root, "tiny", bank, config=config, out_dir=tmp_path / "run")


# --- DeSTSeg ------------------------------------------------------------------------------------------------


def test_destseg_trains_student_then_segmentation_and_tests(data_root, bank, tmp_path):
    datamodule = AnoGenDataModule(_folder(data_root, train_batch_size=2), bank, p=1.0, seed=0)
    model = DeSTSeg(
        de_st_steps=1,
        pretrained=False,
        pre_processor=DeSTSeg.configure_pre_processor((64, 64)),
        visualizer=False,
    )
    student = [p.detach().clone() for p in model.model.student.parameters()]
    head = [p.detach().clone() for p in model.model.segmentation_net.parameters()]
    teacher = [p.detach().clone() for p in model.model.teacher.parameters()]
    engine = Engine(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=datamodule)
    assert int(model.train_steps) == 2
    changed = lambda before, params: any(not torch.equal(b, p) for b, p in zip(before, params))  # noqa: E731
    assert changed(student, model.model.student.parameters())
    assert changed(head, model.model.segmentation_net.parameters())
    assert not changed(teacher, model.model.teacher.parameters())
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    assert all(math.isfinite(metrics[name]) for name in METRIC_NAMES)
    output = model.model.eval()(torch.rand(2, 3, 64, 64))
    assert output.anomaly_map.shape == (2, 64, 64) and output.pred_score.shape == (2,)
    assert torch.allclose(output.pred_score, output.anomaly_map.flatten(1).topk(100, dim=1).values.mean(1))


def test_destseg_teacher_weights_from_file_never_downloaded(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(FileNotFoundError, match="pretrained=False"):
        DeSTSeg(pretrained=True)
    weights = resnet18(weights=None).state_dict()
    save_file(weights, tmp_path / "resnet18.safetensors")
    model = DeSTSeg(teacher_weights=tmp_path / "resnet18.safetensors")
    assert torch.equal(model.model.teacher.layer1[0].conv1.weight, weights["layer1.0.conv1.weight"])
    assert not any(p.requires_grad for p in model.model.teacher.parameters())
    assert not model.model.teacher.train().training


@pytest.mark.slow
def test_train_detector_destseg(data_root, bank, tmp_path):
    config = TrainConfig(
        model="destseg",
        image_size=64,
        batch_size=2,
        limit_train_batches=3,
        accelerator="cpu",
        pretrained=False,
    )
    result = train_detector(data_root, "tiny", bank, config=config, out_dir=tmp_path)
    assert result["config"]["de_st_steps"] == 1 and result["config"]["p"] == 1.0
    assert Path(result["checkpoint"]).is_file()  # save_checkpoint defaults to True
    assert Path(result["checkpoint"]).is_relative_to(tmp_path / "anomalib" / "DeSTSeg" / "tiny")
    assert all(v is not None and math.isfinite(v) for v in result["metrics"].values())


# --- layout checks and packaging ------------------------------------------------------------------------------


def test_layout_check_pairs_masks_by_name(tmp_path):
    root = write_mvtec_folder(tmp_path)
    folder = check_mvtec_layout(root, "tiny")
    assert folder.defect_types == ["scratch"] and folder.has_test_normals and len(folder.train) == 6
    masks = root / "tiny/ground_truth/scratch"
    (masks / "003_mask.png").rename(masks / "009_mask.png")
    with pytest.raises(FileNotFoundError, match="no mask for .*003.png"):
        check_mvtec_layout(root, "tiny")
    (masks / "009_mask.png").rename(masks / "003_mask.png")
    # both masks are found by name, but anomalib's Folder pairs by sorted position: 1.png <-> 1_a_mask.png
    images = root / "tiny/test/scratch"
    for stem in ("1", "1_a"):
        Image.open(images / "000.png").save(images / f"{stem}.png")
        Image.open(masks / "000_mask.png").save(masks / f"{stem}_mask.png")
    with pytest.raises(ValueError, match="does not belong"):
        check_mvtec_layout(root, "tiny")
    with pytest.raises(FileNotFoundError, match="train"):
        check_mvtec_layout(root, "absent")


def test_train_config_checks_every_field_and_resolves_the_paper_defaults(tmp_path):
    assert TrainConfig().effective_batch_size == 16 and TrainConfig().effective_p == 0.5
    destseg = TrainConfig(model="destseg", dtd_dir=tmp_path)
    assert (
        destseg.effective_batch_size == 32 and destseg.effective_p == 1.0 and destseg.dtd_dir == str(tmp_path)
    )
    assert TrainConfig.from_dict(destseg.to_dict()) == destseg
    assert TrainConfig(limit_train_batches=0.5).limit_train_batches == 0.5
    options = {"reconstruction_width": 8}
    config = TrainConfig(model_options=options)
    options["reconstruction_width"] = 99  # the frozen config keeps its own copy
    assert config.model_options == {"reconstruction_width": 8}
    bad = {
        "model": "padim", "tau": 0.0, "epochs": 0, "image_size": True, "batch_size": 0, "max_steps": -1,
        "limit_train_batches": 1.5, "seed": -1, "accelerator": "", "p": 1.5, "defect_type": "",
        "de_st_steps": -1, "pretrained": "yes", "dtd_dir": 3, "num_workers": -1, "num_maps": 0.5,
        "exclude_support": 5, "save_checkpoint": "no", "model_options": {1: 2},
    }  # fmt: skip
    for name, value in bad.items():
        with pytest.raises(ValueError, match=f"`{name}`"):
            TrainConfig(**{name: value})
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epoch": 1})
    with pytest.raises(TypeError, match="TrainConfig"):
        train_detector(tmp_path, "tiny", tmp_path, config={"epochs": 1})


@pytest.mark.parametrize("model_class", [WeakDraem, DeSTSeg])
def test_tau_is_the_losss_and_changing_it_changes_the_loss(model_class):
    model = model_class(**(SMALL_DRAEM if model_class is WeakDraem else {"pretrained": False}), tau=0.9)
    focal = model.loss.focal  # the weak-supervision term, where tau is read
    assert model.tau == model.loss.tau == focal.tau == 0.9
    model.tau = 0.6
    assert focal.tau == 0.6 and model.loss.tau == 0.6
    logits = torch.zeros(1, 1, 4, 4)
    box = torch.ones(1, 1, 4, 4)
    prob = torch.full((1, 1, 4, 4), 0.7)  # confidently normal at tau 0.6, not at 0.9
    focal.base_loss = lambda prediction, target: torch.ones(1, 1, 4, 4)
    assert focal(logits, box, box, prob) == 0
    model.tau = 0.9
    assert focal(logits, box, box, prob) == 1
    with pytest.raises(ValueError, match="tau"):
        model.tau = 0.0
    with pytest.raises(ValueError, match="tau"):
        model_class(tau=1.5)
    assert model.tau == 0.9


def test_core_never_imports_anomalib_and_integration_names_the_extra():
    code = (
        "import sys, anogen_aug, anogen_aug.losses\n"
        "assert 'anomalib' not in sys.modules, 'core imported anomalib'\n"
        "sys.modules['anomalib'] = None\n"
        "from anogen_aug.integrations.anomalib import TrainConfig  # needs no anomalib\n"
        "try:\n"
        "    from anogen_aug.integrations.anomalib import WeakDraem\n"
        "except ImportError as error:\n"
        "    assert 'anogen-aug[anomalib]' in str(error), error\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_train_config_imports_without_importing_anomalib():
    """The ``anogen-aug train`` flags are made from `TrainConfig`: building the CLI must stay cheap."""
    code = (
        "import sys\n"
        "from anogen_aug.integrations.anomalib import TrainConfig\n"
        "TrainConfig(model='destseg')\n"
        "heavy = {'anomalib', 'lightning', 'kornia'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- real data ------------------------------------------------------------------------------------------------


def _real_subset(category: Path, out: Path, defects: dict[str, int]) -> Path:
    """A small MVTec-layout copy of a real data set: 8 train normals, 4 test normals, a few per defect."""
    import shutil

    picks = {"train/good": 8, "test/good": 4, **{f"test/{d}": n for d, n in defects.items()}}
    for split, count in picks.items():
        (out / split).mkdir(parents=True)
        for path in sorted((category / split).glob("*.png"))[:count]:
            shutil.copy(path, out / split / path.name)
            if split.startswith("test/") and split != "test/good":
                mask = category / "ground_truth" / split[5:] / f"{path.stem}_mask.png"
                (out / "ground_truth" / split[5:]).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, out / "ground_truth" / split[5:] / mask.name)
    return out


@pytest.mark.real_data
def test_real_magnetic_tile_pipeline(shared_data, tmp_path):
    category = shared_data / "magnetic_tile" / "magnetic_tile"
    if not (category / "train" / "good").is_dir():
        pytest.skip(
            f"magnetic_tile data set not found under {shared_data} (set ANOGEN_DATA_DIR to the data folder)"
        )
    # 3 real support anomalies of one defect type -> crop-and-paste bank on 6 real normal images at 64 px
    supports = sorted((category / "test" / "blowhole").glob("*.png"))[-3:]
    masks = [category / "ground_truth" / "blowhole" / f"{path.stem}_mask.png" for path in supports]
    bank = write_bank(
        CopyPasteGenerator(supports, masks),
        sorted((category / "train" / "good").glob("*.png"))[:6],
        tmp_path / "bank",
        category="magnetic_tile",
        defect_type="blowhole",
        box_sampler=BoxSampler(width_range=(0.15, 0.3), height_range=(0.15, 0.3)),
        boxes_per_image=1,
        samples_per_box=1,
        size=(64, 64),
        progress=False,
    )
    assert len(bank) == 6 and all(record["mask_exact"] for record in bank.records)
    # WeakDraem, 1 epoch of 2 batches, tested on real held-out images (variable sizes, resized to 64)
    root = tmp_path / "data"
    _real_subset(category, root / "magnetic_tile", {"blowhole": 4, "crack": 2})
    config = TrainConfig(
        model="draem",
        image_size=64,
        batch_size=4,
        limit_train_batches=2,
        accelerator="cpu",
        model_options={"reconstruction_width": 16, "discrimination_width": 16},
    )
    result = train_detector(root, "magnetic_tile", bank, config=config, out_dir=tmp_path / "run")
    assert result["config"]["defect_types"] == ["blowhole", "crack"]
    assert all(v is not None and math.isfinite(v) for v in result["metrics"].values())
    assert len(result["maps"]) == 4
