"""A bank record's fields, checked as read: the one place that says what a usable record is.

A manifest may come from anywhere (a bank shared, downloaded, edited by hand), so a record is checked before it
is used: the fields the library reads are present and of the right type, and the file paths stay inside the
bank (`anogen_aug.paths`: relative, normalised, symlinks followed only within the bank). ``source.path`` is
the one path that points outside by design (the clean source image, on the machine that wrote the bank): it is
read only by `AnomalyBank.load_source`, and only when the file's hash equals ``source.hash``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checks import is_int, is_number
from ..paths import path_problem, resolve_inside

FILE_FIELDS = ("image", "box_mask", "mask")  # the record fields naming a sample's files
#: The fields every record must hold (the others are read with defaults).
REQUIRED_FIELDS = ("id", *FILE_FIELDS, "boxes", "width", "height")


def record_problem(record: Any) -> tuple[str, str] | None:
    """The first bad field of ``record`` and what is wrong with it, or None when the record is usable.

    A lexical check only (nothing is read from disk): `record_file` adds the symlink rule when a file is used.
    """
    if not isinstance(record, dict):
        return "id", f"is missing: the line is a JSON {type(record).__name__}, not a record (an object)"
    for field in REQUIRED_FIELDS:
        if field not in record:
            return field, "is missing"
    if not isinstance(record["id"], str) or not record["id"].strip():
        return "id", f"must be a non-empty string, got {record['id']!r}"
    for field in FILE_FIELDS:
        problem = path_problem(record[field])
        if problem is not None:
            return field, problem
    for field in ("width", "height"):
        if not is_int(record[field], 1):
            return field, f"must be a positive integer, got {record[field]!r}"
    boxes = record["boxes"]
    if not isinstance(boxes, list) or not all(
        isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box) for box in boxes
    ):
        return "boxes", f"must be a list of [x0, y0, x1, y1] number lists, got {str(boxes)[:80]}"
    return None


def describe(record: Any, field: str, line: int | None = None) -> str:
    """``"line 3, record 'abc', field 'image'"``: how errors name the culprit (callers add the file)."""
    where = f"line {line}, " if line is not None else ""
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"{where}record {record_id!r}, field {field!r}"


def record_file(root: str | os.PathLike, record: dict[str, Any], field: str) -> Path:
    """The file ``record[field]`` names, resolved inside the bank ``root`` (`anogen_aug.paths`) or refused.

    Raises:
        ValueError: The path is absolute, not normalised, or leads out of the bank (naming record and field).
    """
    name = f"{Path(root) / 'manifest.jsonl'}: {describe(record, field)}"
    return resolve_inside(root, record[field], name=name)


def repair_hint(root: str | os.PathLike) -> str:
    """What to do about a broken record, appended to every record error."""
    return f"drop broken records with `anogen-aug verify {root} --repair`, or regenerate the bank"
