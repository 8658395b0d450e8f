"""The anomaly bank on disk: a resumable, crash-safe writer and a torch `Dataset` reader.

Layout of a bank folder::

    bank.json                 bank-level info (format, version, created-by)
    manifest.jsonl            one JSON record per sample, appended only after the sample's files exist
    images/<id>.png           the image with the anomaly
    masks/<id>_box.png        the box mask
    masks/<id>_mask.png       the pixel mask (exact for crop-and-paste, estimated for diffusion)

Record fields: ``id``, ``image``, ``box_mask``, ``mask`` (paths relative to the bank), ``mask_exact``,
``source`` (``path``, ``hash`` of the file, ``pixel_hash`` of the 8-bit pixels as stored), ``category``,
``defect_type``, ``boxes`` (XYXY pixels of the stored image), ``width``, ``height``, ``generator``
(``name``, ``settings``), ``seed`` (of this sample's generator), ``embedding_id``, ``box_index``,
``sample_index``, ``bank_seed``, ``box_sampler`` (its settings, or null).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .atomic import write_bytes_atomic
from .images import content_hash, load_image, load_mask, quantize, save_png
from .synthesis import Synthesis

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
BANK_INFO = "bank.json"
FORMAT_VERSION = 1


# --- manifest: append-only JSON lines, a torn last line tolerated on read and repaired before writing ---------
def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``manifest.jsonl``; a torn last line (a crash mid-append) is skipped with a warning."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the append was cut short
                logger.warning("%s: ignoring a torn last line (an interrupted write)", path)
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON: {line[:80]!r}") from None
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}: line {number} is not a bank record (a JSON object with an 'id')")
        if record["id"] in seen:
            logger.warning("%s: duplicate id %s on line %d ignored", path, record["id"], number)
            continue
        seen.add(record["id"])
        records.append(record)
    return records


def _repair_manifest(path: Path) -> None:
    """Cut a torn last line (or terminate a complete one) so that appends start on a fresh line."""
    data = path.read_bytes() if path.is_file() else b""
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
        repaired = data + b"\n"
    except json.JSONDecodeError:
        logger.warning("%s: removing a torn last line (an interrupted write); it is regenerated", path)
        repaired = data[:cut]
    write_bytes_atomic(repaired, path)


class _ManifestWriter:
    """Appends records as single lines, each flushed and fsynced before the next sample starts."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / BANK_INFO).is_file():
            from . import __version__

            info = {
                "format": "anogen-aug-bank",
                "version": FORMAT_VERSION,
                "created_by": f"anogen-aug {__version__}",
            }
            write_bytes_atomic(json.dumps(info, indent=2).encode() + b"\n", root / BANK_INFO)
        _repair_manifest(root / MANIFEST)
        self.root = root
        self.records = read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else []
        self.done = {r["id"] for r in self.records}
        self._stream = open(root / MANIFEST, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def append(self, record: dict[str, Any]) -> None:
        for folder in {self.root / Path(record[key]).parent for key in ("image", "box_mask", "mask")}:
            _fsync_dir(folder)  # the renames of the sample's files are durable before the record is
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self.done.add(record["id"])

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# --- writer -----------------------------------------------------------------------------------------------
def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"`size` must be None, an int or a pair (H, W) of positive ints, got {size!r}")
    return pair


def resize_source(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a source ``(3, H, W)`` to ``size`` (bicubic, antialiased) on the 8-bit grid (as the bank stores it)."""
    if size is not None and tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    return quantize(image)


def _derive(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _seed(*parts: Any) -> int:
    return int(_derive(*parts)[:15], 16)  # < 2**60: fits torch's manual_seed and int64 columns


def _sample_id(defect_type: str, source_hash: str, box: int, sample: int, key: list) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", defect_type)[:40] or "defect"
    return f"{slug}-{source_hash[:10]}-b{box}-s{sample}-{_derive(*key, box, sample)[:8]}"


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


def _check_writer_inputs(generator, images, box_sampler, counts: dict, labels: dict) -> list[Path]:
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
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    for name, value in labels.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"`{name}` must be a non-empty string, got {value!r}")
    return [Path(p) for p in images]


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
    counts = {"boxes_per_image": boxes_per_image, "samples_per_box": samples_per_box}
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    labels = {"category": category, "defect_type": defect_type}
    paths = _check_writer_inputs(generator, images, box_sampler, counts, labels)
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
    with _ManifestWriter(job.out) as writer, tqdm(total=total, disable=not progress, desc="bank") as bar:
        _warn_on_other_settings(writer.records, job.shared)
        written = sum(_write_source(job, path, writer, bar) for path in paths)
    logger.info("bank %s: %d new samples, %d requested", job.out, written, total)
    return AnomalyBank(job.out)


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


def _write_source(job: _Job, path: Path, writer: _ManifestWriter, bar) -> int:
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
        writer.append(record)
        bar.update(1)
    return len(tasks)


def _generate(generator, image: torch.Tensor, tasks: list) -> Iterator[Synthesis]:
    """Results of ``tasks`` in order: one batched call when the generator has ``generate_batch`` (the diffusion
    generator: fewer, fuller UNet calls), else one `generate` call per task, each written before the next."""
    generators = [torch.Generator().manual_seed(task[-1]) for task in tasks]
    if len(tasks) > 1 and hasattr(generator, "generate_batch"):
        options = (
            {"progress": False}
            if "progress" in inspect.signature(generator.generate_batch).parameters
            else {}
        )
        yield from generator.generate_batch(
            [image] * len(tasks), [t[3] for t in tasks], generator=generators, **options
        )
        return
    for task, task_generator in zip(tasks, generators):
        yield generator.generate(image, task[3], generator=task_generator)


def _write_files(root: Path, sample_id: str, result: Synthesis) -> dict[str, str]:
    """Write a sample's three PNGs atomically; return their paths relative to the bank."""
    names = {
        "image": f"images/{sample_id}.png",
        "box_mask": f"masks/{sample_id}_box.png",
        "mask": f"masks/{sample_id}_mask.png",
    }
    for key, name in names.items():
        save_png(getattr(result, key).detach().cpu(), root / name)
    return names


def merge_banks(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> AnomalyBank:
    """Merge bank folders (e.g. ``out/shard-<rank>`` written by ``accelerate launch`` ranks) into ``out``.

    Files are hard-linked (copied across file systems); records already in ``out`` are skipped, so merging is
    resumable and idempotent. Each rank writes its own shard: ``write_bank(..., images[rank::world], out /
    f"shard-{rank}")``; after all ranks finish, one process calls ``merge_banks(shard_dirs, out)``.
    """
    if isinstance(shards, (str, os.PathLike)) or not isinstance(shards, Sequence):
        raise TypeError(f"`shards` must be a list of bank folders, got {type(shards).__name__}")
    out = Path(out)
    with _ManifestWriter(out) as writer:
        for shard in map(Path, shards):
            if shard.resolve() == out.resolve():
                raise ValueError(f"`shards` must not contain the output bank itself ({out})")
            for record in AnomalyBank(shard).records:
                if record["id"] in writer.done:
                    continue
                for key in ("image", "box_mask", "mask"):
                    _link_or_copy(shard / record[key], out / record[key])
                writer.append(record)
    return AnomalyBank(out)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.merge.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
    os.replace(temp, target)


# --- reader -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BankSample:
    """One bank sample.

    Attributes:
        image: ``(3, H, W)`` float in [0, 1], the image with the anomaly.
        box_mask: ``(1, H, W)`` {0, 1}. mask: ``(1, H, W)`` {0, 1}, the pixel mask (exact when ``mask_exact``).
        mask_exact: True for crop-and-paste (exact), False for diffusion (estimated).
        boxes: ``(N, 4)`` XYXY pixels.
        source_path: The clean source image's path (None if not recorded). source_hash: its file hash.
        record: The manifest record.
    """

    image: torch.Tensor
    box_mask: torch.Tensor
    mask: torch.Tensor
    mask_exact: bool
    boxes: torch.Tensor
    source_path: str | None
    source_hash: str
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return self.record["id"]


class AnomalyBank(Dataset):
    """Read a bank folder as a torch `Dataset` of `BankSample`.

    Args:
        path: The bank folder (holding ``manifest.jsonl``).
        category, defect_type: Keep only records with these values.
    """

    def __init__(
        self, path: str | os.PathLike, *, category: str | None = None, defect_type: str | None = None
    ) -> None:
        self.root = Path(path)
        if not (self.root / MANIFEST).is_file():
            raise FileNotFoundError(
                f"`path`: {self.root} is not an anomaly bank (no {MANIFEST}); write one with `write_bank` or "
                "`anogen-aug generate --out FOLDER`"
            )
        self.category, self.defect_type = category, defect_type
        every = read_manifest(self.root / MANIFEST)
        self.records = [
            r
            for r in every
            if (category is None or r.get("category") == category)
            and (defect_type is None or r.get("defect_type") == defect_type)
        ]
        if every and not self.records:
            present = sorted({f"{r.get('category')}/{r.get('defect_type')}" for r in every})
            raise ValueError(
                f"bank {self.root} holds no record with category={category!r}, defect_type={defect_type!r}; "
                f"it holds {', '.join(present)}"
            )
        info_path = self.root / BANK_INFO
        self.info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        self._by_source: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            source = record.get("source") or {}
            for key in {source.get("hash"), source.get("pixel_hash")} - {None}:
                self._by_source.setdefault(key, []).append(index)
        self._verified: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"AnomalyBank({str(self.root)!r}, n={len(self)})"

    def _record(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"bank index {index} out of range for a bank of {len(self)} samples")
        return self.records[index]

    def __getitem__(self, index: int) -> BankSample:
        record = self._record(index)
        source = record.get("source") or {}
        return BankSample(
            image=load_image(self.root / record["image"]),
            box_mask=load_mask(self.root / record["box_mask"]),
            mask=load_mask(self.root / record["mask"]),
            mask_exact=bool(record.get("mask_exact", False)),
            boxes=torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
            source_path=source.get("path"),
            source_hash=source.get("hash", ""),
            record=record,
        )

    def indices_for_source(self, hash: str) -> list[int]:  # noqa: A002 (the documented name)
        """Indices of the samples generated from a source, by its file hash or its pixel hash."""
        return list(self._by_source.get(hash, []))

    def load_source(self, index: int) -> torch.Tensor:
        """The clean source image of sample ``index``, ``(3, H, W)``, resized to the sample's size."""
        record = self._record(index)
        source = record.get("source") or {}
        path = source.get("path")
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"sample {record['id']}: its source image {path!r} is not there (moved?)")
        if path not in self._verified:
            if source.get("hash") and content_hash(path) != source["hash"]:
                raise ValueError(
                    f"sample {record['id']}: source {path} changed since the bank was written (hash)"
                )
            self._verified.add(path)
        return resize_source(load_image(path), (record["height"], record["width"]))

    def to_hf_dataset(self):
        """A Hugging Face ``datasets.Dataset`` with Image features (needs the extra ``anogen-aug[datasets]``)."""
        try:
            import datasets
        except ImportError as error:
            raise ImportError(
                "AnomalyBank.to_hf_dataset needs `datasets`: pip install 'anogen-aug[datasets]'"
            ) from error
        sequence = getattr(datasets, "List", None) or datasets.Sequence  # `List` since datasets 4
        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "image": datasets.Image(),
                "mask": datasets.Image(),
                "box_mask": datasets.Image(),
                "category": datasets.Value("string"),
                "defect_type": datasets.Value("string"),
                "boxes": sequence(sequence(datasets.Value("float32"), length=4)),
                "source_hash": datasets.Value("string"),
                "mask_exact": datasets.Value("bool"),
                "generator": datasets.Value("string"),
                "seed": datasets.Value("int64"),
                "embedding_id": datasets.Value("string"),
            }
        )
        columns: dict[str, list] = {name: [] for name in features}
        for record in self.records:
            for key in ("image", "mask", "box_mask"):
                columns[key].append(str(self.root / record[key]))
            columns["id"].append(record["id"])
            columns["category"].append(record.get("category"))
            columns["defect_type"].append(record.get("defect_type"))
            columns["boxes"].append(record["boxes"])
            columns["source_hash"].append((record.get("source") or {}).get("hash"))
            columns["mask_exact"].append(bool(record.get("mask_exact", False)))
            columns["generator"].append((record.get("generator") or {}).get("name"))
            columns["seed"].append(record.get("seed"))
            columns["embedding_id"].append(record.get("embedding_id"))
        return datasets.Dataset.from_dict(columns, features=features)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        split: str = "train",
        commit_message: str | None = None,
    ):
        """Push the bank as a dataset repo (parquet with embedded PNGs) via ``datasets``; returns the commit info."""
        message = commit_message or f"Upload anomaly bank ({len(self)} samples) with anogen-aug"
        return self.to_hf_dataset().push_to_hub(
            repo_id, split=split, private=private, token=token, revision=revision, commit_message=message
        )
