"""The bank's on-disk format: its layout, the record fields, the append-only manifest and ``bank.json``.

Layout of a bank folder::

    bank.json                 bank-level info (format, version, created-by)
    manifest.jsonl            one JSON record per sample, appended only after the sample's files exist
    images/<id>.png           the image with the anomaly
    masks/<id>_box.png        the box mask
    masks/<id>_mask.png       the pixel mask (exact for crop-and-paste, estimated for diffusion)

Record fields: ``id``, ``image``, ``box_mask``, ``mask`` (paths relative to the bank), ``mask_exact``,
``source`` (``path``, ``hash`` of the file, ``pixel_hash`` of the 8-bit pixels as stored, see `resize_source`),
``category``, ``defect_type``, ``boxes`` (XYXY pixels of the stored image), ``width``, ``height``, ``generator``
(``name``, ``settings``), ``seed`` (of this sample's generator), ``embedding_id``, ``box_index``,
``sample_index``, ``bank_seed``, ``box_sampler`` (its settings, or null).

The manifest is append-only JSON lines: a crash mid-append leaves at worst a torn last line, which the reader
skips and the next writer cuts (`repair_manifest`) before it appends.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import fsync_dir, write_bytes_atomic
from ..images import quantize, resize_image

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
BANK_INFO = "bank.json"
FORMAT_VERSION = 1
FILE_FIELDS = ("image", "box_mask", "mask")  # the record fields naming a sample's files


def resize_source(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize a source ``(3, H, W)`` to ``size`` (bicubic, antialiased) on the 8-bit grid (as the bank stores it)."""
    if size is not None:
        image = resize_image(image, size, mode="bicubic")
    return quantize(image)


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``manifest.jsonl``; a torn last line (a crash mid-append) is skipped with a warning."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
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


def repair_manifest(path: str | os.PathLike) -> None:
    """Cut a torn last line (or terminate a complete one) so that appends start on a fresh line."""
    path = Path(path)
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


def read_bank_info(root: str | os.PathLike) -> dict[str, Any]:
    """The ``bank.json`` of a bank folder (``{}`` when it has none)."""
    path = Path(root) / BANK_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_bank_info(root: Path) -> None:
    from .. import __version__

    info = {"format": "anogen-aug-bank", "version": FORMAT_VERSION, "created_by": f"anogen-aug {__version__}"}
    write_bytes_atomic(json.dumps(info, indent=2).encode() + b"\n", root / BANK_INFO)


class ManifestWriter:
    """Opens a bank folder for appending: ``bank.json`` written once, a torn last line repaired, the records
    already there read (``records``, ``done`` ids); then appends records as single lines, each fsynced.

    Used as a context manager by `write_bank` and `merge_banks`.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / BANK_INFO).is_file():
            _write_bank_info(root)
        repair_manifest(root / MANIFEST)
        self.root = root
        self.records = read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else []
        self.done = {r["id"] for r in self.records}
        self._stream = open(root / MANIFEST, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record``, whose files must already be written (their folders are fsynced first)."""
        for folder in {self.root / Path(record[key]).parent for key in FILE_FIELDS}:
            fsync_dir(folder)  # the renames of the sample's files are durable before the record is
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self.done.add(record["id"])

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
