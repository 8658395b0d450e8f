"""Convert the AnoGen authors' released per-defect embedding files into `DefectEmbedding`.

The authors ship ``DIFFUSION/logs/<category>_<defect>/embeddings.pt``: a ``torch.save``-pickled dict
``{"string_to_token": {"*": LongTensor}, "string_to_param": ParameterDict({"*": Parameter[1, 1280]})}`` for the
LDM-BERT backbone (``CompVis/ldm-text2im-large-256``). Unpickling can run arbitrary code, so it happens only
with the explicit opt-in ``trust_pickle=True``, and only for a local file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .embedding import DefectEmbedding
from .families import DEFAULT_BACKBONE

logger = logging.getLogger(__name__)

#: Settings the released embeddings were learned with (authors' train.sh / yaml).
OFFICIAL_SETTINGS = {"max_train_steps": 6100, "train_batch_size": 4, "learning_rate": 0.005, "scale_lr": True}


def _split_folder_name(name: str) -> tuple[str | None, str | None]:
    """``"bottle_broken_large"`` -> (``"bottle"``, ``"broken_large"``); MVTec category names hold no "_" except
    ``metal_nut``."""
    if name.startswith("metal_nut_"):
        return "metal_nut", name[len("metal_nut_") :]
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
        trust_pickle: Must be True: the file is a pickle, which can execute code when loaded.
        placeholder_token: Token name of the result (default ``<category-defect>``).
        category, defect_type: Default: parsed from the parent folder name (``bottle_broken_large``).

    Raises:
        PermissionError: without ``trust_pickle=True``.
        ValueError: when the file is not in the authors' format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no such file {path}")
    if not trust_pickle:
        raise PermissionError(
            f"{path} is a pickle file, and unpickling can execute arbitrary code. Pass trust_pickle=True "
            "(CLI: --trust-pickle) only for files from a source you trust, such as the authors' AnoGen repository."
        )
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "string_to_param" not in payload:
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not an AnoGen embedding file: expected a dict with 'string_to_param', got {found}"
        )
    params = payload["string_to_param"]
    if "*" not in params:
        raise ValueError(f"{path}: 'string_to_param' has no '*' entry, keys: {sorted(params.keys())}")
    vectors = torch.as_tensor(params["*"].detach()).float().reshape(-1, params["*"].shape[-1])  # (n, 1280)
    parsed_category, parsed_defect = _split_folder_name(path.parent.name)
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
        source="AnoGen official release (github.com/gaobb/AnoGen)",
    )
