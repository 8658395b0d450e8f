"""The two backbone families and the facts about them that need no model code (no diffusers import).

- ``"ldm"``: the ``LDMTextToImagePipeline`` layout (``bert/``, ``tokenizer/``, ``unet/``, ``vqvae/``,
  ``scheduler/``), e.g. ``CompVis/ldm-text2im-large-256`` (LDM-BERT, width 1280, 256 px): the paper's backbone.
- ``"sd"``: the Stable Diffusion 1.x/2.x layout (``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/``,
  ``scheduler/``), CLIP text encoders of width 768 or 1024.
"""

from __future__ import annotations

DEFAULT_BACKBONE = "CompVis/ldm-text2im-large-256"
#: The placeholder string in prompts; an existing single token in both BERT and CLIP vocabularies
#: (the AnoGen code also uses "*"), so no vocabulary is ever changed.
PLACEHOLDER = "*"

#: Folder names of the text encoder and the VAE in each family's pipeline layout.
LAYOUTS = {
    "ldm": {"text_encoder": "bert", "vae": "vqvae"},
    "sd": {"text_encoder": "text_encoder", "vae": "vae"},
}


def detect_family(model_index: dict) -> str:
    """``"ldm"`` or ``"sd"`` from a pipeline's ``model_index.json``; anything else is refused."""
    for family, layout in LAYOUTS.items():
        if all(key in model_index for key in ("unet", "tokenizer", layout["text_encoder"], layout["vae"])):
            return family
    components = sorted(k for k in model_index if not k.startswith("_"))
    raise ValueError(
        "unknown backbone layout: expected an LDMTextToImagePipeline (bert, tokenizer, unet, vqvae, scheduler) or a "
        f"Stable Diffusion pipeline (text_encoder, tokenizer, unet, vae, scheduler), got components {components}"
    )
