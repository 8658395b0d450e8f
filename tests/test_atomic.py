"""Crash-safe files (`anogen_aug.atomic`): whole or absent, never half-written, with the usual mode."""

from __future__ import annotations

import os
import stat

import pytest

from anogen_aug.atomic import replace_dir, write_atomic, write_bytes_atomic, write_text_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    target = write_text_atomic("old", tmp_path / "f.txt")

    def explode(stream):
        stream.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(target, explode)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_files_get_the_umask_mode_and_folders_are_created(tmp_path):
    path = write_bytes_atomic(b"x", tmp_path / "a" / "b.bin")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_replace_dir_swaps_a_whole_folder(tmp_path):
    final = tmp_path / "checkpoint-5"
    for content in ("first", "second"):
        staging = tmp_path / f".staging-{content}"
        write_text_atomic(content, staging / "state.txt")
        replace_dir(staging, final)
        assert (final / "state.txt").read_text() == content and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]
