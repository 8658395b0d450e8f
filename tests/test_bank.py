"""Anomaly bank: layout and records, resumable and crash-safe writing, reading, merging, Hugging Face export."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from anogen_aug.bank import MANIFEST, AnomalyBank, BankSample, merge_banks, read_manifest, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.images import content_hash, load_image, save_png
from anogen_aug.paste import CopyPasteGenerator, PasteConfig

SAMPLER = BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5))


class CountingPaste(CopyPasteGenerator):
    """A real crop-and-paste generator that counts its calls and can fail on a given call."""

    def __init__(self, *args, fail_at: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_at = 0, fail_at

    def generate(self, image, boxes, *, generator=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return super().generate(image, boxes, generator=generator)


@pytest.fixture
def sources(tmp_path):
    paths = []
    for i in range(2):
        image = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(i)) * 0.3 + 0.3
        paths.append(save_png(image, tmp_path / "normal" / f"{i:03d}.png"))
    return paths


def _support():
    image = torch.zeros(3, 16, 16)
    image[1] = 1.0
    mask = torch.zeros(1, 16, 16)
    mask[:, 3:13, 5:11] = 1
    return [image], [mask]


def _paste(**kwargs) -> CountingPaste:
    return CountingPaste(*_support(), config=PasteConfig(blend="hard"), **kwargs)


def _write(generator, sources, out, **kwargs):
    options = dict(category="widget", defect_type="green spot", box_sampler=SAMPLER, size=32, progress=False)
    return write_bank(generator, sources, out, **{**options, **kwargs})


def test_layout_records_and_samples(sources, tmp_path):
    bank = _write(_paste(), sources, tmp_path / "bank")
    assert len(bank) == 2 * 2 * 2
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["version"] == 1
    record = bank.records[0]
    assert record["id"].startswith("green_spot-") and (record["width"], record["height"]) == (32, 32)
    assert record["source"]["hash"] == content_hash(sources[0]) and record["mask_exact"] is True
    assert record["generator"]["name"] == "paste" and record["embedding_id"] is None
    assert len({r["id"] for r in bank.records}) == len(bank)
    for key in ("image", "box_mask", "mask"):
        assert (tmp_path / "bank" / record[key]).is_file()
    sample = bank[0]
    assert (
        isinstance(sample, BankSample) and sample.image.shape == (3, 32, 32) and sample.boxes.shape == (1, 4)
    )
    source = bank.load_source(0)
    assert record["source"]["pixel_hash"] == content_hash(source)
    outside = ~sample.box_mask.bool().expand(3, -1, -1)
    assert torch.equal(sample.image[outside], source[outside]), (
        "pixels outside the box are the stored source's"
    )
    assert sample.mask.any() and not (sample.mask.bool() & ~sample.box_mask.bool()).any()
    assert bank.indices_for_source(record["source"]["hash"]) == [0, 1, 2, 3]
    assert bank.indices_for_source(record["source"]["pixel_hash"]) == [0, 1, 2, 3]
    assert bank[-1].id == bank.records[-1]["id"]
    with pytest.raises(IndexError):
        bank[len(bank)]


def test_rerun_skips_existing_ids_and_regenerates_the_same_bytes(sources, tmp_path):
    out = tmp_path / "bank"
    first = _paste()
    bank = _write(first, sources, out)
    assert first.calls == 8
    again = _paste()
    _write(again, sources, out)
    assert again.calls == 0, "a re-run generates nothing"
    # Lose the last three records (and one sample's files): exactly those are regenerated, byte for byte.
    lost = bank.records[-3:]
    before = {r["id"]: (out / r["image"]).read_bytes() for r in lost}
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    (out / MANIFEST).write_text("".join(lines[:-3]))
    (out / lost[0]["image"]).unlink()
    third = _paste()
    rebuilt = _write(third, sources, out)
    assert third.calls == 3 and len(rebuilt) == 8
    assert {r["id"]: (out / r["image"]).read_bytes() for r in rebuilt.records[-3:]} == before


def test_rerun_with_other_settings_warns_and_keeps_samples(sources, tmp_path, caplog):
    _write(_paste(), sources[:1], tmp_path / "bank")
    with caplog.at_level("WARNING", logger="anogen_aug.bank"):
        _write(_paste(), sources[:1], tmp_path / "bank")
    assert "other paste settings" not in caplog.text
    other = CountingPaste(*_support(), config=PasteConfig(blend="feather"))
    with caplog.at_level("WARNING", logger="anogen_aug.bank"):
        _write(other, sources[:1], tmp_path / "bank")
    assert "other paste settings" in caplog.text and other.calls == 0


def test_seed_and_size_change_the_ids(sources, tmp_path):
    ids = {r["id"] for r in _write(_paste(), sources[:1], tmp_path / "a").records}
    assert ids.isdisjoint(r["id"] for r in _write(_paste(), sources[:1], tmp_path / "b", seed=1).records)
    square = _write(_paste(), sources[:1], tmp_path / "c", size=(24, 36))
    assert ids.isdisjoint(r["id"] for r in square.records)
    assert square[0].image.shape == (3, 24, 36) and square.records[0]["width"] == 36


def test_torn_last_line_is_tolerated_then_repaired(sources, tmp_path):
    out = tmp_path / "bank"
    _write(_paste(), sources, out)
    manifest = out / MANIFEST
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-append
    assert len(AnomalyBank(out)) == 7, "the torn record is ignored on read"
    generator = _paste()
    bank = _write(generator, sources, out)
    assert generator.calls == 1 and len(bank) == 8
    text = manifest.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


def test_a_crash_never_leaves_a_record_without_files(sources, tmp_path):
    out = tmp_path / "bank"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(_paste(fail_at=6), sources, out)
    records = read_manifest(out / MANIFEST)
    assert len(records) == 5
    for record in records:
        assert all((out / record[key]).is_file() for key in ("image", "box_mask", "mask"))
    resumed = _paste()
    assert len(_write(resumed, sources, out)) == 8 and resumed.calls == 3


def test_a_failed_first_run_leaves_no_skeleton_bank(sources, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(_paste(fail_at=1), sources, tmp_path / "new" / "bank")
    assert not (tmp_path / "new").exists(), "no empty bank (nor its new parent) is left behind"
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(_paste(fail_at=1), sources, tmp_path / "empty")
    assert not list((tmp_path / "empty").iterdir()), "a folder that was empty is left empty"


def test_reader_errors_and_filters(sources, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an anomaly bank"):
        AnomalyBank(tmp_path)
    _write(_paste(), sources[:1], tmp_path / "bank")
    assert len(AnomalyBank(tmp_path / "bank", category="widget", defect_type="green spot")) == 4
    with pytest.raises(ValueError, match="widget/green spot"):
        AnomalyBank(tmp_path / "bank", category="bottle")
    with open(tmp_path / "bank" / MANIFEST, "a") as stream:
        stream.write("{broken\n" + json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ValueError, match="line 5 is not valid JSON"):
        AnomalyBank(tmp_path / "bank")


def test_load_source_refuses_a_changed_source(sources, tmp_path):
    _write(_paste(), sources[:1], tmp_path / "bank")
    save_png(torch.zeros(3, 40, 48), sources[0])
    with pytest.raises(ValueError, match="changed since"):
        AnomalyBank(tmp_path / "bank").load_source(0)


def test_writer_checks_its_inputs(sources, tmp_path):
    with pytest.raises(TypeError, match="list of image paths"):
        _write(_paste(), sources[0], tmp_path / "bank")
    with pytest.raises(ValueError, match="`boxes_per_image`"):
        _write(_paste(), sources, tmp_path / "bank", boxes_per_image=0)
    with pytest.raises(ValueError, match="`size`"):
        _write(_paste(), sources, tmp_path / "bank", size=(0, 4))
    with pytest.raises(TypeError, match="`box_sampler`"):
        _write(_paste(), sources, tmp_path / "bank", box_sampler=None)
    with pytest.raises(FileNotFoundError, match="`images`.*missing.png"):
        _write(_paste(), [*sources, tmp_path / "missing.png"], tmp_path / "bank")
    with pytest.raises(ValueError, match="`defect_type`"):
        _write(_paste(), sources, tmp_path / "bank", defect_type="")
    assert not (tmp_path / "bank").exists(), "bad input writes nothing"


def test_merge_shards_equals_one_bank(sources, tmp_path):
    whole = _write(_paste(), sources, tmp_path / "whole")
    out = tmp_path / "merged"
    shards = [out / "shard-0", out / "shard-1"]
    _write(_paste(), sources[0::2], shards[0])
    _write(_paste(), sources[1::2], shards[1])
    merged = merge_banks(shards, out)
    assert sorted(r["id"] for r in merged.records) == sorted(r["id"] for r in whole.records)
    by_id = {r["id"]: i for i, r in enumerate(whole.records)}
    for index in range(len(merged)):
        sample = merged[index]
        assert torch.equal(sample.image, whole[by_id[sample.id]].image)
    first = merged.records[0]
    assert (out / first["image"]).samefile(shards[0] / first["image"]), "files are hard-linked"
    assert len(merge_banks(shards, out)) == 8, "merging again adds nothing"
    with pytest.raises(ValueError, match="output bank itself"):
        merge_banks([out], out)


def test_merge_replaces_leftovers_and_copies_across_file_systems(sources, tmp_path, monkeypatch):
    shard = tmp_path / "out" / "shard-0"
    written = _write(_paste(), sources, shard)
    record = written.records[0]
    leftover = tmp_path / "out" / record["image"]  # an interrupted merge: a file, but no record
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")

    def no_links(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("os.link", no_links)
    merged = merge_banks([shard], tmp_path / "out")
    assert len(merged) == 8 and leftover.read_bytes() == (shard / record["image"]).read_bytes()
    for key in ("image", "box_mask", "mask"):
        copy, original = tmp_path / "out" / record[key], shard / record[key]
        assert copy.read_bytes() == original.read_bytes() and not copy.samefile(original)
    assert not list((tmp_path / "out").rglob(".*.tmp")), "no temporary file is left behind"


def test_hf_dataset_round_trip_offline(sources, tmp_path):
    datasets = pytest.importorskip("datasets")
    bank = _write(_paste(), sources[:1], tmp_path / "bank")
    dataset = bank.to_hf_dataset()
    assert isinstance(dataset.features["image"], datasets.Image) and len(dataset) == 4
    dataset.save_to_disk(str(tmp_path / "hf"))
    expected = bank[1]
    shutil.rmtree(tmp_path / "bank")  # the saved dataset must embed the pixels
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    row = loaded[1]
    assert torch.equal(load_image(row["image"]), expected.image)
    assert torch.equal(load_image(row["mask"])[:1], expected.mask)
    assert row["boxes"] == bank.records[1]["boxes"] and row["mask_exact"] is True
    assert (
        row["id"] == bank.records[1]["id"]
        and row["generator"] == "paste"
        and row["seed"] == bank.records[1]["seed"]
    )


def _fake_hub(monkeypatch, hub):
    """huggingface_hub's HfApi answering from a local folder: an upload copies the folder into ``hub``."""
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload_folder"] = (repo_id, kwargs)
        shutil.copytree(folder_path, hub, dirs_exist_ok=True)
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_pushed_bank_opens_with_load_dataset(sources, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = _fake_hub(monkeypatch, tmp_path / "hub")
    bank = _write(_paste(), sources[:1], tmp_path / "bank")
    assert bank.push_to_hub("acme/widget-bank", private=True, token="hf_x", revision="v1") == "commit"
    assert calls["create_repo"] == (
        "acme/widget-bank",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert calls["create_branch"][1]["branch"] == "v1"
    upload = calls["upload_folder"][1]
    assert upload["revision"] == "v1" and "4 samples" in upload["commit_message"]
    assert upload["delete_patterns"] == ["data/train-*"], "a re-push replaces the split's shards"
    shutil.rmtree(tmp_path / "bank")  # the pushed files must embed the pixels
    loaded = datasets.load_dataset(str(tmp_path / "hub"), cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"] and len(loaded["train"]) == 4
    assert {"image", "mask", "box_mask", "boxes", "category", "defect_type"} <= set(loaded["train"].features)
    assert isinstance(loaded["train"].features["mask"], datasets.Image)
    row = loaded["train"][2]
    assert row["id"] == bank.records[2]["id"] and row["boxes"] == bank.records[2]["boxes"]
    assert row["category"] == "widget" and row["defect_type"] == "green spot"
    assert (tmp_path / "hub" / "README.md").read_text().startswith("---\n")


def test_push_refuses_a_bad_split_before_uploading(sources, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    calls = _fake_hub(monkeypatch, tmp_path / "hub")
    bank = _write(_paste(), sources[:1], tmp_path / "bank")
    with pytest.raises(ValueError, match="`split`"):
        bank.push_to_hub("acme/widget-bank", split="train/../x")
    assert not calls


def test_missing_datasets_names_the_extra(sources, tmp_path, monkeypatch):
    bank = _write(_paste(), sources[:1], tmp_path / "bank")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"anogen-aug\[datasets\]"):
        bank.to_hf_dataset()


class BatchingPaste(CopyPasteGenerator):
    """A real generator with ``generate_batch`` (as the diffusion generator has): the writer must use it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def generate_batch(self, images, boxes, *, generator=None):
        self.batches.append(len(images))
        return [self.generate(i, b, generator=g) for i, b, g in zip(images, boxes, generator)]


def test_batching_generators_get_one_call_per_source_and_the_same_bytes(sources, tmp_path):
    single = _write(_paste(), sources, tmp_path / "single")
    batching = BatchingPaste(*_support(), config=PasteConfig(blend="hard"))
    batched = _write(batching, sources, tmp_path / "batched")
    assert batching.batches == [4, 4]
    for a, b in zip(single.records, batched.records):
        assert a["id"] == b["id"] and a["seed"] == b["seed"]
        assert (single.root / a["image"]).read_bytes() == (batched.root / b["image"]).read_bytes()


@pytest.mark.slow  # imports diffusers and runs a tiny LDM: ~10-30 s on 2 shared cores
def test_diffusion_generator_writes_an_estimated_mask_bank(sources, tmp_path):
    from anogen_aug.embedding import DefectEmbedding
    from anogen_aug.generation import AnomalyGenerator, GenerationConfig
    from anogen_aug.testing import tiny_backbone

    backbone = tiny_backbone("ldm")
    vectors = torch.randn(1, backbone.token_dim, generator=torch.Generator().manual_seed(0))
    embedding = DefectEmbedding(vectors, placeholder_token="<spot>", backbone=backbone.name_or_path)
    generator = AnomalyGenerator(backbone, embedding, config=GenerationConfig(num_inference_steps=2))
    bank = _write(
        generator, sources[:1], tmp_path / "bank", boxes_per_image=1, embedding_id=embedding.id, size=64
    )
    assert len(bank) == 2 and bank.records[0]["mask_exact"] is False
    assert (
        bank.records[0]["generator"]["name"] == "anogen" and bank.records[0]["embedding_id"] == embedding.id
    )
    sample, source = bank[0], bank.load_source(0)
    outside = ~sample.box_mask.bool().expand(3, -1, -1)
    assert torch.equal(sample.image[outside], source[outside])
