"""Convert the AnoGen authors' released per-defect embedding files into `DefectEmbedding`.

The authors ship ``DIFFUSION/logs/<category>_<defect>/embeddings.pt``: a torch zip archive (``archive/data.pkl``,
pickle protocol 2) written by torch 1.x on a CUDA machine, holding
``{"string_to_token": {"*": int64 scalar}, "string_to_param": ParameterDict({"*": Parameter (1, 1280)})}``
for the LDM-BERT backbone (``CompVis/ldm-text2im-large-256``). The ``ParameterDict`` is pickled as a torch-1.x
module ``__dict__`` (``_parameters``, hooks, ``training``...) without the ``_keys`` today's class needs, and every
storage is tagged ``cuda:0``.

A pickle can run code when loaded, so these files are read with ``torch.load(weights_only=True)``: its
unpickler admits only tensors, storages, ``Parameter``, ``OrderedDict`` and ``set``, and this module adds one
name, ``torch.nn.modules.container.ParameterDict``, mapped to `_ModuleState`, a plain holder of the pickled
state (no ``nn.Module`` is ever built). CUDA storages are mapped to the CPU. Any other global is refused with an
error naming it; ``trust_pickle=True`` (a full unpickle) remains only for files in some other format.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .embedding import DefectEmbedding
from .families import DEFAULT_BACKBONE

logger = logging.getLogger(__name__)

#: Settings the released embeddings were learned with (authors' train.sh / yaml).
OFFICIAL_SETTINGS = {"max_train_steps": 6100, "train_batch_size": 4, "learning_rate": 0.005, "scale_lr": True}
OFFICIAL_SOURCE = "AnoGen official release (github.com/gaobb/AnoGen, DIFFUSION/logs)"
PAPER = "arXiv 2505.09263"
FILE_NAME = "embeddings.pt"


class _ModuleState:
    """What a pickled ``nn.Module`` leaves behind: its ``__dict__``, kept as data (nothing is called)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


_ALLOWED = [(_ModuleState, "torch.nn.modules.container.ParameterDict")]


def read_official_vectors(path: str | os.PathLike, *, trust_pickle: bool = False) -> torch.Tensor:
    """The learned vectors ``(num_vectors, dim)`` float32 of an authors' ``embeddings.pt``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a torch archive, names a global outside the allow-list (without
            ``trust_pickle``), or is not in the authors' format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no such file {path}")
    payload = _load(path, trust_pickle=trust_pickle)
    if not isinstance(payload, dict) or "string_to_param" not in payload:
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not an AnoGen embedding file: expected a dict with 'string_to_param', got {found}"
        )
    params = _parameters(payload["string_to_param"], path)
    if "*" not in params:
        raise ValueError(f"{path}: 'string_to_param' has no '*' entry, keys: {sorted(map(str, params))}")
    vector = params["*"]
    if not isinstance(vector, torch.Tensor) or vector.ndim not in (1, 2) or not vector.is_floating_point():
        raise ValueError(f"{path}: string_to_param['*'] must be a float tensor (n, dim), got {vector!r:.80}")
    return vector.detach().float().reshape(-1, vector.shape[-1]).clone()  # (n, 1280)


def _load(path: Path, *, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused is None:
            raise ValueError(f"{path} is not a readable torch file: {str(error).splitlines()[0]}") from None
        if not trust_pickle:
            raise ValueError(
                f"{path} names the global {refused.group(1)!r}, which the AnoGen embedding format never needs; "
                "it was refused and nothing was executed. Pass trust_pickle=True (CLI: --trust-pickle) only for "
                "a file from a source you trust."
            ) from None
    except Exception as error:  # a damaged file makes torch's readers raise almost anything
        raise ValueError(f"{path} is not a readable torch file: {type(error).__name__}: {error}") from None
    logger.warning("%s: unpickling with trust_pickle=True (the file may run code)", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def _parameters(value: Any, path: Path) -> dict[str, Any]:
    """The ``{name: tensor}`` of a pickled ParameterDict (torch-1.x state or, with trust_pickle, a live one)."""
    if isinstance(value, _ModuleState):
        params = value.state.get("_parameters") if isinstance(value.state, dict) else None
    elif isinstance(value, torch.nn.ParameterDict):
        params = dict(value.named_parameters())
    else:
        params = value
    if not isinstance(params, dict):
        raise ValueError(f"{path}: 'string_to_param' is not a ParameterDict, got {type(value).__name__}")
    return dict(params)


def split_folder_name(name: str, categories: list[str] | None = None) -> tuple[str | None, str | None]:
    """``"metal_nut_color"`` -> (``"metal_nut"``, ``"color"``): the longest known category that prefixes the name.

    ``categories`` defaults to the packaged box-range table's (MVTec AD and VisA); a name no category prefixes
    is split at its first underscore; a name without one gives ``(None, None)``.
    """
    if categories is None:
        from .boxes import box_range_table

        categories = [c for c in box_range_table() if c != "default"]
    for category in sorted(categories, key=len, reverse=True):
        if name.startswith(f"{category}_") and len(name) > len(category) + 1:
            return category, name[len(category) + 1 :]
    if "_" in name:
        category, defect = name.split("_", 1)
        return category, defect
    return None, None


def convert_official(
    path: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    placeholder_token: str | None = None,
    category: str | None = None,
    defect_type: str | None = None,
) -> DefectEmbedding:
    """Read an authors' ``embeddings.pt`` into a `DefectEmbedding` for the LDM-BERT backbone.

    Args:
        path: Local path of the ``embeddings.pt`` file.
        trust_pickle: Also read files the allow-list refuses, by a full unpickle (which can run code). The
            authors' own files never need it.
        placeholder_token: Token name of the result (default ``<category-defect>``).
        category, defect_type: Default: parsed from the parent folder name (``bottle_broken_large``).

    Raises:
        FileNotFoundError, ValueError: as `read_official_vectors`.
    """
    path = Path(path)
    vectors = read_official_vectors(path, trust_pickle=trust_pickle)
    parsed_category, parsed_defect = split_folder_name(path.parent.name)
    category = category or parsed_category
    defect_type = defect_type or parsed_defect
    if placeholder_token is None:
        placeholder_token = f"<{category}-{defect_type}>" if category and defect_type else "<anogen-defect>"
    logger.info("converted %s: %s vectors of width %s", path, *vectors.shape)
    return DefectEmbedding(
        vectors,
        placeholder_token=placeholder_token,
        backbone=DEFAULT_BACKBONE,
        init_word="defect",
        category=category,
        defect_type=defect_type,
        steps=OFFICIAL_SETTINGS["max_train_steps"],
        config=dict(OFFICIAL_SETTINGS),
        source=OFFICIAL_SOURCE,
        paper=PAPER,
    )


@dataclass
class ConversionReport:
    """What `convert_official_folder` did: ``converted`` maps a folder name to its output, ``failed`` to the
    error's text."""

    converted: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)}, failed {len(self.failed)}"]
        lines += [f"  ok      {name} -> {out}" for name, out in sorted(self.converted.items())]
        lines += [f"  FAILED  {name}: {why}" for name, why in sorted(self.failed.items())]
        return "\n".join(lines)


def convert_official_folder(
    logs: str | os.PathLike,
    out: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert every ``logs/<category>_<defect>/embeddings.pt`` into ``out/<category>_<defect>/`` (Hub layout).

    Each output folder holds ``learned_embeds.safetensors``, ``config.json`` and a model card naming the source,
    the base model, the category and defect type, and the paper. A file that fails is reported in the returned
    `ConversionReport` and the others go on.
    """
    logs, out = Path(logs), Path(out)
    files = sorted(logs.glob(f"*/{FILE_NAME}")) if logs.is_dir() else []
    if not files:
        raise FileNotFoundError(f"`logs`: no <category>_<defect>/{FILE_NAME} under {logs}")
    report = ConversionReport()
    for file in tqdm(files, desc="converting", unit="embedding", disable=not progress):
        name = file.parent.name
        try:
            embedding = convert_official(file, trust_pickle=trust_pickle)
            embedding.save_pretrained(out / name)
        except (ValueError, OSError) as error:
            report.failed[name] = str(error)
            logger.warning("%s: %s", file, error)
        else:
            report.converted[name] = out / name
    return report
