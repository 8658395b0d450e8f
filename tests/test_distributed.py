"""Sharded bank generation: two CPU ranks (torchrun, gloo) write shards that merge into the single-process bank."""

from __future__ import annotations

import filecmp
import json
import os
import socket
import subprocess
import sys

from anogen_aug.demo import make_demo_data
from anogen_aug.locking import LOCK_FILE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_write_the_same_bank_as_one_process(tmp_path):
    widget = make_demo_data(tmp_path / "data", seed=2)
    args = ["generate", "--generator", "paste", "--support-images", str(widget / "test/scratch/000.png"),
            "--support-masks", str(widget / "ground_truth/scratch/000_mask.png"), "--images",
            str(widget / "train/good"), "--category", "widget", "--defect-type", "scratch", "--samples-per-box", "1"]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), "-m", "anogen_aug.cli"]  # fmt: skip
    subprocess.run(
        [*launcher, *args, "--out", str(tmp_path / "sharded")], env=env, check=True, capture_output=True
    )
    subprocess.run([sys.executable, "-m", "anogen_aug.cli", *args, "--out", str(tmp_path / "single")], env=env,
                   check=True, capture_output=True)  # fmt: skip

    def records(bank):
        return {
            r["id"]: r for r in map(json.loads, (tmp_path / bank / "manifest.jsonl").read_text().splitlines())
        }

    sharded, single = records("sharded"), records("single")
    assert not list((tmp_path / "sharded").rglob(LOCK_FILE)), "every lock is released"
    shard_sizes = [
        len((tmp_path / "sharded/shards" / f"shard-{r}/manifest.jsonl").read_text().splitlines())
        for r in (0, 1)
    ]
    assert shard_sizes == [12, 12]  # 12 images x 2 boxes x 1 sample, every other image per rank
    assert sharded.keys() == single.keys() and len(single) == 24
    for key, record in single.items():
        assert filecmp.cmp(
            tmp_path / "sharded" / record["image"], tmp_path / "single" / record["image"], shallow=False
        )
        assert sharded[key]["boxes"] == record["boxes"]
