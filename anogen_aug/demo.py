"""`anogen-aug demo`: the whole pipeline, offline, on a tiny random backbone and sample images it draws itself.

What it shows is the plumbing (learn -> generate in boxes -> bank -> contact sheet -> weakly supervised detector),
not realistic defects: a tiny randomly initialised diffusion model cannot draw a scratch. The contact sheet's
crop-and-paste rows show what realistic inputs look like; the real backbone (``CompVis/ldm-text2im-large-256``,
1.45 B parameters) is what makes the diffusion rows realistic.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .images import list_images, save_png

logger = logging.getLogger(__name__)

DEMO_SIZE = 64
REAL_BACKBONE_HINT = (
    "To run the real backbone (needs the Hub and ideally a GPU):\n"
    "  anogen-aug learn --backbone CompVis/ldm-text2im-large-256 --images d1.png d2.png d3.png "
    "--masks m1.png m2.png m3.png --out my-defect --device cuda\n"
    "  anogen-aug generate --embedding my-defect --images normal/ --out bank/ --device cuda"
)


# --- sample data -----------------------------------------------------------------------------------------
def _object(rng: np.random.Generator, size: int) -> Image.Image:
    """A grey textured disc ("widget") on a dark, slightly noisy background."""
    background = rng.normal(30, 6, (size, size)).clip(0, 255)
    picture = Image.fromarray(background.astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    margin = size * (0.12 + 0.04 * rng.random())
    draw.ellipse([margin, margin, size - margin, size - margin], fill=(150, 148, 140))
    texture = rng.normal(0, 9, (size, size, 1)).repeat(3, axis=2)
    array = np.asarray(picture, dtype=np.float32)
    disc = array[..., 0] > 100
    array[disc] += texture[disc]
    return Image.fromarray(array.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def _scratch(rng: np.random.Generator, picture: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Draw a dark scratch on the disc; return the image and its mask."""
    size = picture.size[0]
    centre = size / 2 + rng.uniform(-size / 8, size / 8, 2)
    angle = rng.uniform(0, math.pi)
    half = rng.uniform(size / 8, size / 5)
    ends = [(centre[0] - half * math.cos(angle), centre[1] - half * math.sin(angle)),
            (centre[0] + half * math.cos(angle), centre[1] + half * math.sin(angle))]  # fmt: skip
    width = int(rng.integers(2, 4))
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).line(ends, fill=255, width=width)
    damaged = picture.copy()
    ImageDraw.Draw(damaged).line(ends, fill=(40, 35, 30), width=width)
    return damaged, mask


def make_demo_data(root: str | Path, *, seed: int = 0, size: int = DEMO_SIZE) -> Path:
    """Write a small MVTec-layout category ``root/widget`` (12 normal train, 4 good and 6 scratch test images)."""
    rng = np.random.default_rng(seed)
    category = Path(root) / "widget"
    for i in range(12):
        save_png(_object(rng, size), category / "train" / "good" / f"{i:03d}.png")
    for i in range(4):
        save_png(_object(rng, size), category / "test" / "good" / f"{i:03d}.png")
    for i in range(6):
        damaged, mask = _scratch(rng, _object(rng, size))
        save_png(damaged, category / "test" / "scratch" / f"{i:03d}.png")
        save_png(mask, category / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return category


def _support_set(category: Path, k: int = 3) -> tuple[str, list[Path], list[Path]]:
    """The first defect type of an MVTec-layout category and its first k images with masks."""
    defects = sorted(p.name for p in (category / "test").iterdir() if p.is_dir() and p.name != "good")
    if not defects:
        raise ValueError(f"`data`: {category}/test has no defect folder")
    defect = defects[0]
    images = list_images(category / "test" / defect, name="data")[:k]
    masks = [category / "ground_truth" / defect / f"{p.stem}_mask.png" for p in images]
    missing = [str(m) for m in masks if not m.is_file()]
    if missing:
        raise FileNotFoundError(f"`data`: masks missing: {', '.join(missing)}")
    return defect, images, masks


# --- the demo story --------------------------------------------------------------------------------------
def run_demo(
    out: str | Path = "anogen-demo",
    *,
    data: str | Path | None = None,
    steps: int = 30,
    seed: int = 0,
    detector: bool = True,
    say: Callable[[str], None] = logger.info,
) -> dict:
    """Run learn -> generate -> bank -> contact sheet (-> detector) offline; return a summary dict."""
    from .bank import write_bank
    from .boxes import BoxSampler
    from .contact_sheet import contact_sheet
    from .generation import AnomalyGenerator, GenerationConfig
    from .inversion import InversionConfig, learn_defect_embedding
    from .paste import CopyPasteGenerator
    from .testing import save_tiny_backbone

    started, out = time.perf_counter(), Path(out)
    say("anogen-aug demo: a TINY RANDOM backbone shows the pipeline end to end, NOT realistic defects.")

    # 1. Data: the built-in sample category, or an MVTec-layout category folder.
    category = Path(data) if data else make_demo_data(out / "data", seed=seed)
    defect, support_images, support_masks = _support_set(category)
    normals = list_images(category / "train" / "good", name="data")[:4]
    say(f"1/5 data: {category} (defect '{defect}', {len(support_images)} support images)")

    # 2. Backbone: saved in the diffusers layout and loaded back through the real from_pretrained path.
    backbone_dir = out / "tiny-backbone"
    if not (backbone_dir / "model_index.json").is_file():
        save_tiny_backbone(backbone_dir, "ldm", seed=seed)
    from .backbone import load_backbone

    backbone = load_backbone(backbone_dir)
    say(
        f"2/5 backbone: tiny LDM-BERT (width {backbone.token_dim}, {backbone.resolution} px) from {backbone_dir}"
    )

    # 3. Stage 1: learn the defect embedding from the support set.
    config = InversionConfig(
        max_train_steps=steps, train_batch_size=2, checkpointing_steps=max(steps // 2, 1)
    )
    embedding = learn_defect_embedding(
        backbone,
        support_images,
        support_masks,
        config=config,
        generator=torch.Generator().manual_seed(seed),
        category=category.name,
        defect_type=defect,
        output_dir=out / "embedding" / "checkpoints",
    )
    embedding.save_pretrained(out / "embedding")
    say(f"3/5 learned {embedding.placeholder_token} in {steps} steps -> {out / 'embedding'}")

    # 4. Stage 2: generate inside sampled boxes, into two banks (diffusion, crop-and-paste).
    sampler = BoxSampler(width_range=(0.2, 0.35), height_range=(0.2, 0.35), region="auto")
    common = dict(category=category.name, defect_type=defect, box_sampler=sampler, seed=seed, size=DEMO_SIZE)
    anogen = AnomalyGenerator(backbone, embedding, config=GenerationConfig(num_inference_steps=10))
    diffusion_bank = write_bank(anogen, normals, out / "bank-anogen", boxes_per_image=1, samples_per_box=1,
                                embedding_id=embedding.id, **common)  # fmt: skip
    paste = CopyPasteGenerator(support_images, support_masks)
    train_normals = list_images(category / "train" / "good", name="data")
    paste_bank = write_bank(paste, train_normals, out / "bank-paste", **common)
    say(f"4/5 banks: {len(diffusion_bank)} diffusion samples, {len(paste_bank)} crop-and-paste samples")

    # 5. A picture: source | result with the box | mask, for both generators.
    rows = [
        (diffusion_bank.load_source(i), diffusion_bank[i], "anogen (tiny)")
        for i in range(len(diffusion_bank))
    ]
    rows += [
        (paste_bank.load_source(i), paste_bank[i], "crop-and-paste") for i in range(min(4, len(paste_bank)))
    ]
    sheet = out / "contact_sheet.png"
    contact_sheet([(source, s.image, s.mask, s.boxes, label) for source, s, label in rows], out=sheet,
                  title="anogen-aug demo: source | result + box | mask")  # fmt: skip
    say(f"5/5 contact sheet: {sheet}")
    summary = {"out": str(out), "contact_sheet": str(sheet), "embedding": str(out / "embedding"),
               "banks": {"anogen": len(diffusion_bank), "paste": len(paste_bank)}}  # fmt: skip

    # 6. Optional: a weakly supervised DRAEM trained briefly on the sample data with the paste bank.
    if detector:
        try:
            from anogen_aug.integrations.anomalib import train_detector
        except ImportError:
            say("detector stage skipped: install anogen-aug[anomalib]")
        else:
            result = train_detector(
                category.parent, category.name, out / "bank-paste", model="draem", tau=0.9, epochs=1,
                image_size=DEMO_SIZE, batch_size=4, out_dir=out / "detector", seed=seed, accelerator="cpu",
                model_options={"reconstruction_width": 32, "discrimination_width": 32},  # a narrow DRAEM: CPU minutes
            )  # fmt: skip
            metrics = result["metrics"]
            summary["metrics"] = metrics
            shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if v is not None)
            say(
                f"detector: weakly supervised DRAEM (narrow, 1 epoch, tiny data: numbers show it runs, not quality): {shown} (maps: {out / 'detector' / 'maps'})"
            )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    say(f"done in {summary['seconds']} s. " + REAL_BACKBONE_HINT)
    return summary
