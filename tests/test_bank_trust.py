"""A bank is a trust boundary: every path read from a manifest (or a checkpoint folder) stays inside its folder.

Crafted banks - relative escapes, absolute paths, symlinks pointing out - are refused with an error naming the
record and the field before a byte is read or written; a record missing a field names the file, line, record,
field and what to do.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from anogen_aug.bank import MANIFEST, AnomalyBank, merge_banks, verify_bank, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.images import save_png
from anogen_aug.inversion.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from anogen_aug.paste import CopyPasteGenerator, PasteConfig
from anogen_aug.paths import path_problem, resolve_inside


@pytest.fixture
def bank(tmp_path):
    """A 4-sample crop-and-paste bank of 32 px images, and a PNG outside it (the secret a crafted bank wants)."""
    sources = [save_png(torch.full((3, 32, 32), 0.4), tmp_path / "normal.png")]
    image, mask = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
    image[1], mask[:, 2:6, 2:6] = 1.0, 1
    save_png(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), tmp_path / "secret.png")
    return write_bank(
        CopyPasteGenerator([image], [mask], config=PasteConfig(blend="hard")), sources, tmp_path / "bank",
        category="widget", defect_type="spot", box_sampler=BoxSampler(width_range=(0.3, 0.5),
        height_range=(0.3, 0.5)), progress=False,
    )  # fmt: skip


def _edit_record(root, index: int, **changes) -> str:
    """Rewrite record ``index`` of the manifest with ``changes`` (a None value deletes the field)."""
    lines = (root / MANIFEST).read_text().splitlines()
    record = json.loads(lines[index])
    for key, value in changes.items():
        record.pop(key) if value is None else record.__setitem__(key, value)
    lines[index] = json.dumps(record)
    (root / MANIFEST).write_text("\n".join(lines) + "\n")
    return record.get("id")


@pytest.mark.parametrize(
    "value",
    ["../secret.png", "images/../../secret.png", "/etc/passwd", "C:secret.png", "images\\x.png", "./images/x.png",
     "images//x.png", "images/", "", None, 5],
)  # fmt: skip
def test_unsafe_paths_are_named(value):
    assert path_problem(value) is not None and repr(value) in path_problem(value)


def test_safe_paths_pass():
    assert path_problem("images/a-b_c.png") is None and path_problem("masks/x_mask.png") is None


@pytest.mark.parametrize("value", ["../secret.png", "images/../../secret.png"])
def test_a_relative_escape_is_refused_naming_record_and_field(bank, value):
    record_id = _edit_record(bank.root, 1, image=value)
    with pytest.raises(ValueError, match=rf"line 2, record '{record_id}', field 'image'.*'\.\.'"):
        AnomalyBank(bank.root)


def test_an_absolute_path_is_refused(bank, tmp_path):
    record_id = _edit_record(bank.root, 0, mask=str(tmp_path / "secret.png"))
    with pytest.raises(ValueError, match=rf"record '{record_id}', field 'mask' must be a relative path"):
        AnomalyBank(bank.root)


def test_a_symlink_pointing_out_is_refused_before_reading(bank, tmp_path):
    target = bank.root / bank.records[0]["image"]
    target.unlink()
    target.symlink_to(tmp_path / "secret.png")
    opened = AnomalyBank(bank.root)  # lexically fine: the link is followed when the file is used
    with pytest.raises(ValueError, match=rf"record '{bank.records[0]['id']}', field 'image'.*symlink"):
        opened[0]
    assert torch.is_tensor(opened[1].image), "the other samples still read"
    pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="field 'image'.*symlink"):
        opened.to_hf_dataset()


def test_a_symlinked_folder_pointing_out_is_refused(bank, tmp_path):
    os.replace(bank.root / "masks", tmp_path / "elsewhere")
    (bank.root / "masks").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match=r"bank's masks .* leads out of its folder"):
        AnomalyBank(bank.root)


def test_a_symlink_inside_the_bank_is_followed(bank):
    first, second = (bank.root / bank.records[i]["image"] for i in (0, 1))
    first.unlink()
    first.symlink_to(os.path.relpath(second, first.parent))
    assert torch.equal(AnomalyBank(bank.root)[0].image, AnomalyBank(bank.root)[1].image)


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ValueError, match="the manifest"):
        resolve_inside(tmp_path, "a", name="the manifest")


def test_export_never_embeds_a_file_outside_the_bank(bank, tmp_path):
    pytest.importorskip("datasets")
    _edit_record(bank.root, 3, image=str(tmp_path / "secret.png"))
    with pytest.raises(ValueError, match="field 'image' must be a relative path"):
        AnomalyBank(bank.root).to_hf_dataset()


def test_merge_refuses_an_escaping_shard_record_before_writing(bank, tmp_path):
    record_id = _edit_record(bank.root, 2, image="../../x.png")
    out = tmp_path / "deep" / "merged"
    with pytest.raises(ValueError, match=rf"record '{record_id}', field 'image'"):
        merge_banks([bank.root], out)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "deep").exists()


def test_merge_refuses_a_shard_file_linked_out(bank, tmp_path):
    target = bank.root / bank.records[2]["mask"]
    target.unlink()
    target.symlink_to(tmp_path / "secret.png")
    with pytest.raises(ValueError, match="field 'mask'.*symlink"):
        merge_banks([bank.root], tmp_path / "merged")
    assert not (tmp_path / "merged").exists(), "nothing is written: every record is checked first"


@pytest.mark.parametrize(
    ("changes", "field", "what"),
    [({"boxes": None}, "boxes", "is missing"), ({"width": "32"}, "width", "positive integer"),
     ({"boxes": [[1, 2, 3]]}, "boxes", "x0, y0, x1, y1"), ({"id": None}, "id", "is missing")],
)  # fmt: skip
def test_a_broken_record_names_file_line_record_field_and_the_fix(bank, changes, field, what):
    _edit_record(bank.root, 1, **changes)
    with pytest.raises(
        ValueError, match=rf"manifest.jsonl: line 2, record .*field '{field}' .*{what}.*--repair"
    ):
        AnomalyBank(bank.root)
    with pytest.raises(ValueError, match=f"field '{field}'"):  # a writer refuses to extend it too
        merge_banks([], bank.root)


def test_load_source_reads_only_an_absolute_hashed_source(bank):
    _edit_record(bank.root, 0, source={"path": "normal.png", "hash": bank.records[0]["source"]["hash"]})
    with pytest.raises(ValueError, match=rf"record '{bank.records[0]['id']}', field 'source'"):
        AnomalyBank(bank.root).load_source(0)


def _checkpoint(folder):
    vectors = torch.zeros(1, 4, requires_grad=True)
    optimizer = torch.optim.AdamW([vectors])
    vectors.sum().backward()
    optimizer.step()
    meta = {"config": {}, "support_hashes": ["a"], "backbone": "tiny", "token_dim": 4, "resolution": 32}
    return save_checkpoint(folder, 1, vectors, optimizer, torch.Generator(), meta), vectors, optimizer, meta


def test_a_checkpoint_folder_linked_out_is_refused(tmp_path):
    elsewhere, _, _, _ = _checkpoint(tmp_path / "elsewhere")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-9").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="checkpoint-9.*symlink"):
        latest_checkpoint(tmp_path / "run")


def test_checkpoint_metadata_errors_name_file_and_field(tmp_path):
    folder, vectors, optimizer, meta = _checkpoint(tmp_path / "run")
    saved = json.loads((folder / "checkpoint.json").read_text())
    (folder / "checkpoint.json").write_text(json.dumps({**saved, "token_dim": None}))
    with pytest.raises(ValueError, match=r"checkpoint\.json: field 'token_dim'"):
        load_checkpoint(folder, vectors, optimizer, torch.Generator(), meta)


def test_no_writer_writes_through_a_folder_linked_out(bank, tmp_path):
    os.replace(bank.root / "images", tmp_path / "elsewhere")
    (bank.root / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    before = sorted((tmp_path / "elsewhere").iterdir())
    (tmp_path / "elsewhere" / ".precious.png.k2j3.tmp").write_bytes(b"not litter of ours")
    with pytest.raises(ValueError, match=r"bank's images .* leads out of its folder"):
        merge_banks([], bank.root)
    with pytest.raises(ValueError, match=r"bank's images .* leads out of its folder"):
        verify_bank(bank.root, repair=True)
    assert sorted((tmp_path / "elsewhere").iterdir()) == sorted(
        [*before, tmp_path / "elsewhere" / ".precious.png.k2j3.tmp"]
    )


def test_a_manifest_linked_out_is_refused(bank, tmp_path):
    os.replace(bank.root / MANIFEST, tmp_path / "elsewhere.jsonl")
    (bank.root / MANIFEST).symlink_to(tmp_path / "elsewhere.jsonl")
    before = (tmp_path / "elsewhere.jsonl").read_bytes()
    for call in (
        lambda: AnomalyBank(bank.root),
        lambda: merge_banks([], bank.root),
        lambda: verify_bank(bank.root),
    ):
        with pytest.raises(ValueError, match="bank's manifest.jsonl .* leads out of its folder"):
            call()
    assert (tmp_path / "elsewhere.jsonl").read_bytes() == before
