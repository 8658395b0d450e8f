"""Reading a model's files from a local folder or the Hugging Face Hub, with errors that name the culprit.

The embedding and the backbone both read a JSON config and weights from "a folder or a Hub repo id". What goes
wrong there (an unknown id, no network and nothing cached, a corrupt ``config.json``, a pickle renamed
``.safetensors``) is turned into one ``FileNotFoundError`` or ``ValueError`` that names the id or the file and
says what to do, instead of the hub's or the parser's generic text. No diffusers here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

_OFFLINE_HINT = (
    "nothing is cached and the Hub cannot be reached (offline, HF_HUB_OFFLINE=1 or no network): check the id, "
    "download it once with network access (`hf download {repo_id}`), or pass a local folder"
)


@contextlib.contextmanager
def hub_errors(repo_id: str, *, name: str, revision: str | None = None) -> Iterator[None]:
    """Within the block, the hub's download errors become one error naming ``repo_id`` (argument ``name``).

    Raises:
        FileNotFoundError: Unknown, gated or private repo; unknown revision; a file the repo lacks; offline and
            not cached.
        ValueError: ``repo_id`` is neither a local folder nor a valid Hub id.
        OSError: Any other failure of the Hub (HTTP errors), with the id.
    """
    where = f"`{name}` {repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        yield
    except GatedRepoError as error:
        raise FileNotFoundError(
            f"{where}: a gated Hub repo; accept its terms on the Hub and log in (`hf auth login`) or pass `token`"
        ) from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"{where}: no such local folder, and no Hub repo of that id (or it is private: log in with "
            "`hf auth login` or pass `token`)"
        ) from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(
            f"{where}: the Hub repo has no such revision (branch, tag or commit)"
        ) from error
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(f"{where}: {_OFFLINE_HINT.format(repo_id=repo_id)}") from error
    except EntryNotFoundError as error:
        raise FileNotFoundError(f"{where}: the Hub repo lacks a file this needs: {error}") from error
    except HFValidationError as error:
        raise ValueError(
            f"{where} is neither an existing local folder nor a valid Hub repo id ('namespace/name'): {error}"
        ) from error
    except HfHubHTTPError as error:
        raise OSError(f"{where}: the Hugging Face Hub failed: {error}") from error


def read_json(
    path: str | os.PathLike, *, owner: str, fix: str = "restore it or write it again (save_pretrained)"
) -> dict[str, Any]:
    """The JSON object in ``path`` (a file of ``owner``), or ``ValueError`` naming the file, the owner and ``fix``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} (of {owner}) is not valid JSON ({error}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} (of {owner}) must hold a JSON object, got {type(value).__name__}; {fix}")
    return value


def read_safetensors(path: str | os.PathLike, *, owner: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or ``ValueError`` naming the file (a pickle is refused, not run)."""
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise ValueError(
            f"{path} (of {owner}) is not a safetensors file ({error}); a pickle renamed .safetensors is never "
            "loaded: convert the authors' embeddings.pt with `anogen-aug convert-official`"
        ) from None
