"""Writing a bank: `write_bank` generates anomalies on normal images into a bank folder, resumably and crash-safely.

Ids and seeds derive from (the bank seed, the source file's hash, the defect type, box index, sample index), so a
re-run skips what exists and regenerates a missing sample with the same bytes. A sample's files are written
atomically before its record is appended (never the reverse), so a crash never leaves a record without files.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checks import check_int, check_str, is_int
from ..images import content_hash, load_image, save_png
from ..synthesis import Synthesis
from ..visibility import mask_visibility
from .manifest import ManifestWriter, resize_source
from .reader import AnomalyBank
from .records import FILE_FIELDS

logger = logging.getLogger(__name__)


def write_bank(
    generator,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    category: str,
    defect_type: str,
    box_sampler,
    boxes_per_image: int = 2,
    samples_per_box: int = 2,
    seed: int = 0,
    embedding_id: str | None = None,
    size: int | tuple[int, int] | None = None,
    progress: bool = True,
) -> AnomalyBank:
    """Generate anomalies on normal images into a bank folder (resumable, crash-safe).

    For every source image, ``boxes_per_image`` boxes are sampled (one box per set) and ``samples_per_box``
    anomalies generated in each. Ids and seeds derive from (``seed``, the source file's hash, the defect type, box
    index, sample index), so a re-run skips the ids already in the manifest and regenerates a missing one with
    the same bytes. Every random draw uses CPU generators, independent of the generator's device. A generator
    with ``generate_batch`` (the diffusion generator) gets one batched call per source image; on a GPU a
    regenerated sample can then differ from the first run in the last bit where the batch composition differs.

    Records also hold ``mask_area`` and ``contrast`` (`anogen_aug.visibility.mask_visibility`: mask pixels, mean
    8-bit change inside the mask), for any generator; older banks lack them (optional for readers).

    Scale-out: run one process per rank with ``images[rank::world]`` and ``out / f"shard-{rank}"`` (e.g. under
    ``accelerate launch``), then `merge_banks` the shards.

    Args:
        generator: `AnomalyGenerator`, `CopyPasteGenerator` or any `AnomalyGeneratorProtocol`; its class
            attribute ``mask_exact`` (default False) is stored in the records.
        images: Paths of normal images.
        out: The bank folder (created; may already hold a bank, which is extended).
        category, defect_type: Stored in every record (``defect_type`` also names the ids).
        box_sampler: A `BoxSampler` (``sample(image, 1, generator=...) -> (1, 4)``).
        boxes_per_image, samples_per_box: The paper's 2 x 2.
        seed: Base seed.
        embedding_id: The defect embedding's id (diffusion), stored in the records.
        size: Resize sources first (bicubic): an int (square) or ``(H, W)``; stored boxes refer to this size.
        progress: Show a tqdm bar.

    Returns:
        The whole bank at ``out`` (all records, not only this call's).
    """
    # 1. Check inputs; what every record of this call shares.
    if not is_int(seed):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    paths = _check_writer_inputs(generator, images, box_sampler)
    check_int(boxes_per_image, "boxes_per_image")
    check_int(samples_per_box, "samples_per_box")
    check_str(category, "category")
    check_str(defect_type, "defect_type")
    job = _Job(
        generator=generator, box_sampler=box_sampler, out=Path(out), seed=seed, size=_check_size(size),
        shape=(boxes_per_image, samples_per_box), shared={
            "mask_exact": bool(getattr(generator, "mask_exact", False)), "category": category,
            "defect_type": defect_type, "generator": _json({"name": generator.name, "settings": generator.settings()}),
            "embedding_id": embedding_id, "bank_seed": seed,
            "box_sampler": box_sampler.to_dict() if hasattr(box_sampler, "to_dict") else None,
        },
    )  # fmt: skip
    # 2. Open the bank (bank.json, torn-line repair, the ids already there); write source by source.
    total = len(paths) * boxes_per_image * samples_per_box
    with ManifestWriter(job.out) as writer, tqdm(total=total, disable=not progress, desc="bank") as bar:
        _warn_on_other_settings(writer.records, job.shared)
        written = sum(_write_source(job, path, writer, bar) for path in paths)
    logger.info("bank %s: %d new samples, %d requested", job.out, written, total)
    return AnomalyBank(job.out)


@dataclass(frozen=True)
class _Job:
    """What `write_bank` passes to `_write_source`."""

    generator: Any
    box_sampler: Any
    out: Path
    seed: int
    size: tuple[int, int] | None
    shape: tuple[int, int]  # (boxes_per_image, samples_per_box)
    shared: dict[str, Any]  # record fields common to the call


def _write_source(job: _Job, path: Path, writer: ManifestWriter, bar) -> int:
    """Write the missing samples of one source image; return how many were written."""
    # 3. Ids name (seed, source, defect, size, generator, embedding, box, sample): known before loading anything.
    defect_type, source_hash = job.shared["defect_type"], content_hash(path)
    key = [job.seed, source_hash, job.shared["category"], defect_type, list(job.size or ())]
    key += [job.generator.name, job.shared["embedding_id"]]
    boxes_per_image, samples_per_box = job.shape
    ids = [
        [_sample_id(defect_type, source_hash, b, s, key) for s in range(samples_per_box)]
        for b in range(boxes_per_image)
    ]
    bar.update(sum(i in writer.done for box_ids in ids for i in box_ids))
    if all(i in writer.done for box_ids in ids for i in box_ids):
        return 0
    image = resize_source(load_image(path, name=str(path)), job.size)  # (3, H, W) as stored
    source = {"path": str(path.resolve()), "hash": source_hash, "pixel_hash": content_hash(image)}
    # 4. Boxes depend on (seed, source, defect, box index) only: every generator gets the same boxes.
    tasks = []  # (id, box index, sample index, boxes (1, 4), seed) of the missing samples
    for box_index, box_ids in enumerate(ids):
        if all(i in writer.done for i in box_ids):
            continue
        box_seed = _seed(job.seed, source_hash, defect_type, box_index)
        boxes = job.box_sampler.sample(image, 1, generator=torch.Generator().manual_seed(box_seed))
        for sample_index, sample_id in enumerate(box_ids):
            if sample_id not in writer.done:
                seed = _seed(job.seed, source_hash, defect_type, box_index, sample_index)
                tasks.append((sample_id, box_index, sample_index, boxes, seed))
    # 5. Generate, write the files atomically, then append the record (never the reverse).
    for (sample_id, box_index, sample_index, _, seed), result in zip(
        tasks, _generate(job.generator, image, tasks)
    ):
        result = _check_synthesis(result, *image.shape[-2:])
        record = {"id": sample_id, **_write_files(job.out, sample_id, result), **job.shared, "source": source}
        record |= {"boxes": result.boxes.detach().cpu().reshape(-1, 4).tolist(), "seed": seed}
        record |= {"width": image.shape[-1], "height": image.shape[-2]}
        record |= {"box_index": box_index, "sample_index": sample_index}
        area, contrast = mask_visibility(image, result.image, result.mask)  # what a detector can see
        record |= {"mask_area": area, "contrast": contrast}
        writer.append(record)
        bar.update(1)
    return len(tasks)


def _generate(generator, image: torch.Tensor, tasks: list) -> Iterator[Synthesis]:
    """Results of ``tasks`` in order: one batched call when the generator has ``generate_batch`` (the diffusion
    generator: fewer, fuller UNet calls), else one `generate` call per task, each written before the next."""
    generators = [torch.Generator().manual_seed(task[-1]) for task in tasks]
    if len(tasks) > 1 and hasattr(generator, "generate_batch"):
        accepts_progress = "progress" in inspect.signature(generator.generate_batch).parameters
        options = {"progress": False} if accepts_progress else {}
        yield from generator.generate_batch(
            [image] * len(tasks), [t[3] for t in tasks], generator=generators, **options
        )
        return
    for task, task_generator in zip(tasks, generators):
        yield generator.generate(image, task[3], generator=task_generator)


def _write_files(root: Path, sample_id: str, result: Synthesis) -> dict[str, str]:
    """Write a sample's three PNGs atomically; return their paths relative to the bank (keys `FILE_FIELDS`)."""
    names = {
        "image": f"images/{sample_id}.png",
        "box_mask": f"masks/{sample_id}_box.png",
        "mask": f"masks/{sample_id}_mask.png",
    }
    for key in FILE_FIELDS:
        save_png(getattr(result, key).detach().cpu(), root / names[key])
    return names


# --- ids and seeds ------------------------------------------------------------------------------------------
def _derive(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _seed(*parts: Any) -> int:
    return int(_derive(*parts)[:15], 16)  # < 2**60: fits torch's manual_seed and int64 columns


def _sample_id(defect_type: str, source_hash: str, box: int, sample: int, key: list) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", defect_type)[:40] or "defect"
    return f"{slug}-{source_hash[:10]}-b{box}-s{sample}-{_derive(*key, box, sample)[:8]}"


# --- checks -------------------------------------------------------------------------------------------------
def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(is_int(v, 1) for v in pair):
        raise ValueError(f"`size` must be None, an int or a pair (H, W) of positive ints, got {size!r}")
    return pair


def _check_writer_inputs(generator, images, box_sampler) -> list[Path]:
    if not (hasattr(generator, "generate") and hasattr(generator, "settings") and hasattr(generator, "name")):
        raise TypeError(
            f"`generator` must have name, generate() and settings(), got {type(generator).__name__}"
        )
    if not hasattr(box_sampler, "sample"):
        raise TypeError(
            f"`box_sampler` must have a sample() method (a BoxSampler), got {type(box_sampler).__name__}"
        )
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        raise TypeError(f"`images` must be a list of image paths, got {type(images).__name__}")
    if not images or not all(isinstance(p, (str, os.PathLike)) for p in images):
        raise ValueError("`images` must be a non-empty list of image file paths")
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"`images`: no such file(s): {', '.join(missing[:5])}")
    return [Path(p) for p in images]


def _check_synthesis(result, height: int, width: int) -> Synthesis:
    if not isinstance(result, Synthesis):
        raise TypeError(f"generator.generate must return a Synthesis, got {type(result).__name__}")
    if tuple(result.image.shape) != (3, height, width) or tuple(result.mask.shape) != (1, height, width):
        raise ValueError(
            f"generator.generate returned image {tuple(result.image.shape)} / mask {tuple(result.mask.shape)} "
            f"for a {width}x{height} source; expected (3, {height}, {width}) / (1, {height}, {width})"
        )
    return result


def _json(value: Any) -> Any:
    """``value`` as it reads back from the manifest (tuples become lists); refuses what JSON cannot hold."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"generator.settings() must be JSON-able: {error}") from error


def _warn_on_other_settings(records: list[dict[str, Any]], shared: dict[str, Any]) -> None:
    """Ids do not encode generator settings: say so when a re-run's settings differ from the bank's."""
    name = shared["generator"]["name"]
    for record in records:
        same_kind = (
            record.get("generator", {}).get("name") == name
            and record.get("defect_type") == shared["defect_type"]
        )
        if same_kind and record.get("generator") != shared["generator"]:
            logger.warning(
                "the bank already holds %s samples of %r made with other %s settings; existing ids are kept, "
                "not regenerated (write to a new folder to compare settings)", name, shared["defect_type"], name
            )  # fmt: skip
            return
