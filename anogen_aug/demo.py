"""`anogen-aug demo`: the whole pipeline, offline, on a tiny random backbone and sample images it draws itself.

What it shows is the plumbing (learn -> generate in boxes -> bank -> contact sheet -> weakly supervised detector),
not realistic defects: a tiny randomly initialised diffusion model cannot draw a scratch. The contact sheet's
crop-and-paste rows show what realistic inputs look like; the real backbone (``CompVis/ldm-text2im-large-256``,
1.45 B parameters) is what makes the diffusion rows realistic.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
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
    "  anogen-aug generate --embedding my-defect --images normal/ --out bank/ --device cuda\n"
    "Stage 1 at its default 6100 steps costs about one GPU-hour per defect type (the authors' figure); "
    "add --max-train-steps 50 for a first try."
)
#: Third-party loggers whose info lines (Lightning's "GPU available" and tips) and deprecation notices the demo
#: hides; their errors still show.
_QUIET_LOGGERS = {
    "lightning": logging.WARNING,
    "lightning.pytorch": logging.WARNING,
    "lightning.fabric": logging.WARNING,
    "lightning_fabric": logging.WARNING,
    "pytorch_lightning": logging.WARNING,
    "transformers": logging.ERROR,
    "diffusers": logging.ERROR,
}


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Within the block, the known noise of the demo's dependencies is hidden, so the demo's own lines stand out.

    Hidden: ``DeprecationWarning`` / ``FutureWarning``, Lightning's info lines and tips, Lightning's note that
    it inferred a tiny batch's size, and the download and loading progress bars of diffusers, transformers and
    huggingface_hub. Other warnings and every error still show. Everything is restored on exit.
    """
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    loggers = {name: logging.getLogger(name) for name in _QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    diffusers_bars = diffusers_logging.is_progress_bar_enabled()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*infer the `batch_size`")
        for name, logger in loggers.items():
            logger.setLevel(max(_QUIET_LOGGERS[name], logger.getEffectiveLevel()))
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()  # huggingface_hub's too
        try:
            yield
        finally:
            for name, logger in loggers.items():
                logger.setLevel(levels[name])
            if diffusers_bars:
                diffusers_logging.enable_progress_bar()
            if transformers_bars:
                transformers_logging.enable_progress_bar()
            (hub_utils.enable_progress_bars if hub_bars else hub_utils.disable_progress_bars)()


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
    """The first defect type of an MVTec-layout category and its first ``k`` images with their masks."""
    from .mvtec import read_mvtec

    folder = read_mvtec(category)
    if not folder.defect_types:
        raise ValueError(f"`data`: {category}/test has no defect folder")
    defect = folder.defect_types[0]
    support = folder.anomalies(defect)[:k]
    return defect, [s.image_path for s in support], [s.mask_path for s in support]


# --- the demo story --------------------------------------------------------------------------------------
def run_demo(
    out: str | Path = "anogen-demo",
    *,
    data: str | Path | None = None,
    steps: int = 30,
    seed: int = 0,
    detector: bool = True,
    say: Callable[[str], None] = logger.info,
    quiet: bool = True,
) -> dict:
    """Run learn -> generate -> bank -> contact sheet (-> detector) offline; return a summary dict.

    Args:
        out: The output folder.
        data: An MVTec-layout category folder (default: sample images drawn by `make_demo_data`).
        steps: Stage-1 steps on the tiny backbone.
        seed: Seed of every random draw.
        detector: Also train a narrow weakly supervised DRAEM for one epoch (needs ``anogen-aug[anomalib]``).
        say: Where the demo's numbered lines go (the CLI passes ``print``).
        quiet: Hide the dependencies' known noise while it runs (`quiet_third_party`); errors still show.
    """
    with quiet_third_party() if quiet else contextlib.nullcontext():
        return _demo(Path(out), data=data, steps=steps, seed=seed, detector=detector, say=say, quiet=quiet)


def _demo(
    out: Path, *, data, steps: int, seed: int, detector: bool, say: Callable[[str], None], quiet: bool
) -> dict:
    """The demo's story, in numbered steps; each says one line."""
    started, total = time.perf_counter(), 6 if detector else 5
    say("anogen-aug demo: a TINY RANDOM backbone shows the pipeline end to end, NOT realistic defects.")

    # 1. Data: the built-in sample category, or an MVTec-layout category folder.
    category = Path(data) if data else make_demo_data(out / "data", seed=seed)
    defect, support_images, support_masks = _support_set(category)
    say(f"1/{total} data: {category} (defect '{defect}', {len(support_images)} support images)")

    # 2. Backbone: saved in the diffusers layout and loaded back through the real from_pretrained path.
    backbone = _backbone(out / "tiny-backbone", seed)
    say(f"2/{total} backbone: tiny LDM-BERT (width {backbone.token_dim}, {backbone.resolution} px)")

    # 3. Stage 1: learn the defect embedding from the support set.
    embedding = _learn(backbone, support_images, support_masks, category.name, defect, out, steps, seed)
    say(f"3/{total} learned {embedding.placeholder_token} in {steps} steps -> {out / 'embedding'}")

    # 4. Stage 2: generate inside sampled boxes, into two banks (diffusion, crop-and-paste).
    banks = _banks(backbone, embedding, support_images, support_masks, category, defect, out, seed)
    say(
        f"4/{total} banks: {len(banks['anogen'])} diffusion samples, {len(banks['paste'])} crop-and-paste samples"
    )

    # 5. A picture: source | result with the box | mask, for both generators.
    sheet = _sheet(banks, out / "contact_sheet.png")
    say(f"5/{total} contact sheet: {sheet}")
    summary = {"out": str(out), "contact_sheet": str(sheet), "embedding": str(out / "embedding"),
               "banks": {name: len(bank) for name, bank in banks.items()}}  # fmt: skip

    # 6. Optional: a weakly supervised DRAEM trained briefly on the sample data with the paste bank.
    if detector:
        summary["metrics"] = _detector(category, out, seed, say, step=f"6/{total}", quiet=quiet)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    say(f"done in {summary['seconds']} s. " + REAL_BACKBONE_HINT)
    return summary


def _backbone(folder: Path, seed: int):
    from .backbone import load_backbone
    from .testing import save_tiny_backbone

    if not (folder / "model_index.json").is_file():
        save_tiny_backbone(folder, "ldm", seed=seed)
    return load_backbone(folder)


def _learn(backbone, images, masks, category: str, defect: str, out: Path, steps: int, seed: int):
    from .inversion import InversionConfig, learn_defect_embedding

    config = InversionConfig(
        max_train_steps=steps, train_batch_size=2, checkpointing_steps=max(steps // 2, 1)
    )
    embedding = learn_defect_embedding(
        backbone,
        images,
        masks,
        config=config,
        generator=torch.Generator().manual_seed(seed),
        category=category,
        defect_type=defect,
        output_dir=out / "embedding" / "checkpoints",
        progress=False,
    )
    embedding.save_pretrained(out / "embedding")
    return embedding


def _banks(backbone, embedding, images, masks, category: Path, defect: str, out: Path, seed: int) -> dict:
    from .bank import write_bank
    from .boxes import BoxSampler
    from .generation import AnomalyGenerator, GenerationConfig
    from .paste import CopyPasteGenerator

    sampler = BoxSampler(width_range=(0.2, 0.35), height_range=(0.2, 0.35), region="auto")
    common = dict(category=category.name, defect_type=defect, box_sampler=sampler, seed=seed, size=DEMO_SIZE,
                  progress=False)  # fmt: skip
    normals = list_images(category / "train" / "good", name="data")
    anogen = AnomalyGenerator(backbone, embedding, config=GenerationConfig(num_inference_steps=10))
    diffusion_bank = write_bank(anogen, normals[:4], out / "bank-anogen", boxes_per_image=1, samples_per_box=1,
                                embedding_id=embedding.id, **common)  # fmt: skip
    paste_bank = write_bank(CopyPasteGenerator(images, masks), normals, out / "bank-paste", **common)
    return {"anogen": diffusion_bank, "paste": paste_bank}


def _sheet(banks: dict, path: Path) -> Path:
    from .contact_sheet import contact_sheet

    diffusion, paste = banks["anogen"], banks["paste"]
    rows = [(diffusion.load_source(i), diffusion[i], "anogen (tiny)") for i in range(len(diffusion))]
    rows += [(paste.load_source(i), paste[i], "crop-and-paste") for i in range(min(4, len(paste)))]
    contact_sheet([(source, s.image, s.mask, s.boxes, label) for source, s, label in rows], out=path,
                  title="anogen-aug demo: source | result + box | mask")  # fmt: skip
    return path


def _detector(
    category: Path, out: Path, seed: int, say: Callable[[str], None], *, step: str, quiet: bool
) -> dict | None:
    try:
        from anogen_aug.integrations.anomalib import TrainConfig, train_detector
    except ImportError:
        say(f"{step} detector skipped: install anogen-aug[anomalib]")
        return None
    config = TrainConfig(
        model="draem", tau=0.9, epochs=1, image_size=DEMO_SIZE, batch_size=4, seed=seed, accelerator="cpu",
        model_options={"reconstruction_width": 32, "discrimination_width": 32},  # a narrow DRAEM: CPU minutes
    )  # fmt: skip
    # Lightning prints its model summary table to stdout: into a log file, not between the demo's lines.
    log = out / "detector" / "lightning.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # Lightning sets its loggers' levels when first imported (just now): quiet them again.
    again = quiet_third_party() if quiet else contextlib.nullcontext()
    with again, open(log, "w") as stream, contextlib.redirect_stdout(stream):
        result = train_detector(
            category.parent, category.name, out / "bank-paste", config=config, out_dir=out / "detector"
        )
    metrics = result["metrics"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if v is not None)
    say(
        f"{step} detector: weakly supervised DRAEM (narrow, 1 epoch, tiny data: numbers show it runs, not "
        f"quality): {shown} (maps: {out / 'detector' / 'maps'})"
    )
    return metrics
