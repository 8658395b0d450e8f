"""Toy data for the anomalib tests, built offline from real classes.

- `write_mvtec_folder`: a 56x64 px MVTec-layout category (6 train normals, 4 test normals, 4 test anomalies
  "scratch" with masks);
- `write_toy_bank`: a bank of 6 crop-and-paste samples written by the real `write_bank` + `CopyPasteGenerator`;
- `serve_random_timm_weights`: a timm model's weights, randomly initialised, placed in a Hugging Face cache
  folder the way ``hf download`` leaves them, so timm's ``pretrained=True`` path loads them offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anogen_aug.bank import AnomalyBank, write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.paste import CopyPasteGenerator

HEIGHT, WIDTH = 56, 64
CATEGORY = "tiny"


def _normal(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = 0.45 + 0.2 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    return (np.clip(base[..., None] + rng.normal(0, 0.03, (HEIGHT, WIDTH, 3)), 0, 1) * 255).astype(np.uint8)


def write_mvtec_folder(root: Path, category: str = CATEGORY) -> Path:
    """Write ``root/<category>`` in the MVTec AD layout; returns ``root``."""
    rng = np.random.default_rng(0)
    folder = root / category
    for split, count in (("train/good", 6), ("test/good", 4)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(_normal(rng)).save(folder / split / f"{i:03d}.png")
    (folder / "test/scratch").mkdir(parents=True)
    (folder / "ground_truth/scratch").mkdir(parents=True)
    for i in range(4):
        image, mask = _normal(rng), np.zeros((HEIGHT, WIDTH), np.uint8)
        y, x = 8 + 6 * i, 10 + 7 * i
        image[y : y + 10, x : x + 14] = [230, 40, 40]
        mask[y : y + 10, x : x + 14] = 255
        Image.fromarray(image).save(folder / "test/scratch" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "ground_truth/scratch" / f"{i:03d}_mask.png")
    return root


def write_toy_bank(data: Path, out: Path, size=None) -> AnomalyBank:
    """Crop-and-paste the first two test anomalies of ``data/tiny`` onto its 6 train normals."""
    folder = data / CATEGORY
    generator = CopyPasteGenerator(
        [folder / "test/scratch/000.png", folder / "test/scratch/001.png"],
        [folder / "ground_truth/scratch/000_mask.png", folder / "ground_truth/scratch/001_mask.png"],
    )
    return write_bank(
        generator,
        sorted((folder / "train/good").glob("*.png")),
        out,
        category=CATEGORY,
        defect_type="scratch",
        box_sampler=BoxSampler(width_range=(0.3, 0.5), height_range=(0.3, 0.5)),
        boxes_per_image=1,
        samples_per_box=1,
        seed=0,
        size=size,
        progress=False,
    )


def serve_random_timm_weights(cache: Path, name: str = "resnet18.tv_in1k") -> dict:
    """Put random weights for timm model ``name`` (``arch.tag``) in the Hugging Face cache folder ``cache``.

    The layout is the hub cache's (``models--timm--<name>/refs/main`` naming a snapshot that holds
    ``model.safetensors``), so with ``HF_HUB_OFFLINE=1`` and the cache pointed here, timm loads these weights
    where it would download the ImageNet ones. Returns the state dict written.
    """
    import timm
    from safetensors.torch import save_file

    repo = cache / f"models--timm--{name}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    weights = timm.create_model(name.split(".")[0], pretrained=False).state_dict()
    save_file(weights, snapshot / "model.safetensors")
    return weights
