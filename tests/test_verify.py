"""`verify_bank` / ``anogen-aug verify``: every record checked against its files, after real kills (SIGKILL inside
an image write, between a sample's files and its record) and after hand-made damage; ``--repair`` drops exactly
the broken records and the orphans, never a good record or its files, and a resumed run then rebuilds the very
bank an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from anogen_aug.bank import MANIFEST, AnomalyBank, verify_bank
from anogen_aug.cli import main
from anogen_aug.images import save_png
from anogen_aug.locking import LOCK_FILE

WRITER = """
import json, os, signal, sys, torch
from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.paste import CopyPasteGenerator, PasteConfig

def write(out, sources):
    image, mask = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
    image[1], mask[:, 2:6, 2:6] = 1.0, 1
    generator = CopyPasteGenerator([image], [mask], config=PasteConfig(blend="hard"))
    sampler = BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5))
    return write_bank(generator, sources, out, category="c", defect_type="d", box_sampler=sampler, progress=False)

def kill_at(kind, n):
    calls = [0]
    def count():
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    if kind == "image-write":  # inside save_png: the temp file is written, not yet renamed
        rename = os.replace
        def replace(source, target):
            if os.sep + "images" + os.sep in str(target):
                count()
            return rename(source, target)
        os.replace = replace
    else:  # "before-record": the sample's three files are there, its record is not
        from anogen_aug.bank.manifest import ManifestWriter
        append = ManifestWriter.append
        def before(self, record):
            count()
            return append(self, record)
        ManifestWriter.append = before

if __name__ == "__main__":
    out, kind, n, *sources = sys.argv[1:]
    if kind != "none":
        kill_at(kind, int(n))
    write(out, sources)
"""


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    """The writer script, normal sources, and the bank an uninterrupted run writes (the reference)."""
    root = tmp_path_factory.mktemp("verify")
    (root / "writer.py").write_text(WRITER)
    sources = [save_png(torch.full((3, 32, 32), 0.2 + 0.3 * i), root / f"n{i}.png") for i in range(2)]
    _run(root, root / "reference", "none", 0, sources)
    return root, sources


def _run(root, out, kind, n, sources) -> int:
    """Write the bank: in a subprocess killed as ``kind`` says, or (``"none"``) here, with the same code."""
    if kind == "none":
        namespace = {}
        exec(WRITER, namespace)  # the script's `write`, without its __main__ block
        namespace["write"](out, sources)
        return 0
    command = [sys.executable, str(root / "writer.py"), str(out), kind, str(n), *map(str, sources)]
    return subprocess.run(command, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


def _files(bank) -> dict[str, bytes]:
    """Every file of a bank by relative path; the manifest as a set of lines (a resumed run appends in order)."""
    files = {str(p.relative_to(bank)): p.read_bytes() for p in sorted(bank.rglob("*")) if p.is_file()}
    files[MANIFEST] = b"\n".join(sorted(files[MANIFEST].splitlines()))
    return files


@pytest.mark.parametrize(("kind", "n", "orphans"), [("image-write", 3, 1), ("before-record", 5, 3)])
def test_after_a_real_kill_verify_repair_and_resume_rebuild_the_same_bank(writer, tmp_path, kind, n, orphans):
    root, sources = writer
    bank = tmp_path / "bank"
    assert _run(root, bank, kind, n, sources) == -signal.SIGKILL
    assert (bank / LOCK_FILE).is_file(), "the killed writer's lock file stays, and must not block"
    report = verify_bank(bank)
    assert report.records == n - 1 and not report.broken and len(report.orphans) == orphans
    if kind == "image-write":
        assert report.orphans[0].name.endswith(".tmp"), "the temp file of the interrupted image write"
    else:
        assert main(["verify", str(bank), "--repair"]) == 0
        assert len(list(bank.glob("*/*.png"))) == (n - 1) * 3, "the unrecorded sample's files are removed"
    assert _run(root, bank, "none", 0, sources) == 0, "resume removes the litter it owns"
    assert verify_bank(bank).ok and _files(bank) == _files(root / "reference")


def _damage(bank, secret) -> dict[str, str]:
    """Break records 0-5 in six ways and the manifest in three; return {id: what is expected in its error}."""
    records = AnomalyBank(bank).records
    expected = {}
    (bank / records[0]["mask"]).unlink()
    expected[records[0]["id"]] = "field 'mask': the file .* is missing"
    (bank / records[1]["image"]).write_bytes((bank / records[1]["image"]).read_bytes()[:40])
    expected[records[1]["id"]] = "field 'image': the file .* does not decode"
    save_png(torch.rand(3, 16, 16), bank / records[2]["image"])
    expected[records[2]["id"]] = "field 'image': the file is 16x16 pixels, the record says 32x32"
    save_png(torch.zeros(1, 32, 32), bank / records[3]["box_mask"])
    expected[records[3]["id"]] = "field 'box_mask': the box mask is not the union"
    save_png(torch.ones(1, 32, 32), bank / records[5]["mask"])
    expected[records[5]["id"]] = "field 'mask': the pixel mask reaches outside the box mask"
    lines = (bank / MANIFEST).read_text().splitlines()
    lines[4] = json.dumps({**records[4], "image": "../secret.png"})
    expected[records[4]["id"]] = "field 'image' must stay inside its folder"
    broken_field = {k: v for k, v in records[7].items() if k != "boxes"}
    lines += [lines[6], json.dumps(broken_field), '{"id": "torn", "ima']  # a duplicate, a missing field, torn
    (bank / MANIFEST).write_text("\n".join(lines))
    (bank / "images" / "stray.png").write_bytes(b"stray")
    (bank / "images" / ".x.png.k2j3.tmp").write_bytes(b"partial")
    (bank / "masks" / "link.png").symlink_to(secret)
    return expected


def test_hand_made_damage_is_reported_and_repaired_without_touching_good_records(writer, tmp_path):
    root, sources = writer
    bank = tmp_path / "bank"
    assert _run(root, bank, "none", 0, sources) == 0
    save_png(torch.rand(3, 32, 32), tmp_path / "secret.png")
    expected = _damage(bank, tmp_path / "secret.png")
    with pytest.raises(ValueError, match="line 5, record .*field 'image' must stay inside"):
        AnomalyBank(bank)  # a broken bank is refused until repaired
    good_lines = (bank / MANIFEST).read_text().splitlines()[6:8]
    good_files = [
        bank / json.loads(line)[key] for line in good_lines for key in ("image", "box_mask", "mask")
    ]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in good_files}
    report = verify_bank(bank)
    assert report.records == 2 and len(report.broken) == 6 + 3 and not report.ok
    for record_id, pattern in expected.items():
        assert any(record_id in line and re.search(pattern, line) for line in report.broken), pattern
    assert any("duplicates line 7" in b for b in report.broken) and any("torn" in b for b in report.broken)
    assert any("field 'boxes' is missing" in b for b in report.broken)
    names = {p.name for p in report.orphans}
    # the files of the six broken records (one deleted), a stray file, a temp file and a link pointing out
    assert {"stray.png", ".x.png.k2j3.tmp", "link.png"} <= names and len(names) == 6 * 3 - 1 + 3
    assert main(["verify", str(bank)]) == 1
    repaired = verify_bank(bank, repair=True)
    assert repaired.repaired and repaired.broken == report.broken
    assert (bank / MANIFEST).read_text().splitlines() == good_lines, "good lines kept byte for byte"
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in good_files} == before
    assert (tmp_path / "secret.png").is_file(), "a link is removed, never what it points to"
    assert verify_bank(bank).ok and len(AnomalyBank(bank)) == 2
    assert _run(root, bank, "none", 0, sources) == 0
    assert _files(bank) == _files(root / "reference"), "a resumed run regenerates the dropped samples"


def test_verify_command_reports_and_repairs(writer, tmp_path, capsys):
    root, sources = writer
    bank = tmp_path / "bank"
    assert _run(root, bank, "none", 0, sources) == 0
    assert main(["verify", str(bank)]) == 0
    assert "8 good record(s), 0 broken, 0 orphan file(s)" in capsys.readouterr().out
    (bank / "images" / "stray.png").write_bytes(b"stray")
    assert main(["verify", str(bank)]) == 1
    assert "orphan: images/stray.png" in capsys.readouterr().out
    assert main(["verify", str(bank), "--repair"]) == 0 and not (bank / "images" / "stray.png").exists()
    assert main(["verify", str(tmp_path)]) == 1
    assert "not an anomaly bank" in capsys.readouterr().err
