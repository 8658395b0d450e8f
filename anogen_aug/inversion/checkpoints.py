"""Resumable stage-1 checkpoints: ``checkpoint-<step>/`` with the vector, AdamW's moments and the generator.

A checkpoint folder holds ``state.safetensors`` (``vectors``, ``generator_state`` and ``optimizer.<key>`` for
AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``) and ``checkpoint.json`` (the step and the run's metadata). It is
staged in a hidden folder and renamed into place (`anogen_aug.atomic.replace_dir`), so a crash never leaves a
half-written checkpoint that looks whole; resuming from it continues the run bit for bit.

The metadata ``meta`` is a JSON-able dict with ``config`` (`InversionConfig.to_dict`), ``support_hashes``,
``backbone``, ``token_dim`` and ``resolution``; a checkpoint is only resumed by a run whose metadata agrees. The
metadata names no file: the only paths read are the ``checkpoint-<step>`` folders themselves, each resolved
inside the output folder (`anogen_aug.paths`: a symlink pointing out of it is refused).

A run killed while saving leaves a hidden staging folder, or the previous checkpoint moved aside
(``.checkpoint-<step>.old``); `remove_stale_staging` removes the first and puts the second back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from ..atomic import fsync_dir, replace_dir, write_bytes_atomic
from ..hub import read_json
from ..locking import FolderLock
from ..paths import resolve_inside

logger = logging.getLogger(__name__)

_STATE_FILE, _META_FILE = "state.safetensors", "checkpoint.json"
#: The metadata fields `load_checkpoint` reads, and their JSON types.
_META_FIELDS = {"step": int, "config": dict, "support_hashes": list, "token_dim": int}
#: Config fields that may change when resuming (train longer, checkpoint at other steps).
RESUMABLE_CHANGES = ("max_train_steps", "checkpointing_steps")


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> Path:
    """Write ``output_dir/checkpoint-<step>/`` whole or not at all (staged in a temp folder, then renamed).

    Args:
        output_dir: The run's checkpoint folder (created).
        step: The number of steps taken.
        vectors: The learned vectors ``(n, D)``.
        optimizer: The AdamW optimiser of ``vectors`` (one parameter), after at least one step.
        generator: The run's generator; its state is saved so the draws continue.
        meta: The run's metadata (see the module docstring).

    Returns:
        The checkpoint folder.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    moments = optimizer.state_dict()["state"][0]  # step, exp_avg, exp_avg_sq
    tensors = {
        "vectors": vectors.detach().cpu().contiguous(),
        "generator_state": generator.get_state(),
        **{
            f"optimizer.{key}": torch.as_tensor(value).detach().cpu().contiguous()
            for key, value in moments.items()
        },
    }
    final = output_dir / f"checkpoint-{step}"
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".checkpoint-{step}."))
    try:
        write_bytes_atomic(save_safetensors(tensors), staging / _STATE_FILE)
        write_bytes_atomic(json.dumps({"step": step, **meta}, indent=2).encode(), staging / _META_FILE)
        replace_dir(staging, final)  # a rerun of the same step swaps, so a whole checkpoint is always there
        fsync_dir(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete ``checkpoint-<step>`` folder of ``output_dir`` with the highest step; None if there is none.

    Raises:
        ValueError: A ``checkpoint-<step>`` is a symlink leading out of ``output_dir``.
    """
    output_dir = Path(output_dir)
    steps = {}
    for folder in output_dir.glob("checkpoint-*") if output_dir.is_dir() else ():
        suffix = folder.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (folder / _STATE_FILE).is_file() and (folder / _META_FILE).is_file():
            resolve_inside(output_dir, folder.name, name=f"checkpoint folder {folder}")
            steps[int(suffix)] = folder
    return steps[max(steps)] if steps else None


@contextlib.contextmanager
def locked_output_dir(output_dir: str | os.PathLike | None) -> Iterator[None]:
    """Hold the run folder's lock (`anogen_aug.locking`: a second run fails at once, naming the holder) and clean
    what a killed run left (`remove_stale_staging`); a no-op for None (a run that writes nothing)."""
    if output_dir is None:
        yield
        return
    with FolderLock(output_dir, what="learn output folder"):
        remove_stale_staging(output_dir)
        yield


def remove_stale_staging(output_dir: str | os.PathLike) -> None:
    """Clean what a run killed inside `save_checkpoint` left: staging folders are removed; a previous checkpoint
    moved aside (``.checkpoint-<step>.old``) is put back when its replacement never arrived, else removed.

    Only call it holding the folder's lock (`anogen_aug.locking`): a live run's staging folder looks the same.
    """
    output_dir = Path(output_dir)
    for folder in sorted(output_dir.glob(".checkpoint-*")) if output_dir.is_dir() else ():
        final = output_dir / folder.name.removeprefix(".").removesuffix(".old")
        if folder.name.endswith(".old") and not final.exists():
            os.replace(folder, final)
            logger.warning("restored %s, moved aside by a run killed while saving", final)
        elif folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed %s, left by a run killed while saving", folder)


def load_checkpoint(
    folder: str | os.PathLike,
    vectors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    meta: dict[str, Any],
) -> int:
    """Restore the vector, AdamW's state and the generator's state in place; return the checkpoint's step.

    Raises:
        ValueError: The checkpoint was learned from another support set, text-encoder width, resolution or
            settings (only `RESUMABLE_CHANGES` may differ). Another backbone name only warns.
    """
    folder = Path(folder)
    saved = _read_meta(folder / _META_FILE)
    _check_resumable(folder, saved, meta)
    tensors = load_file(str(folder / _STATE_FILE))
    missing = sorted({"vectors", "generator_state"} - set(tensors))
    if missing:
        raise ValueError(f"{folder / _STATE_FILE} lacks the tensor(s) {missing}; delete the folder to resume")
    with torch.no_grad():
        vectors.copy_(tensors["vectors"])
    state = optimizer.state_dict()
    state["state"] = {
        0: {key.removeprefix("optimizer."): v for key, v in tensors.items() if key.startswith("optimizer.")}
    }
    optimizer.load_state_dict(state)
    generator.set_state(tensors["generator_state"])
    return saved["step"]


def _read_meta(path: Path) -> dict[str, Any]:
    """``checkpoint.json``, its fields checked; errors name the file and the field."""
    saved = read_json(path, owner="a stage-1 checkpoint", fix="delete its checkpoint folder to resume")
    for field, kind in _META_FIELDS.items():
        if not isinstance(saved.get(field), kind) or isinstance(saved.get(field), bool):
            raise ValueError(
                f"{path}: field {field!r} must be a JSON {kind.__name__}, got {saved.get(field)!r}; "
                "delete its checkpoint folder to resume from an earlier one"
            )
    return saved


def _check_resumable(folder: Path, saved: dict[str, Any], meta: dict[str, Any]) -> None:
    if saved["token_dim"] != meta["token_dim"] or saved["support_hashes"] != meta["support_hashes"]:
        raise ValueError(
            f"cannot resume from {folder}: it was learned with a different support set or text-encoder width"
        )
    changed = sorted(
        key
        for key in set(saved["config"]) | set(meta["config"])
        if key not in RESUMABLE_CHANGES and saved["config"].get(key) != meta["config"].get(key)
    )
    if changed or saved.get("resolution") != meta["resolution"]:
        raise ValueError(
            f"cannot resume from {folder}: settings {changed or ['resolution']} differ from the checkpoint's "
            f"(only {list(RESUMABLE_CHANGES)} may change)"
        )
    if saved.get("backbone") != meta["backbone"]:
        logger.warning("resuming a run of backbone %r with %r", saved.get("backbone"), meta["backbone"])
