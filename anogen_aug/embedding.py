"""`DefectEmbedding`: a learned defect token, its metadata, and sharing it (files, Hugging Face Hub).

Files written by `DefectEmbedding.save_pretrained`:

- ``learned_embeds.safetensors``: diffusers' textual-inversion layout ``{token: tensor[num_vectors, dim]}``, so
  a Stable Diffusion pipeline's stock ``load_textual_inversion`` reads it without this library;
- ``config.json``: the metadata (backbone, width, init word, category, defect type, steps, settings, hashes);
- ``README.md``: a generated model card.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from .atomic import write_bytes_atomic, write_text_atomic
from .families import DEFAULT_BACKBONE

if TYPE_CHECKING:  # the backbone module imports diffusers; reading an embedding must not
    from .backbone import Backbone

WEIGHTS_NAME = "learned_embeds.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A defect embedding for [anogen-aug](https://github.com/anogen-aug/anogen-aug): one learned token vector that makes
the frozen latent diffusion model `{{ backbone }}` draw the defect **{{ defect }}**{{ category_text }}, learned from
{{ num_support }} real defect image(s) with mask-guided textual inversion (AnoGen, ECCV 2024, arXiv 2505.09263).

| field | value |
|---|---|
{{ table }}

## Usage

```python
from anogen_aug import AnomalyGenerator, BoxSampler, DefectEmbedding, load_backbone

embedding = DefectEmbedding.from_pretrained("{{ repo_id }}")
backbone = load_backbone(embedding.backbone)
generator = AnomalyGenerator(backbone, embedding)
```

or from the command line: `anogen-aug generate --embedding {{ repo_id }} --images normal/ --out bank/`.

The file `learned_embeds.safetensors` uses diffusers' textual-inversion layout: a Stable Diffusion pipeline of the
same text-encoder width loads it with `pipe.load_textual_inversion("{{ repo_id }}")`.
Embeddings are only meaningful with the backbone they were learned on (width {{ dim }}).
"""


class DefectEmbedding(
    ModelHubMixin,
    library_name="anogen-aug",
    tags=["anomaly-detection", "textual-inversion", "anogen", "industrial-inspection"],
    paper_url="https://arxiv.org/abs/2505.09263",
    license="apache-2.0",
):
    """A learned defect token: ``vectors`` ``(num_vectors, dim)`` plus metadata.

    Args:
        vectors: The learned vector(s), ``(num_vectors, dim)`` or ``(dim,)``.
        placeholder_token: The token's name in files and for diffusers' loader (``"<bottle-broken_large>"``).
            (``token`` is only ever the Hub credential; files written before 0.1 stored this as ``"token"``,
            which `from_pretrained` still reads.)
        backbone: Hub id or path of the backbone it was learned on; ``backbone_revision`` its revision.
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
        self.backbone = backbone
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

        ``token`` is the Hub credential. This class reads its own two files (diffusers' weights layout and
        ``config.json``) instead of the mixin's generic loader, which would pass every config field to
        ``__init__``: files written before the rename keep the placeholder under ``"token"``.
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

        metadata = json.loads(fetch(CONFIG_NAME).read_text())
        tensors = load_file(str(fetch(WEIGHTS_NAME)))
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
        return cls(tensors[name], placeholder_token=name, **fields)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        """Upload ``learned_embeds.safetensors``, ``config.json`` and a model card to a Hub model repo.

        Keyword arguments are huggingface_hub's (``private``, ``token``, ``branch``, ``create_pr``, ``commit_message``).
        """
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        repo_id = kwargs.get("repo_id") or f"<user>/{self.placeholder_token.strip('<>')}"
        card_data = ModelCardData(
            library_name="anogen-aug",
            license="apache-2.0",
            base_model=self.backbone,
            tags=["anomaly-detection", "textual-inversion", "anogen", "industrial-inspection"],
            pipeline_tag="image-to-image",
        )
        rows = {
            k: v
            for k, v in self.metadata().items()
            if k not in ("config", "support_hashes") and v is not None
        }
        rows["support images (sha256/16)"] = ", ".join(self.support_hashes) or "-"
        return ModelCard.from_template(
            card_data,
            template_str=_CARD_TEMPLATE,
            title=f"anogen-aug defect embedding {self.placeholder_token}",
            backbone=self.backbone,
            defect=self.defect_type or self.placeholder_token,
            category_text=f" on **{self.category}**" if self.category else "",
            num_support=len(self.support_hashes) or "a few",
            table="\n".join(f"| {k} | `{v}` |" for k, v in rows.items()),
            repo_id=repo_id,
            dim=self.dim,
        )
