"""Contact sheets: a grid of source | result with its boxes | mask overlay, to look at what a generator made.

Layout: an optional title strip, a header strip naming the columns, then one row of square cells per item. Each
image is scaled to fit its cell (aspect kept, top-left aligned); a row's label is written over the top of its first cell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from .bank import AnomalyBank
from .checks import check_int, check_number
from .images import load_image, load_mask, save_png, to_pil
from .visibility import mask_visibility

COLUMNS = ("source", "result", "mask", "box_mask")
STRIP = 16  # height of the title and header strips, pixels
BOX_COLOUR = (255, 0, 0)
MASK_COLOUR = torch.tensor([1.0, 1.0, 0.0])[:, None, None]  # yellow: never confused with the red boxes
BOX_MASK_COLOUR = torch.tensor([0.0, 1.0, 1.0])[:, None, None]
EMPTY_COLOUR = (64, 64, 64)


def _row_fields(row) -> dict[str, Any]:
    """A row as a dict: a mapping (keys ``source``, ``result``, ``mask``, ``box_mask``, ``boxes``, ``label``) or
    a tuple ``(source, result, mask, boxes[, label])``."""
    if isinstance(row, Mapping):
        fields = dict(row)
    elif isinstance(row, Sequence) and 4 <= len(row) <= 5:
        fields = dict(zip(("source", "result", "mask", "boxes", "label"), row))
    else:
        raise TypeError(
            "each row must be a mapping with keys source/result/mask/box_mask/boxes/label or a tuple "
            f"(source, result, mask, boxes[, label]), got {type(row).__name__}"
        )
    unknown = set(fields) - {*COLUMNS, "boxes", "label"}
    if unknown:
        raise ValueError(f"row has unknown keys {sorted(unknown)}; expected {(*COLUMNS, 'boxes', 'label')}")
    return fields


def _overlay(base: torch.Tensor | None, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """``mask`` ``(1, H, W)`` painted in ``colour`` at 60 % over a darkened ``base`` ``(3, H, W)`` (or black)."""
    base = torch.zeros(3, *mask.shape[-2:]) if base is None or base.shape[-2:] != mask.shape[-2:] else base
    return base * 0.4 * (1 - mask) + (base * 0.4 + colour * 0.6) * mask


def _cell(fields: dict[str, Any], column: str, cell: int) -> tuple[Image.Image | None, float]:
    """The picture of one cell, scaled to fit, and the scale factor (None when the row lacks it)."""
    result = None if fields.get("result") is None else load_image(fields["result"], name="result")
    if column in ("source", "result"):
        picture = None if fields.get(column) is None else load_image(fields[column], name=column)
    elif fields.get(column) is None:
        picture = None
    else:
        colour = MASK_COLOUR if column == "mask" else BOX_MASK_COLOUR
        picture = _overlay(result, load_mask(fields[column], name=column), colour)
    if picture is None:
        return None, 1.0
    height, width = picture.shape[-2:]
    scale = cell / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR  # crisp when enlarged
    return to_pil(picture).resize(size, resample), scale


def contact_sheet(
    rows: Sequence,
    *,
    out: str | os.PathLike | None = None,
    columns: Sequence[str] = ("source", "result", "mask"),
    cell: int = 160,
    title: str | None = None,
) -> Image.Image:
    """Draw a grid, one row per item: the source, the result with its boxes in red, the mask overlay.

    Args:
        rows: Mappings with keys ``source``, ``result`` (images ``(3, H, W)`` or anything `load_image` reads),
            ``mask``, ``box_mask`` (``(1, H, W)``), ``boxes`` (``(N, 4)`` XYXY pixels of ``result``), ``label``
            (str); or tuples ``(source, result, mask, boxes[, label])``. Missing items draw a grey cell.
        out: Save the sheet there as PNG (atomically).
        columns: Which columns, from ``("source", "result", "mask", "box_mask")``.
        cell: Cell side in pixels.
        title: Text of a title strip on top.

    Returns:
        An RGB image of ``len(columns) * cell`` x ``(1 + bool(title)) * STRIP + len(rows) * cell`` pixels.
    """
    rows = [_row_fields(row) for row in rows]
    columns = tuple(columns)
    if not rows:
        raise ValueError("`rows` must hold at least one row, got none")
    if not columns or any(c not in COLUMNS for c in columns):
        raise ValueError(f"`columns` must be a non-empty selection of {COLUMNS}, got {columns!r}")
    check_int(cell, "cell", low=8)
    top = STRIP * (2 if title else 1)
    sheet = Image.new("RGB", (len(columns) * cell, top + len(rows) * cell), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill=(255, 255, 255))
    for c, column in enumerate(columns):
        draw.text((c * cell + 4, top - STRIP + 2), column, fill=(200, 200, 200))
    for r, fields in enumerate(rows):
        y = top + r * cell
        for c, column in enumerate(columns):
            x = c * cell
            picture, scale = _cell(fields, column, cell)
            if picture is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=EMPTY_COLOUR)
                continue
            sheet.paste(picture, (x, y))
            if column == "result" and fields.get("boxes") is not None:
                for x0, y0, x1, y1 in (
                    torch.as_tensor(fields["boxes"], dtype=torch.float32).reshape(-1, 4).tolist()
                ):
                    corners = [x + x0 * scale, y + y0 * scale, x + x1 * scale - 1, y + y1 * scale - 1]
                    draw.rectangle(corners, outline=BOX_COLOUR, width=2)
        if fields.get("label"):
            text = str(fields["label"])[: (cell - 6) // 6]  # the default font is ~6 px wide: stay in cell 1
            draw.rectangle([0, y, 6 * len(text) + 5, y + 11], fill=(0, 0, 0))
            draw.text((3, y), text, fill=(255, 255, 255))
    if out is not None:
        save_png(sheet, out)
    return sheet


SORT_KEYS = ("mask_area", "contrast")


def bank_visibility(bank: AnomalyBank, index: int) -> tuple[int, float | None]:
    """``(mask_area, contrast)`` of sample ``index``: the record's fields, or (a bank written before they were
    recorded) measured from its files with `anogen_aug.visibility.mask_visibility`; contrast is None when the
    source image is gone."""
    record = bank.records[index]
    if "mask_area" in record and "contrast" in record:
        return int(record["mask_area"]), float(record["contrast"])
    sample = bank[index]
    try:
        source = bank.load_source(index)
    except (FileNotFoundError, ValueError):
        return int(sample.mask.bool().sum()), None
    return mask_visibility(source, sample.image, sample.mask)


def select_samples(
    bank: AnomalyBank, *, max_rows: int, sort: str | None = None, min_area: int = 0, min_contrast: float = 0.0
) -> list[int]:
    """Indices of the samples to show: those with ``mask_area >= min_area`` and ``contrast >= min_contrast``
    (a sample of unknown contrast passes only when ``min_contrast`` is 0); sorted by ``sort`` (ascending: the
    least visible first) and the first ``max_rows`` taken, or, unsorted, ``max_rows`` spread evenly."""
    if sort is not None and sort not in SORT_KEYS:
        raise ValueError(f"`sort` must be None or one of {SORT_KEYS}, got {sort!r}")
    check_int(max_rows, "max_rows")
    check_int(min_area, "min_area", low=0)
    min_contrast = check_number(min_contrast, "min_contrast", low=0.0)
    indices = list(range(len(bank)))
    if sort is not None or min_area > 0 or min_contrast > 0:
        seen = {index: bank_visibility(bank, index) for index in indices}
        indices = [
            i for i in indices
            if seen[i][0] >= min_area and (min_contrast == 0 or (seen[i][1] or 0.0) >= min_contrast)
        ]  # fmt: skip
        if sort is not None:
            column = SORT_KEYS.index(sort)
            indices.sort(key=lambda i: (seen[i][column] is None, seen[i][column] or 0.0, i))
            return indices[:max_rows]
    if len(indices) <= max_rows:
        return indices
    spread = torch.linspace(0, len(indices) - 1, max_rows).round().long().unique().tolist()
    return [indices[i] for i in spread]


def bank_contact_sheet(
    bank: AnomalyBank | str | os.PathLike,
    *,
    out: str | os.PathLike,
    max_rows: int = 16,
    cell: int = 160,
    sort: str | None = None,
    min_area: int = 0,
    min_contrast: float = 0.0,
) -> Path:
    """Contact sheet of up to ``max_rows`` samples of a bank (`AnomalyBank.open`: a bank or its folder); a PNG.

    Which samples: `select_samples` (``sort`` by ``"mask_area"`` or ``"contrast"``, least visible first;
    ``min_area`` / ``min_contrast`` filters; by default spread evenly over the bank). Each row's label gives the
    sample's mask area and contrast. Used by ``anogen-aug show``. A sample whose source image is gone gets a grey
    cell.
    """
    bank = AnomalyBank.open(bank)
    if len(bank) == 0:
        raise ValueError(f"bank {bank.root} holds no samples")
    indices = select_samples(bank, max_rows=max_rows, sort=sort, min_area=min_area, min_contrast=min_contrast)
    if not indices:
        raise ValueError(
            f"no sample of bank {bank.root} has mask_area >= {min_area} and contrast >= {min_contrast}"
        )
    rows = []
    for index in indices:
        sample = bank[index]
        try:
            source = bank.load_source(index)
        except (FileNotFoundError, ValueError):
            source = None
        record = sample.record
        label = f"#{index} {record.get('generator', {}).get('name', '?')} {record.get('defect_type')}"
        if "mask_area" in record and "contrast" in record:
            label += f" a{record['mask_area']} c{float(record['contrast']):.0f}"
        rows.append(
            {
                "source": source,
                "result": sample.image,
                "mask": sample.mask,
                "boxes": sample.boxes,
                "label": label,
            }
        )
    title = f"{bank.root.name}: {len(bank)} samples (source | result + box | mask)"
    contact_sheet(rows, out=out, cell=cell, title=title)
    return Path(out)
