"""Full-size timing on a GPU: the paper's backbone ARCHITECTURE (LDM-BERT 1280 x 32 layers, UNet 320-640-1280-1280,
f8 VAE; 1.45 B parameters) with random weights, through the library's public API.

Random weights give real costs (FLOPs, memory, kernels) but meaningless pictures: this measures speed and
memory only. No weights are downloaded. Run on a machine with CUDA:

    python -m benchmarks.gpu_fullsize --out benchmarks/results/gpu_fullsize.json

It reports: stage-1 seconds per step (batch 4, 256 px) in fp32 and bf16 autocast and the implied time of the
authors' 6100 steps; stage-2 images per second (DDIM 50, guidance 10, 2 boxes x 2 samples per image, batched);
the cost of a 1024 px image with a 64 px box against a 256 px image (local mode); peak GPU memory of each.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from anogen_aug.backbone import Backbone
from anogen_aug.embedding import DefectEmbedding
from anogen_aug.generation import AnomalyGenerator, GenerationConfig
from anogen_aug.inversion import InversionConfig, learn_defect_embedding
from benchmarks.harness import write_result


def fullsize_ldm_backbone(device: str) -> Backbone:
    """The `CompVis/ldm-text2im-large-256` architecture (configs as published), randomly initialised."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    from anogen_aug.testing import ldm_scheduler, tiny_bert_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = tiny_bert_tokenizer(folder)  # a small offline vocabulary; ids fit the 30522-row table
    torch.manual_seed(0)
    bert = LDMBertModel(
        LDMBertConfig(
            vocab_size=30522,
            max_position_embeddings=77,
            encoder_layers=32,
            encoder_ffn_dim=5120,
            encoder_attention_heads=8,
            head_dim=64,
            d_model=1280,
        )  # fmt: skip
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1280,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=256,
    )
    for module in (bert, unet, vae):
        module.to(device)
    return Backbone(family="ldm", text_encoder=bert, tokenizer=tokenizer, unet=unet, vae=vae,
                    scheduler_config=dict(ldm_scheduler().config), name_or_path="fullsize-random-ldm")  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def _support(size: int):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(3)]
    masks = []
    for i in range(3):
        mask = torch.zeros(1, size, size)
        top = size // 4 + i * size // 12
        mask[:, top : top + size // 4, size // 3 : size // 2] = 1
        masks.append(mask)
    return images, masks


def time_stage1(backbone: Backbone, device: str, steps: int, precision: str) -> dict:
    images, masks = _support(backbone.resolution)
    config = InversionConfig(
        max_train_steps=steps, train_batch_size=4, checkpointing_steps=10**6, mixed_precision=precision
    )
    stamps: list[float] = []

    def tick(step: int, loss: float) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    _peak_reset(device)
    learn_defect_embedding(backbone, images, masks, config=config, generator=torch.Generator().manual_seed(0),
                           progress=False, callback=tick)  # fmt: skip
    per_step = (stamps[-1] - stamps[steps // 4]) / (len(stamps) - 1 - steps // 4)  # skip warm-up steps
    return {"precision": precision, "seconds_per_step": round(per_step, 4),
            "authors_6100_steps_minutes": round(per_step * 6100 / 60, 1), "peak_gib": _peak_gib(device)}  # fmt: skip


def time_stage2(
    backbone: Backbone, embedding: DefectEmbedding, device: str, precision: str, images: int
) -> dict:
    generator = AnomalyGenerator(
        backbone, embedding, config=GenerationConfig(mixed_precision=precision, max_batch_size=16)
    )
    g = torch.Generator().manual_seed(0)
    side = backbone.resolution
    batch = [torch.rand(3, side, side, generator=g) for _ in range(images)]
    boxes = [torch.tensor([[0.15, 0.15, 0.4, 0.43], [0.55, 0.5, 0.78, 0.86]]) * side] * images
    generator.generate_batch(
        batch[:1], boxes[:1], generator=torch.Generator().manual_seed(0), progress=False
    )  # warm-up
    _sync(device)
    _peak_reset(device)
    start = time.perf_counter()
    for _ in range(2):  # 2 samples per box set, as the authors' n_iter 2
        generator.generate_batch(batch, boxes, generator=torch.Generator().manual_seed(1), progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"precision": precision, "images": 2 * images, "images_per_second": round(2 * images / seconds, 3),
            "peak_gib": _peak_gib(device)}  # fmt: skip


def time_local(backbone: Backbone, embedding: DefectEmbedding, device: str) -> dict:
    generator = AnomalyGenerator(backbone, embedding, config=GenerationConfig(num_inference_steps=20))
    results = {}
    small, large = backbone.resolution, 4 * backbone.resolution
    for side in (small, large, small, large):
        image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(side))
        half = small // 8  # a box a quarter of the model's side (64 px at 256)
        box = torch.tensor([[side / 2 - half, side / 2 - half, side / 2 + half, side / 2 + half]])
        _sync(device)
        start = time.perf_counter()
        generator.generate(image, box, generator=torch.Generator().manual_seed(0))
        _sync(device)
        results[side] = time.perf_counter() - start  # second pass overwrites the first (warm)
    return {"seconds_small": round(results[small], 3), "seconds_4x_side": round(results[large], 3), "sides": [small, large],
            "ratio_large_over_small": round(results[large] / results[small], 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=40, help="stage-1 steps timed")
    parser.add_argument("--images", type=int, default=8, help="stage-2 images per timed batch")
    parser.add_argument("--out", default="benchmarks/results/gpu_fullsize.json")
    parser.add_argument(
        "--size", choices=["full", "tiny"], default="full", help="tiny: a CPU smoke run of this script"
    )
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    if args.size == "tiny":
        from anogen_aug.testing import tiny_backbone

        backbone = tiny_backbone("ldm")
    else:
        backbone = fullsize_ldm_backbone(args.device)
    params = sum(
        p.numel() for m in (backbone.text_encoder, backbone.unet, backbone.vae) for p in m.parameters()
    )
    embedding = DefectEmbedding(torch.randn(1, backbone.token_dim) * 0.3, placeholder_token="<random>")
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__, "parameters_billion": round(params / 1e9, 3),
        "stage1": [time_stage1(backbone, args.device, args.steps, p) for p in ("no", "bf16")],
        "stage2": [time_stage2(backbone, embedding, args.device, p, args.images) for p in ("no", "bf16")],
        "local_mode": time_local(backbone, embedding, args.device),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    write_result(args.out, report)


if __name__ == "__main__":
    main()
