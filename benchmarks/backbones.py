"""Benchmark-size backbones, built in-process from the real diffusers/transformers classes (nothing downloaded).

- ``tiny``: `anogen_aug.testing.tiny_backbone("sd")` (64 px, latents 4x16x16): seconds per benchmark, checks
  that the code paths run; its cost balance is not that of a real model.
- ``sd-reduced``: Stable Diffusion 1.5's architecture (4-level UNet with cross-attention at the top three
  levels, 4-level KL VAE, 12-layer CLIP text encoder with a 49 408-token vocabulary) at 256 px with every width
  divided, chosen so that the VAE-encoder-to-UNet FLOP ratio matches the real model's (`flop_profile` measures
  it; the real SD 1.5 at 256 px: encoder 273 GFLOP, UNet 180 GFLOP, ratio 1.51, attention included). That ratio
  decides what latent caching saves in stage 1, so speed-ups measured here transfer to the real model.
- ``sd-wide``: the same architecture at a second size, so that a figure holding on one shape only is seen: UNet
  96-192-384-384 (2.4x sd-reduced's width), CLIP text encoder of width 256, KL VAE 40-80-160-160 (encoder/UNet
  FLOP ratio 1.51 again).

Run ``python -m benchmarks.backbones`` (from the repository root) to print the FLOP profile of each, and of the full-size SD 1.5 (built on
the ``meta`` device, no memory, no weights).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from anogen_aug.backbone import Backbone
from anogen_aug.testing import ldm_scheduler, tiny_backbone, tiny_clip_tokenizer
from benchmarks.harness import count_flops, write_result

BACKBONES = ("tiny", "sd-reduced", "sd-wide")

#: Stable Diffusion 1.5's shapes (`stable-diffusion-v1-5/stable-diffusion-v1-5`, unet/vae/text_encoder configs).
SD15 = {
    "unet_channels": (320, 640, 1280, 1280),
    "unet_heads": 8,
    "vae_channels": (128, 256, 512, 512),
    "text_width": 768,
    "text_ffn": 3072,
    "text_layers": 12,
    "text_heads": 12,
    "vocab_size": 49408,
}
#: sd-reduced: UNet and text encoder widths / 8, VAE widths x 9/64. The VAE keeps a little more width than the
#: UNet because at reduced width the UNet's attention (cost ~ tokens^2 * width) shrinks less than its
#: convolutions (~ width^2); 9/64 restores the real encoder/UNet FLOP ratio (printed by `flop_profile`).
SD_REDUCED = {
    "unet_channels": (40, 80, 160, 160),
    "unet_heads": 2,
    "vae_channels": (18, 36, 72, 72),
    "text_width": 96,
    "text_ffn": 384,
    "text_layers": 12,
    "text_heads": 2,
    "vocab_size": 49408,
}
#: sd-wide: a second SD shape, 2.4x sd-reduced's UNet width (96-192-384-384, cross-attention at three levels)
#: and a CLIP text encoder of width 256; the VAE width again restores SD 1.5's encoder/UNet FLOP ratio.
SD_WIDE = {
    "unet_channels": (96, 192, 384, 384),
    "unet_heads": 4,
    "vae_channels": (40, 80, 160, 160),
    "text_width": 256,
    "text_ffn": 1024,
    "text_layers": 12,
    "text_heads": 4,
    "vocab_size": 49408,
}
SHAPES = {"sd-reduced": SD_REDUCED, "sd-wide": SD_WIDE}


def _unet(shape: dict, sample_size: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=shape["unet_channels"],
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=shape["unet_heads"],
        cross_attention_dim=shape["text_width"],
        norm_num_groups=min(32, shape["unet_channels"][0] // 2),
    )


def _vae(shape: dict, sample_size: int) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=shape["vae_channels"],
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=min(32, shape["vae_channels"][0] // 2),
        sample_size=sample_size,
        scaling_factor=0.18215,
    )


def _text_encoder(shape: dict) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=shape["vocab_size"],
            hidden_size=shape["text_width"],
            intermediate_size=shape["text_ffn"],
            num_hidden_layers=shape["text_layers"],
            num_attention_heads=shape["text_heads"],
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def _clip_tokenizer(vocab_size: int) -> CLIPTokenizer:
    """The tiny CLIP tokenizer padded to ``vocab_size`` entries (as CLIP's 49 408), so a whole-embedding-matrix
    optimiser has a real model's number of rows."""
    with tempfile.TemporaryDirectory() as folder:
        return tiny_clip_tokenizer(folder, vocab_size=vocab_size)


def _scheduler_config() -> dict:
    return dict(ldm_scheduler().config)


def sd_shaped_backbone(name: str = "sd-reduced", *, seed: int = 0, resolution: int = 256) -> Backbone:
    """SD 1.5's architecture at a benchmark width (``"sd-reduced"`` or ``"sd-wide"``), randomly initialised."""
    shape = SHAPES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = _text_encoder(shape)
        unet, vae = _unet(shape, resolution // 8), _vae(shape, resolution)
    return Backbone(
        family="sd",
        text_encoder=text_encoder,
        tokenizer=_clip_tokenizer(shape["vocab_size"]),
        unet=unet,
        vae=vae,
        scheduler_config=_scheduler_config(),
        name_or_path=f"anogen-aug/bench-{name}-seed{seed}",
    )


def make_backbone(name: str, *, seed: int = 0) -> Backbone:
    """``"tiny"``, ``"sd-reduced"`` or ``"sd-wide"``."""
    if name == "tiny":
        return tiny_backbone("sd", seed=seed)
    if name in SHAPES:
        return sd_shaped_backbone(name, seed=seed)
    raise ValueError(f"`backbone` must be one of {BACKBONES}, got {name!r}")


def flop_profile(unet, vae, text_encoder, resolution: int) -> dict:
    """Forward GFLOP per image of the VAE encoder, UNet, VAE decoder and text encoder, and their ratios.

    Works with modules on the ``meta`` device (shapes only).
    """
    device = next(unet.parameters()).device
    latent = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    width = text_encoder.config.hidden_size
    pixels = torch.zeros(1, 3, resolution, resolution, device=device)
    latents = torch.zeros(1, 4, latent, latent, device=device)
    context = torch.zeros(1, 77, width, device=device)
    ids = torch.zeros(1, 77, dtype=torch.long, device=device)
    with torch.no_grad():
        parts = {
            "vae_encoder": count_flops(lambda: vae.encode(pixels)),
            "unet": count_flops(lambda: unet(latents, 500, encoder_hidden_states=context)),
            "vae_decoder": count_flops(lambda: vae.decode(latents)),
            "text_encoder": count_flops(lambda: text_encoder(ids)),
        }
    out = {name: count["total"] / 1e9 for name, count in parts.items()}
    out["unet_attention"] = parts["unet"]["attention_forward"] / 1e9
    out["encoder_to_unet"] = out["vae_encoder"] / out["unet"]
    out["text_to_unet"] = out["text_encoder"] / out["unet"]
    out["resolution"] = resolution
    return out


def stage1_step_flops(unet, vae, text_encoder, resolution: int, batch: int) -> dict:
    """FLOPs of one stage-1 step of each loop, counted on ``meta`` copies (shapes only, no data).

    ``ours``: text encoder forward + UNet forward, and the backward from the loss to the input embeddings (what
    `learn_defect_embedding` runs per step); ``reference``: the same plus the VAE encoder forward of the batch.
    Optimiser and elementwise work is not counted (FlopCounterMode counts matrix products and convolutions).
    """
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet.config)
        vae = AutoencoderKL.from_config(vae.config)
        text_encoder = CLIPTextModel(text_encoder.config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    text_encoder.get_input_embeddings().weight.requires_grad_(True)
    latent = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    ids = torch.zeros(batch, 77, dtype=torch.long, device="meta")
    latents = torch.zeros(batch, 4, latent, latent, device="meta")
    timesteps = torch.zeros(batch, dtype=torch.long, device="meta")

    def step():
        hidden = text_encoder(ids)[0]
        unet(latents, timesteps, encoder_hidden_states=hidden).sample.float().pow(2).mean().backward()

    ours = count_flops(step)["total"]
    with torch.no_grad():
        encoder = count_flops(
            lambda: vae.encode(torch.zeros(batch, 3, resolution, resolution, device="meta"))
        )
    return {"ours": ours, "reference": ours + encoder["total"], "ratio": (ours + encoder["total"]) / ours}


def sd15_modules(resolution: int = 256):
    """Full-size SD 1.5 UNet, VAE and text encoder on the ``meta`` device (no weights, no memory)."""
    with torch.device("meta"):
        return _unet(SD15, resolution // 8), _vae(SD15, resolution), _text_encoder(SD15)


def sd15_flop_profile(resolution: int = 256) -> dict:
    """`flop_profile` of the full-size SD 1.5 shapes, on the ``meta`` device."""
    return flop_profile(*sd15_modules(resolution), resolution)


def backbone_flop_profile(backbone: Backbone) -> dict:
    return flop_profile(backbone.unet, backbone.vae, backbone.text_encoder, backbone.resolution)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="FLOP profile of the benchmark backbones and of SD 1.5")
    parser.add_argument("--out", type=Path, default=None, help="also write the profile as JSON here")
    args = parser.parse_args(argv)
    rows = {"sd1.5 (meta)": sd15_flop_profile(256)}
    steps = {"sd1.5 (meta)": stage1_step_flops(*sd15_modules(256), 256, 4)}
    for name in BACKBONES:
        backbone = make_backbone(name)
        rows[name] = backbone_flop_profile(backbone)
        steps[name] = stage1_step_flops(
            backbone.unet, backbone.vae, backbone.text_encoder, backbone.resolution, 4
        )
    for name, row in rows.items():
        print(
            f"{name:>13} @ {row['resolution']} px: VAE encoder {row['vae_encoder']:8.2f} GFLOP, "
            f"UNet {row['unet']:8.2f} (attention {row['unet_attention']:.2f}), decoder {row['vae_decoder']:8.2f}, "
            f"text {row['text_encoder']:6.2f} | encoder/UNet {row['encoder_to_unet']:.2f}, "
            f"text/UNet {row['text_to_unet']:.3f}"
        )
    for name, row in steps.items():
        print(
            f"{name:>13} stage-1 step, batch 4: ours {row['ours'] / 1e9:8.1f} GFLOP, reference "
            f"{row['reference'] / 1e9:8.1f} GFLOP, FLOP ratio {row['ratio']:.2f}"
        )
    if args.out is not None:
        write_result(
            args.out, {"benchmark": "flop_profile", "forward_gflop": rows, "stage1_step_flops": steps}
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
