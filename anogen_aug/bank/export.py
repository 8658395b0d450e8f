"""Exporting a bank to a Hugging Face ``datasets.Dataset`` (Image features) and pushing it to the Hub.

Backs `AnomalyBank.to_hf_dataset` and `AnomalyBank.push_to_hub`; needs the extra ``anogen-aug[datasets]``. Every
file is resolved inside the bank (`anogen_aug.bank.records.record_file`) before any is read, so a crafted manifest
cannot make an export or a push embed a file from elsewhere on the machine.

A push writes the layout the Hub's dataset viewer and ``datasets.load_dataset(repo_id)`` read with no loading
script and no ``configs:`` entry: ``data/<split>-NNNNN-of-NNNNN.parquet`` shards (the split is taken from the
file name; PNG bytes embedded, column types in the parquet schema) and a ``README.md`` dataset card. A local
bank folder is read with ``AnomalyBank(folder).to_hf_dataset()``, the same columns.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .records import FILE_FIELDS, record_file

if TYPE_CHECKING:
    from .reader import AnomalyBank

#: A parquet shard holds at most about this many bytes of PNGs (datasets' own default shard size).
MAX_SHARD_BYTES = 500 * 1024**2
_SPLIT = re.compile(r"^\w+(\.\w+)*$")  # datasets' rule for split names


def _datasets():
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "AnomalyBank.to_hf_dataset and push_to_hub need `datasets`: pip install 'anogen-aug[datasets]'"
        ) from error
    return datasets


def _features(datasets):
    sequence = getattr(datasets, "List", None) or datasets.Sequence  # `List` since datasets 4
    return datasets.Features(
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


def _checked_files(bank: AnomalyBank) -> list[dict[str, Path]]:
    """Every record's files, resolved inside the bank: a bad path refuses the export before a byte is read."""
    return [{key: record_file(bank.root, record, key) for key in FILE_FIELDS} for record in bank.records]


def _columns(datasets, records: list[dict], files: list[dict[str, Path]], *, embed: bool) -> dict[str, list]:
    """The dataset's columns; images as file paths, or (``embed``) as their bytes with the in-bank path."""
    columns: dict[str, list] = {name: [] for name in _features(datasets)}
    for record, paths in zip(records, files):
        for key in FILE_FIELDS:
            path = paths[key]
            columns[key].append({"bytes": path.read_bytes(), "path": record[key]} if embed else str(path))
        columns["id"].append(record["id"])
        columns["category"].append(record.get("category"))
        columns["defect_type"].append(record.get("defect_type"))
        columns["boxes"].append(record["boxes"])
        columns["source_hash"].append((record.get("source") or {}).get("hash"))
        columns["mask_exact"].append(bool(record.get("mask_exact", False)))
        columns["generator"].append((record.get("generator") or {}).get("name"))
        columns["seed"].append(record.get("seed"))
        columns["embedding_id"].append(record.get("embedding_id"))
    return columns


def to_hf_dataset(bank: AnomalyBank):
    """``bank`` as a ``datasets.Dataset``: one row per record, the PNGs as Image features."""
    datasets = _datasets()
    files = _checked_files(bank)
    return datasets.Dataset.from_dict(
        _columns(datasets, bank.records, files, embed=False), features=_features(datasets)
    )


def write_hub_folder(bank: AnomalyBank, folder: str | Path, *, split: str = "train") -> Path:
    """Write what `push_to_hub` uploads into ``folder``: ``data/<split>-*.parquet`` and ``README.md``.

    ``datasets.load_dataset(str(folder))`` reads it back with the columns of `to_hf_dataset`.
    """
    datasets = _datasets()
    if not isinstance(split, str) or not _SPLIT.match(split):
        raise ValueError(f"`split` must be a name of letters, digits and '_' (e.g. 'train'), got {split!r}")
    folder, files = Path(folder), _checked_files(bank)
    total = sum(path.stat().st_size for paths in files for path in paths.values())
    count = max(1, math.ceil(total / MAX_SHARD_BYTES))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    step = math.ceil(len(files) / count) if files else 1
    for index in range(count):
        rows = slice(index * step, (index + 1) * step)
        columns = _columns(datasets, bank.records[rows], files[rows], embed=True)
        shard = datasets.Dataset.from_dict(columns, features=_features(datasets))
        shard.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{count:05d}.parquet"))
    (folder / "README.md").write_text(_card(bank), encoding="utf-8")
    return folder


def push_to_hub(
    bank: AnomalyBank, repo_id: str, *, private, token, revision, split: str, commit_message: str
):
    """`write_hub_folder` into a temp folder, then one commit to the dataset repo ``repo_id`` (created if new);
    the split's earlier shards are deleted in the same commit."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="anogen-aug-push-") as folder:
        write_hub_folder(bank, folder, split=split)
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message,
            delete_patterns=[f"data/{split}-*"],
        )


def _card(bank: AnomalyBank) -> str:
    groups = sorted({f"{r.get('category')}/{r.get('defect_type')}" for r in bank.records})
    generators = sorted({str((r.get("generator") or {}).get("name")) for r in bank.records})
    return (
        "---\ntags:\n- anomaly-detection\n- synthetic\n- anogen-aug\ntask_categories:\n- image-segmentation\n---\n\n"
        f"# Anomaly bank\n\n{len(bank)} synthetic anomalies ({', '.join(groups) or 'empty'}) made by "
        f"{', '.join(generators) or 'no generator'} with anogen-aug (`AnomalyBank.push_to_hub`).\n\n"
        "Columns: `image` (the image with the anomaly), `mask` (its pixel mask), `box_mask` (the boxes it was "
        "generated in), `boxes` (XYXY pixels), `category`, `defect_type`, `mask_exact` (true for crop-and-paste), "
        "`generator`, `seed`, `embedding_id`, `source_hash`, `id`.\n\n"
        '```python\nfrom datasets import load_dataset\n\nbank = load_dataset(REPO_ID, split="train")\n```\n'
    )
