"""Tiny offline backbones built from the REAL diffusers/transformers classes, for tests, the demo and benchmarks.

Nothing is downloaded: the tokenizer is built from a vocabulary this module writes, every weight is initialised
from ``seed``. `save_tiny_backbone` writes the diffusers pipeline folder layout, so `load_backbone(folder)`
exercises the same ``from_pretrained`` path as the real 1.45 B backbone. A tiny random backbone shows that the
pipeline runs end to end; it does not make realistic defects.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from .backbone import Backbone, load_backbone

#: Words the tiny tokenizers know as single tokens: the prompt templates' words, the init word and "*".
_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "photo",
    "rendering",
    "cropped",
    "bad",
    "close-up",
    "bright",
    "clean",
    "dark",
    "dirty",
    "good",
    "nice",
    "small",
    "large",
    "weird",
    "cool",
    "jpeg",
    "picture",
    "rendition",
    "it",
    "one",
    "this",
    "that",
    "my",
    "defect",
    "scratch",
    "crack",
    "hole",
    "broken",
    "object",
    "texture",
    "*",
    ",",
    ".",
]
_SPECIAL_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_TINY_RESOLUTION = 64


def _tiny_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=_TINY_RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=_TINY_RESOLUTION,
    )


def ldm_scheduler() -> DDIMScheduler:
    """The LDM / Stable Diffusion noise schedule: beta "scaled_linear" 0.00085 -> 0.012 over 1000 steps."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_bert_tokenizer(folder: str | os.PathLike):
    """A small offline BERT WordPiece tokenizer whose vocabulary file the code writes into ``folder``.

    (``BertTokenizer(vocab_file=...)`` silently ignores the file in transformers 5: every id becomes [UNK];
    loading the folder with ``from_pretrained`` reads it.)
    """
    from transformers import BertTokenizer

    vocab = Path(folder) / "vocab.txt"
    words = list(dict.fromkeys(_SPECIAL_BERT + _WORDS + list("abcdefghijklmnopqrstuvwxyz")))
    vocab.write_text("\n".join(words) + "\n")
    return BertTokenizer.from_pretrained(str(folder), model_max_length=77)


def _bert_parts(folder: Path, width: int):
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    tokenizer = tiny_bert_tokenizer(folder)
    config = LDMBertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        encoder_layers=2,
        encoder_ffn_dim=64,
        encoder_attention_heads=2,
        head_dim=width // 2,
        d_model=width,
        pad_token_id=0,
    )
    return LDMBertModel(config), tokenizer


def tiny_clip_tokenizer(folder: str | os.PathLike, *, vocab_size: int | None = None):
    """A CLIP byte-pair tokenizer written to ``folder`` whose merges build every known word as one token.

    Args:
        folder: Where ``vocab.json`` and ``merges.txt`` are written.
        vocab_size: Pad the vocabulary with unused tokens to this size (e.g. CLIP's 49 408), for benchmarks that
            need a real model's number of embedding rows.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tokens = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    merges: list[str] = []
    letters = sorted({c for word in _WORDS for c in word} | set("abcdefghijklmnopqrstuvwxyz"))
    tokens += letters + [c + "</w>" for c in letters]
    for word in _WORDS:
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if i == len(word) - 1 else "")
            merge = f"{piece} {right}"
            if merge not in merges:
                merges.append(merge)
            piece = piece + right
            if piece not in tokens:
                tokens.append(piece)
    tokens += [f"<unused{i}>" for i in range((vocab_size or 0) - len(tokens))]  # never produced by the merges
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), unk_token="<unk>", model_max_length=77)


def _clip_parts(folder: Path, width: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(folder)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config), tokenizer


def tiny_backbone(family: str = "ldm", *, seed: int = 0, width: int = 32) -> Backbone:
    """A tiny, randomly initialised backbone of the given family, built in memory (64 px, latents 4x16x16).

    Args:
        family: ``"ldm"`` (LDM-BERT text encoder, LDM folder names) or ``"sd"`` (CLIP text encoder).
        seed: Weight initialisation seed; the same seed gives the same weights.
        width: Text-encoder width (the embedding dimension), 32 by default.
    """
    if family not in ("ldm", "sd"):
        raise ValueError(f"`family` must be 'ldm' or 'sd', got {family!r}")
    with tempfile.TemporaryDirectory() as folder, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder, tokenizer = (_bert_parts if family == "ldm" else _clip_parts)(Path(folder), width)
        unet, vae = _tiny_unet(width), _tiny_vae()
    return Backbone(
        family=family,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        vae=vae,
        scheduler_config=dict(ldm_scheduler().config),
        name_or_path=f"anogen-aug/tiny-{family}-seed{seed}",
    )


def save_tiny_backbone(
    directory: str | os.PathLike, family: str = "ldm", *, seed: int = 0, width: int = 32
) -> Path:
    """Save a tiny backbone in the diffusers pipeline folder layout; `load_backbone(directory)` loads it.

    ``"ldm"`` writes an ``LDMTextToImagePipeline`` (``bert/``, ``tokenizer/``, ``unet/``, ``vqvae/``,
    ``scheduler/``); ``"sd"`` a ``StableDiffusionPipeline`` without safety checker.
    """
    backbone = tiny_backbone(family, seed=seed, width=width)
    directory = Path(directory)
    scheduler = DDIMScheduler.from_config(backbone.scheduler_config)
    if family == "ldm":
        from diffusers import LDMTextToImagePipeline

        pipe = LDMTextToImagePipeline(
            vqvae=backbone.vae,
            bert=backbone.text_encoder,
            tokenizer=backbone.tokenizer,
            unet=backbone.unet,
            scheduler=scheduler,
        )
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=backbone.vae,
            text_encoder=backbone.text_encoder,
            tokenizer=backbone.tokenizer,
            unet=backbone.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(directory)
    return directory


def load_tiny_backbone(
    family: str = "ldm", *, seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> Backbone:
    """Save a tiny backbone to ``cache_dir`` (once) and load it back through `load_backbone`."""
    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "anogen-aug-tiny")
    folder = cache_dir / f"tiny-{family}-seed{seed}"
    if not (folder / "model_index.json").is_file():
        with tempfile.TemporaryDirectory(
            dir=cache_dir.parent if cache_dir.parent.exists() else None
        ) as staging:
            save_tiny_backbone(Path(staging) / "pipe", family, seed=seed)
            folder.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(staging) / "pipe", folder)
    return load_backbone(folder)
