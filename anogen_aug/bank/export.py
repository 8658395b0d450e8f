"""Exporting a bank to a Hugging Face ``datasets.Dataset`` (Image features) and pushing it to the Hub.

Backs `AnomalyBank.to_hf_dataset` and `AnomalyBank.push_to_hub`; needs the extra ``anogen-aug[datasets]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reader import AnomalyBank


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


def to_hf_dataset(bank: AnomalyBank):
    """``bank`` as a ``datasets.Dataset``: one row per record, the PNGs as Image features."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "AnomalyBank.to_hf_dataset needs `datasets`: pip install 'anogen-aug[datasets]'"
        ) from error
    features = _features(datasets)
    columns: dict[str, list] = {name: [] for name in features}
    for record in bank.records:
        for key in ("image", "mask", "box_mask"):
            columns[key].append(str(bank.root / record[key]))
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
