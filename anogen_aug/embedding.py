"""`DefectEmbedding`: a learned defect token, its metadata, and sharing it (files, Hugging Face Hub).

Files written by `DefectEmbedding.save_pretrained`:

- ``learned_embeds.safetensors``: diffusers' textual-inversion layout ``{token: tensor[num_vectors, dim]}``, so
  a Stable Diffusion pipeline's stock ``load_textual_inversion`` reads it without this library;
- ``config.json``: the metadata (backbone, width, init word, category, defect type, steps, settings, hashes);
- ``README.md``: a generated model card.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save as save_safetensors

from .atomic import write_bytes_atomic, write_text_atomic
from .families import DEFAULT_BACKBONE
from .hub import hub_errors, read_json, read_safetensors

if TYPE_CHECKING:  # the backbone module imports diffusers; reading an embedding must not
    from .backbone import Backbone

WEIGHTS_NAME = "learned_embeds.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

_TAGS = ("anomaly-detection", "textual-inversion", "anogen", "industrial-inspection")
#: The backbone family a text-encoder width implies (LDM-BERT: 1280; CLIP of Stable Diffusion 1.x / 2.x).
_FAMILY_OF_WIDTH = {1280: "ldm", 768: "sd", 1024: "sd"}

#: The model card, a Jinja template (package data, like huggingface_hub's own card templates).
CARD_TEMPLATE = "model_card_template.txt"


class DefectEmbedding(
    ModelHubMixin,
    library_name="anogen-aug",
    tags=list(_TAGS),  # the mixin appends to the list it is given
    paper_url="https://arxiv.org/abs/2505.09263",
    license="apache-2.0",
):
    """A learned defect token: ``vectors`` ``(num_vectors, dim)`` plus metadata.

    Args:
        vectors: The learned vector(s), ``(num_vectors, dim)`` or ``(dim,)``.
        placeholder_token: The token's name in files and for diffusers' loader (``"<bottle-broken_large>"``).
            (``token`` is only ever the Hub credential; files written before 0.1 stored this as ``"token"``,
            which `from_pretrained` still reads.)
        backbone: Hub id or local folder of the backbone it was learned on (a folder is stored as its absolute
            path, so the embedding finds it from any working directory); ``backbone_revision`` its revision.
        init_word, category, defect_type, steps, config, support_hashes: provenance metadata.
        **extra: Further JSON-able metadata, kept and saved.
    """

    def __init__(
        self,
        vectors: torch.Tensor,
        placeholder_token: str = "<defect>",
        *,
        backbone: str | None = DEFAULT_BACKBONE,
        backbone_revision: str | None = None,
        init_word: str | None = None,
        category: str | None = None,
        defect_type: str | None = None,
        steps: int | None = None,
        config: dict[str, Any] | None = None,
        support_hashes: list[str] | None = None,
        **extra: Any,
    ) -> None:
        vectors = torch.as_tensor(vectors).detach().float().cpu()
        vectors = vectors[None] if vectors.ndim == 1 else vectors
        if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise ValueError(f"`vectors` must have shape (num_vectors, dim), got {tuple(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("`vectors` contains NaN or infinite values")
        if (
            not isinstance(placeholder_token, str)
            or not placeholder_token.strip()
            or " " in placeholder_token
        ):
            raise ValueError(
                f"`placeholder_token` must be a non-empty string without spaces, got {placeholder_token!r}"
            )
        self.vectors = vectors.contiguous()
        self.placeholder_token = placeholder_token
        self.backbone = _portable_backbone(backbone)
        self.backbone_revision = backbone_revision
        self.init_word = init_word
        self.category = category
        self.defect_type = defect_type
        self.steps = steps
        self.config = dict(config or {})
        self.support_hashes = list(support_hashes or [])
        self.extra = dict(extra)

    # --- facts -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def id(self) -> str:
        """Content id: the placeholder token plus a hash of the vector bytes (stored in bank manifests)."""
        digest = hashlib.sha256(self.vectors.numpy().tobytes()).hexdigest()[:12]
        return f"{self.placeholder_token}@{digest}"

    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "placeholder_token": self.placeholder_token,
            "num_vectors": self.num_vectors,
            "dim": self.dim,
            "backbone": self.backbone,
            "backbone_revision": self.backbone_revision,
            "init_word": self.init_word,
            "category": self.category,
            "defect_type": self.defect_type,
            "steps": self.steps,
            "config": self.config,
            "support_hashes": self.support_hashes,
            **self.extra,
        }

    def check_backbone(self, backbone: Backbone) -> None:
        """Refuse a backbone whose text-encoder width differs from this embedding's."""
        if backbone.token_dim != self.dim:
            raise ValueError(
                f"embedding {self.placeholder_token!r} has width {self.dim} (learned on {self.backbone}), but the backbone "
                f"{backbone.name_or_path or backbone.family} has text-encoder width {backbone.token_dim}: embeddings of "
                "different widths are not interchangeable; use the backbone the embedding was learned on"
            )

    def __repr__(self) -> str:
        where = f", category={self.category!r}" if self.category else ""
        return f"DefectEmbedding(placeholder_token={self.placeholder_token!r}, shape={tuple(self.vectors.shape)}{where}, defect_type={self.defect_type!r})"

    # --- files and the Hub (huggingface_hub's ModelHubMixin protocol) ----------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_directory = Path(save_directory)
        weights = save_safetensors({self.placeholder_token: self.vectors}, metadata={"format": "pt"})
        write_bytes_atomic(weights, save_directory / WEIGHTS_NAME)
        write_text_atomic(
            json.dumps(self.metadata(), indent=2, sort_keys=True) + "\n", save_directory / CONFIG_NAME
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
    ) -> DefectEmbedding:
        """Load an embedding from a folder written by `save_pretrained`, or from a Hub repo id.

        ``revision``, ``token`` (the Hub credential), ``cache_dir``, ``force_download`` and ``local_files_only``
        go to ``huggingface_hub.hf_hub_download`` as they are, with their meaning there (a local folder needs none).
        This class reads its own two files (diffusers' weights layout and ``config.json``) instead of the mixin's
        generic loader, which would pass every config field to ``__init__``: files written before the rename keep
        the placeholder under ``"token"``.
        """
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
    ) -> DefectEmbedding:
        def fetch(filename: str) -> Path:
            local = Path(model_id)
            if local.is_dir():
                path = local / filename
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{local} is not a defect embedding folder: {filename} is missing"
                    )
                return path
            return Path(
                hf_hub_download(
                    model_id,
                    filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                    library_name="anogen-aug",
                )
            )

        with hub_errors(model_id, name="pretrained_model_name_or_path", revision=revision):
            config_path, weights_path = fetch(CONFIG_NAME), fetch(WEIGHTS_NAME)
        metadata = read_json(config_path, owner=f"defect embedding {model_id}")
        tensors = read_safetensors(weights_path, owner=f"defect embedding {model_id}")
        if not tensors:
            raise ValueError(f"{weights_path} (of defect embedding {model_id}) holds no tensor")
        name = metadata.get("placeholder_token") or metadata.get("token") or next(iter(tensors))
        if name not in tensors:
            raise ValueError(
                f"{WEIGHTS_NAME} of {model_id} has keys {sorted(tensors)}, expected the token {name!r}"
            )
        known = {"format_version", "num_vectors", "dim", "token", "placeholder_token"}
        fields = {k: v for k, v in metadata.items() if k not in known}
        if metadata.get("dim") not in (None, tensors[name].shape[-1]):
            raise ValueError(
                f"{model_id}: config says width {metadata['dim']}, the weights have {tensors[name].shape[-1]}"
            )
        try:
            return cls(tensors[name], placeholder_token=name, **fields)
        except (TypeError, ValueError) as error:
            raise ValueError(f"defect embedding {model_id}: {error}") from error

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        """Upload ``learned_embeds.safetensors``, ``config.json`` and a model card to a Hub model repo.

        Keyword arguments are huggingface_hub's (``private``, ``token``, ``branch``, ``create_pr``, ``commit_message``).
        """
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card: the Hub's metadata (library, base model, tags, licence, the placeholder token, category,
        defect type), what the embedding is, and how to use it with anogen-aug and with diffusers alone."""
        repo_id = kwargs.get("repo_id") or f"<user>/{self.placeholder_token.strip('<>')}"
        card_data = ModelCardData(
            library_name="anogen-aug",
            license="apache-2.0",
            base_model=self.backbone if _is_hub_id(self.backbone) else None,
            tags=list(_TAGS),
            pipeline_tag="image-to-image",
            placeholder_token=self.placeholder_token,
            category=self.category,
            defect_type=self.defect_type,
        )
        rows = {
            k: v
            for k, v in self.metadata().items()
            if k not in ("config", "support_hashes") and v is not None
        }
        rows["support images (sha256/16)"] = ", ".join(self.support_hashes) or "-"
        template = importlib.resources.files("anogen_aug").joinpath("data", CARD_TEMPLATE).read_text("utf-8")
        return ModelCard.from_template(
            card_data,
            template_str=template,
            title=f"anogen-aug defect embedding {self.placeholder_token}",
            placeholder_token=self.placeholder_token,
            backbone=self.backbone,
            defect=self.defect_type or self.placeholder_token,
            category_text=f" on **{self.category}**" if self.category else "",
            num_support=len(self.support_hashes) or "a few",
            table="\n".join(f"| {k} | `{v}` |" for k, v in rows.items()),
            repo_id=repo_id,
            dim=self.dim,
            num_vectors=self.num_vectors,
            family=_FAMILY_OF_WIDTH.get(self.dim),
        )


def _portable_backbone(backbone: str | os.PathLike | None) -> str | None:
    """A backbone given as a local folder, as its absolute path: the embedding's metadata then still finds it when
    ``generate`` runs from another working directory. A Hub id (no such local folder) is kept as it is."""
    if backbone is None:
        return None
    local = Path(backbone).expanduser()
    return str(local.resolve()) if local.is_dir() else str(backbone)


def _is_hub_id(backbone: str | None) -> bool:
    """Whether ``backbone`` reads as a Hub repo id (the card's ``base_model``), not a local path."""
    if not backbone or Path(backbone).is_absolute() or Path(backbone).exists():
        return False
    try:
        validate_repo_id(backbone)
    except HFValidationError:
        return False
    return True
