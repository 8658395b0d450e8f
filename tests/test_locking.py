"""One writer at a time: a folder being written is locked; a second writer fails at once naming the holder's pid;
a lock left by a killed process never blocks the next run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from anogen_aug.bank import MANIFEST, merge_banks, verify_bank, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.cli import main
from anogen_aug.images import save_png
from anogen_aug.locking import LOCK_FILE, FolderLock, FolderLockedError
from anogen_aug.paste import CopyPasteGenerator

HOLDER = """
import os, signal, sys, time
from anogen_aug.locking import FolderLock
with FolderLock(sys.argv[1], what="bank"):
    print("locked", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
"""

SLOW_WRITER = """
import os, sys, time, torch
from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.paste import CopyPasteGenerator

class Slow(CopyPasteGenerator):  # says when it is inside the bank, then waits for a 'go' file
    def generate(self, image, boxes, *, generator=None):
        print("writing", flush=True)
        while not os.path.exists(sys.argv[1] + ".go"):
            time.sleep(0.05)
        return super().generate(image, boxes, generator=generator)

image, mask = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
mask[:, 2:6, 2:6] = 1
write_bank(Slow([image], [mask]), sys.argv[2:], sys.argv[1], category="c", defect_type="d",
           box_sampler=BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5)), progress=False)
"""


def _start(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


@pytest.fixture
def holder(tmp_path):
    """Another live process holding ``tmp_path / "bank"``'s lock."""
    process = _start(HOLDER, tmp_path / "bank", "hold")
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def sources(tmp_path):
    return [save_png(torch.full((3, 32, 32), 0.2 + 0.3 * i), tmp_path / f"n{i}.png") for i in range(2)]


def _paste():
    image, mask = torch.zeros(3, 8, 8), torch.zeros(1, 8, 8)
    mask[:, 2:6, 2:6] = 1
    return CopyPasteGenerator([image], [mask])


def _write(sources, out):
    sampler = BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5))
    return write_bank(
        _paste(), sources, out, category="c", defect_type="d", box_sampler=sampler, progress=False
    )


def test_a_second_writer_fails_at_once_naming_folder_and_pid(holder, sources, tmp_path):
    bank = tmp_path / "bank"
    with pytest.raises(FolderLockedError, match=rf"{re.escape(str(bank))} .*pid {holder.pid}\b") as info:
        _write(sources, bank)
    assert info.value.pid == holder.pid and info.value.folder == bank.resolve()
    assert sorted(p.name for p in bank.iterdir()) == [LOCK_FILE], "the second writer wrote nothing"
    with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
        merge_banks([], bank)
    (bank / MANIFEST).touch()
    with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
        verify_bank(bank, repair=True)


def test_the_cli_names_the_holder(holder, sources, tmp_path, capsys):
    support = save_png(torch.ones(3, 8, 8), tmp_path / "support.png")
    mask = save_png(torch.ones(1, 8, 8), tmp_path / "mask.png")
    argv = ["generate", "--generator", "paste", "--support-images", str(support), "--support-masks", str(mask),
            "--images", *map(str, sources), "--out", str(tmp_path / "bank"), "--width-range", "0.3", "0.5"]  # fmt: skip
    started = time.monotonic()
    assert main(argv) == 1
    assert time.monotonic() - started < 30, "fails at once, without waiting for the holder"
    error = capsys.readouterr().err
    assert str(tmp_path / "bank") in error and f"pid {holder.pid}" in error and len(error.splitlines()) == 1


def test_a_lock_left_by_a_killed_process_does_not_block(sources, tmp_path):
    process = _start(HOLDER, tmp_path / "bank", "die")
    assert process.stdout.readline().strip() == "locked"
    assert process.wait() == -signal.SIGKILL
    assert f"pid {process.pid}" in (tmp_path / "bank" / LOCK_FILE).read_text(), "the stale lock file is there"
    assert len(_write(sources, tmp_path / "bank")) == 8
    assert not (tmp_path / "bank" / LOCK_FILE).exists(), "released and removed"


def test_a_hand_made_stale_lock_file_does_not_block(sources, tmp_path):
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / LOCK_FILE).write_text("pid 4194303 on elsewhere\n")
    assert len(_write(sources, tmp_path / "bank")) == 8


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    errors = []
    with FolderLock(tmp_path / "f"), FolderLock(tmp_path / "f"):
        thread = threading.Thread(target=lambda: errors.append(_try(tmp_path / "f")))
        thread.start()
        thread.join()
    assert isinstance(errors[0], FolderLockedError) and errors[0].pid == os.getpid()
    assert _try(tmp_path / "f") is None and not (tmp_path / "f" / LOCK_FILE).exists()


def _try(folder):
    try:
        with FolderLock(folder):
            return None
    except FolderLockedError as error:
        return error


def test_two_concurrent_writers_never_double_the_manifest(sources, tmp_path):
    first = _start(SLOW_WRITER, tmp_path / "bank", *sources)
    assert first.stdout.readline().strip() == "writing"
    with pytest.raises(FolderLockedError, match=f"pid {first.pid}"):
        _write(sources, tmp_path / "bank")  # the same call, while the first is inside the bank
    (tmp_path / "bank.go").touch()
    _, error = first.communicate(timeout=120)
    assert first.returncode == 0, error
    lines = (tmp_path / "bank" / MANIFEST).read_text().splitlines()
    assert len(lines) == 8 and len(set(lines)) == 8


def test_learn_locks_its_output_folder(tiny_ldm, tmp_path):
    from anogen_aug.inversion import InversionConfig, learn_defect_embedding

    process = _start(HOLDER, tmp_path / "run", "hold")
    try:
        assert process.stdout.readline().strip() == "locked"
        image, mask = torch.rand(3, 32, 32), torch.zeros(1, 32, 32)
        mask[:, 8:24, 8:24] = 1
        with pytest.raises(FolderLockedError, match=f"learn output folder lock held by pid {process.pid}"):
            learn_defect_embedding(tiny_ldm, [image], [mask], config=InversionConfig(max_train_steps=1),
                                   output_dir=tmp_path / "run", progress=False)  # fmt: skip
        assert not list((tmp_path / "run").glob("checkpoint-*"))
    finally:
        process.kill()
        process.wait()


def test_the_next_learn_run_cleans_what_a_kill_inside_a_save_left(tmp_path):
    from anogen_aug.inversion.checkpoints import latest_checkpoint, locked_output_dir, save_checkpoint

    vectors = torch.zeros(1, 4, requires_grad=True)
    optimizer = torch.optim.AdamW([vectors])
    vectors.sum().backward()
    optimizer.step()
    meta = {"config": {}, "support_hashes": ["a"], "backbone": "tiny", "token_dim": 4, "resolution": 32}
    run = tmp_path / "run"
    saved = save_checkpoint(run, 2, vectors, optimizer, torch.Generator(), meta)
    os.replace(saved, run / ".checkpoint-2.old")  # killed after moving the old checkpoint aside
    (run / ".checkpoint-4.k2j3").mkdir()  # killed while staging the next one
    with locked_output_dir(run):
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "checkpoint-2"]
        assert latest_checkpoint(run) == run / "checkpoint-2"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2"]
