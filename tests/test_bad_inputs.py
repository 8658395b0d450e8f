"""The bad-input table (docs/bad-inputs.md), row by row: the error type, the culprit named, nothing written lost.

Each row is a function registered under the id of its table row. It runs against a fresh copy of a workspace
holding what a user already has (support images and masks, normal images, a bank, an embedding); after the error
every file of that workspace must still be there with the same bytes. CLI rows run `anogen_aug.cli.main` and
fail with `CliFailed`: one line on stderr, no traceback, a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision import tv_tensors

from anogen_aug import (
    AnoGenAugment,
    AnomalyBank,
    AnomalyGenerator,
    BoxSampler,
    CopyPasteGenerator,
    DefectEmbedding,
    GenerationConfig,
    InversionConfig,
    PasteConfig,
    load_backbone,
    load_image,
    load_mask,
    weak_supervision_mask,
    write_bank,
)
from anogen_aug.boxes import check_boxes
from anogen_aug.cli import main
from anogen_aug.images import MAX_IMAGE_PIXELS_ENV, list_images, save_png
from anogen_aug.masks import resize_mask

TABLE = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
SIZE = 32


class CliFailed(Exception):
    """``main`` returned (or exited with) a non-zero code; the message is what it printed on stderr."""


@dataclass
class Workspace:
    root: Path
    backbone: object  # a tiny `Backbone` (shared, read only)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def support(self):
        return [self / "support/d0.png"], [self / "support/m0.png"]

    def normals(self):
        return sorted((self / "normal").glob("*.png"))


ROWS: dict[str, tuple[type[BaseException], tuple[str, ...], object]] = {}


def row(key: str, error: type[BaseException], *culprits: str):
    """Register a row: running it raises ``error`` whose message holds every culprit (``{ws}``: the workspace)."""

    def register(action):
        assert key not in ROWS, key
        ROWS[key] = (error, culprits, action)
        return action

    return register


def cli(*argv: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    if code:
        raise CliFailed(stderr.getvalue())


def _budget(pixels: str):
    return mock.patch.dict(os.environ, {MAX_IMAGE_PIXELS_ENV: pixels})


def _nan_tiff(path: Path) -> Path:
    values = np.full((SIZE, SIZE), 0.5, np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, mode="F").save(path)
    return path


def _generator(w: Workspace) -> CopyPasteGenerator:
    return CopyPasteGenerator(*w.support(), config=PasteConfig(blend="hard"))


def _bank_options():
    sampler = BoxSampler(width_range=(0.3, 0.4), height_range=(0.3, 0.4))
    return dict(category="widget", defect_type="spot", box_sampler=sampler, boxes_per_image=1, progress=False)


def _embedding_folder(w: Workspace, *, config=None, weights=None) -> Path:
    folder = w / "embedding-bad"
    shutil.copytree(w / "embedding", folder)
    if config is not None:
        (folder / "config.json").write_text(config)
    if weights is not None:
        (folder / "learned_embeds.safetensors").unlink()
        save_file(weights, str(folder / "learned_embeds.safetensors"))
    return folder


def _backbone_folder(w: Workspace, model_index) -> Path:
    folder = w / "backbone"
    folder.mkdir()
    text = model_index if isinstance(model_index, str) else json.dumps(model_index)
    (folder / "model_index.json").write_text(text)
    return folder


def _manifest_edit(w: Workspace, edit) -> Path:
    """A copy of the bank whose first record is ``edit(record)`` (a dict, or a raw line when it returns str)."""
    folder = w / "bank-bad"
    shutil.copytree(w / "bank", folder)
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    first = edit(json.loads(lines[0]))
    lines[0] = first if isinstance(first, str) else json.dumps(first)
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# --- images -------------------------------------------------------------------------------------------------
@row("I1", FileNotFoundError, "`image`", "none.png")
def _(w):
    load_image(w / "none.png")


@row("I2", ValueError, "`image`", "{ws}/text.png", "cannot read")
def _(w):
    (w / "text.png").write_text("not an image")
    load_image(w / "text.png")


@row("I3", ValueError, "`image`", "{ws}/cut.png", "cannot read")
def _(w):
    data = (w / "normal/n0.png").read_bytes()
    (w / "cut.png").write_bytes(data[: len(data) // 2])
    load_image(w / "cut.png")


@row("I4", ValueError, "{ws}/normal/n0.png", "pixel budget of 100", MAX_IMAGE_PIXELS_ENV)
def _(w):
    generator = _generator(w)
    with _budget("100"):
        generator.generate(w / "normal/n0.png", [[2, 2, 10, 10]])


@row("I5", ValueError, "`image`", "{ws}/nan.tiff", "NaN")
def _(w):
    _generator(w).generate(_nan_tiff(w / "nan.tiff"), [[2, 2, 10, 10]])


@row("I6", ValueError, "`support_images[0]`", "NaN")
def _(w):
    image = torch.full((3, SIZE, SIZE), 0.5)
    image[0, 1, 1] = float("nan")
    CopyPasteGenerator([image], [w / "support/m0.png"])


@row("I7", ValueError, "{ws}/nan.tiff", "NaN")
def _(w):
    write_bank(_generator(w), [*w.normals(), _nan_tiff(w / "nan.tiff")], w / "bank", **_bank_options())


@row("I8", ValueError, "`image`", "(2, 2, 2, 2)")
def _(w):
    load_image(np.zeros((2, 2, 2, 2), np.float32))


@row("I9", ValueError, "`image`", "channels, got 5")
def _(w):
    load_image(torch.zeros(5, 4, 4))


@row("I10", TypeError, "`image`", "list")
def _(w):
    load_image([[0.5, 0.5]])


@row("I11", ValueError, f"`{MAX_IMAGE_PIXELS_ENV}`", "'lots'")
def _(w):
    with _budget("lots"):
        load_image(w / "normal/n0.png")


@row("I12", ValueError, "`images`", "{ws}/empty")
def _(w):
    (w / "empty").mkdir()
    list_images(w / "empty", name="images")


@row("I13", ValueError, "`image`", "[0, 2]")
def _(w):
    generator = AnomalyGenerator(w.backbone, DefectEmbedding.from_pretrained(w / "embedding"))
    generator.generate(
        torch.full((3, SIZE, SIZE), 2.0).index_fill_(0, torch.tensor([0]), 0.0), [[2, 2, 9, 9]]
    )


# --- masks --------------------------------------------------------------------------------------------------
@row("M1", FileNotFoundError, "`support_masks[0]`", "none.png")
def _(w):
    CopyPasteGenerator([w / "support/d0.png"], [w / "none.png"])


@row("M2", ValueError, "`mask`", "NaN")
def _(w):
    load_mask(torch.tensor([[0.0, float("nan")]]))


@row("M3", ValueError, "`mask`", "negative")
def _(w):
    load_mask(np.array([[0.0, -1.0], [1.0, 0.0]]))


@row("M4", ValueError, "`support_masks[0]`", "empty")
def _(w):
    CopyPasteGenerator([w / "support/d0.png"], [torch.zeros(1, SIZE, SIZE)])


@row("M5", ValueError, "`support_masks[0]`", "`support_images[0]`", "32x32", "16x16")
def _(w):
    CopyPasteGenerator([w / "support/d0.png"], [torch.ones(1, 16, 16)])


@row("M6", ValueError, "`support_masks`", "1 image(s) and 2 mask(s)")
def _(w):
    CopyPasteGenerator([w / "support/d0.png"], [w / "support/m0.png"] * 2)


@row("M7", ValueError, "`mask`", "(1, 1, 4, 4)")
def _(w):
    load_mask(torch.ones(1, 1, 4, 4))


@row("M8", ValueError, "`support_masks[0]`", "empty")
def _(w):
    soft = np.zeros((SIZE, SIZE), np.uint8)
    soft[8:20, 8:20], soft[12:16, 12:16] = 40, 100  # a faint soft mask: nothing above half the range
    Image.fromarray(soft).save(w / "faint.png")
    CopyPasteGenerator([w / "support/d0.png"], [w / "faint.png"])


@row("M9", ValueError, "`rule`", "'smooth'")
def _(w):
    resize_mask(torch.ones(1, 4, 4), 8, rule="smooth")


@row("M10", ValueError, "`size`", "(0, 4)")
def _(w):
    resize_mask(torch.ones(1, 4, 4), (0, 4))


@row("M11", FileNotFoundError, "`region`", "none.png")
def _(w):
    BoxSampler(region=w / "none.png")


# --- boxes --------------------------------------------------------------------------------------------------
@row("B1", ValueError, "`boxes`", "(1, 3)")
def _(w):
    _generator(w).generate(w / "normal/n0.png", [[1, 2, 3]])


@row("B2", ValueError, "`boxes`", "finite", "nan")
def _(w):
    check_boxes([[0, 0, float("nan"), 4]], SIZE, SIZE)


@row("B3", ValueError, "`boxes`", "zero area")
def _(w):
    check_boxes([[4, 4, 4, 9]], SIZE, SIZE)


@row("B4", ValueError, "`boxes`", "outside the image", "width 32")
def _(w):
    _generator(w).generate(w / "normal/n0.png", [[20, 20, 40, 30]])


@row("B5", ValueError, "`width_range`", "(0, 0.5)")
def _(w):
    BoxSampler(width_range=(0, 0.5))


@row("B6", ValueError, "`category`", "'spaceship'")
def _(w):
    BoxSampler.from_table("spaceship", "dent")


@row("B7", ValueError, "BoxSampler", "`min_inside`", "`max_tries`")
def _(w):
    region = torch.zeros(1, SIZE, SIZE)
    region[:, :2, :2] = 1
    BoxSampler(width_range=(0.5, 0.6), height_range=(0.5, 0.6), region=region, max_tries=20).sample(
        (SIZE, SIZE)
    )


@row("B8", ValueError, "`num_boxes`", "0")
def _(w):
    BoxSampler().sample((SIZE, SIZE), 0)


@row("B9", ValueError, "`image`", "(1, 2, 3, 4)")
def _(w):
    BoxSampler().sample(torch.zeros(1, 2, 3, 4))


# --- embeddings ---------------------------------------------------------------------------------------------
@row("E1", FileNotFoundError, "{ws}/embedding-bad", "config.json is missing")
def _(w):
    (_embedding_folder(w) / "config.json").unlink()
    DefectEmbedding.from_pretrained(w / "embedding-bad")


@row("E2", ValueError, "{ws}/embedding-bad/config.json", "not valid JSON")
def _(w):
    DefectEmbedding.from_pretrained(_embedding_folder(w, config='{"placeholder_token": "<spot>",'))


@row("E3", ValueError, "{ws}/embedding-bad/config.json", "JSON object", "list")
def _(w):
    DefectEmbedding.from_pretrained(_embedding_folder(w, config="[1, 2]"))


@row(
    "E4",
    ValueError,
    "{ws}/embedding-bad/learned_embeds.safetensors",
    "not a safetensors file",
    "convert-official",
)
def _(w):
    folder = _embedding_folder(w)
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}}, folder / "learned_embeds.safetensors")
    DefectEmbedding.from_pretrained(folder)


@row("E5", FileNotFoundError, "'nobody/no-such-embedding'", "offline", "local folder")
def _(w):
    DefectEmbedding.from_pretrained("nobody/no-such-embedding", cache_dir=w / "hub", local_files_only=True)


@row("E6", ValueError, "'not a repo!'", "Hub repo id")
def _(w):
    DefectEmbedding.from_pretrained("not a repo!")


@row("E7", ValueError, "learned_embeds.safetensors", "'<other>'", "'<spot>'")
def _(w):
    DefectEmbedding.from_pretrained(_embedding_folder(w, weights={"<other>": torch.zeros(1, 32)}))


@row("E8", ValueError, "{ws}/embedding-bad", "width 32", "16")
def _(w):
    DefectEmbedding.from_pretrained(_embedding_folder(w, weights={"<spot>": torch.zeros(1, 16)}))


@row("E9", ValueError, "{ws}/embedding-bad", "NaN")
def _(w):
    DefectEmbedding.from_pretrained(
        _embedding_folder(w, weights={"<spot>": torch.full((1, 32), float("nan"))})
    )


@row("E10", ValueError, "learned_embeds.safetensors", "holds no tensor")
def _(w):
    DefectEmbedding.from_pretrained(_embedding_folder(w, weights={}))


@row("E11", ValueError, "`vectors`", "(1, 2, 3)")
def _(w):
    DefectEmbedding(torch.zeros(1, 2, 3))


@row("E12", ValueError, "`placeholder_token`", "'two words'")
def _(w):
    DefectEmbedding(torch.zeros(1, 8), "two words")


@row("E13", ValueError, "'<narrow>'", "width 16", "width 32")
def _(w):
    DefectEmbedding(torch.zeros(1, 16), "<narrow>").check_backbone(w.backbone)


# --- backbones ----------------------------------------------------------------------------------------------
@row("K1", ValueError, "{ws}/support", "no model_index.json")
def _(w):
    load_backbone(w / "support")


@row("K2", ValueError, "{ws}/support/d0.png", "is a file")
def _(w):
    load_backbone(w / "support/d0.png")


@row("K3", ValueError, "{ws}/backbone/model_index.json", "not valid JSON")
def _(w):
    load_backbone(_backbone_folder(w, "{unet"))


@row("K4", ValueError, "{ws}/backbone", "unknown backbone layout", "'vae'")
def _(w):
    load_backbone(_backbone_folder(w, {"_class_name": "Other", "unet": ["a", "b"], "vae": ["a", "b"]}))


@row("K5", ValueError, "{ws}/backbone", "cannot load its ldm pipeline components", "unet/")
def _(w):
    layout = {
        "_class_name": "LDMTextToImagePipeline",
        "bert": ["latent_diffusion", "LDMBertModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "tokenizer": ["transformers", "BertTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vqvae": ["diffusers", "AutoencoderKL"],
    }
    load_backbone(_backbone_folder(w, layout))  # the layout without its component folders


@row("K6", FileNotFoundError, "`pretrained_model_name_or_path`", "./no/such/backbone")
def _(w):
    load_backbone("./no/such/backbone")


@row("K7", FileNotFoundError, "'nobody/no-such-backbone'", "offline", "hf download")
def _(w):
    load_backbone("nobody/no-such-backbone")


@row("K8", ValueError, "`init_word`", "'scratch crack'")
def _(w):
    w.backbone.init_vector("scratch crack")


@row("K9", ValueError, "`vectors`", "(n, 32)", "(1, 7)")
def _(w):
    with w.backbone.placed(torch.zeros(1, 7)):
        pass


# --- banks and manifests ------------------------------------------------------------------------------------
@row("N1", FileNotFoundError, "`path`", "{ws}/no-bank", "not an anomaly bank")
def _(w):
    AnomalyBank.open(w / "no-bank")


@row("N2", ValueError, "defect_type='scratch'", "widget/spot")
def _(w):
    AnomalyBank.open(w / "bank", defect_type="scratch")


@row("N3", TypeError, "`bank`", "list")
def _(w):
    AnoGenAugment([1, 2])


@row("N4", FileNotFoundError, "`images`", "{ws}/normal/missing.png")
def _(w):
    write_bank(_generator(w), [*w.normals(), w / "normal/missing.png"], w / "bank", **_bank_options())


@row("N5", ValueError, "`images`", "non-empty")
def _(w):
    write_bank(_generator(w), [], w / "bank", **_bank_options())


@row("N6", ValueError, "`seed`", "'one'")
def _(w):
    write_bank(_generator(w), w.normals(), w / "bank", seed="one", **_bank_options())


@row("N7", ValueError, "`size`", "(0, 8)")
def _(w):
    write_bank(_generator(w), w.normals(), w / "bank", size=(0, 8), **_bank_options())


@row("N8", ValueError, "{ws}/bank-bad/manifest.jsonl", "line 1", "not valid JSON", "verify")
def _(w):
    AnomalyBank.open(_manifest_edit(w, lambda record: "{not json"))


@row("N9", ValueError, "{ws}/bank-bad/manifest.jsonl", "line 1", "'boxes'", "missing")
def _(w):
    AnomalyBank.open(_manifest_edit(w, lambda record: {k: v for k, v in record.items() if k != "boxes"}))


@row("N10", ValueError, "{ws}/bank-bad/manifest.jsonl", "'image'", "inside its folder")
def _(w):
    AnomalyBank.open(_manifest_edit(w, lambda record: {**record, "image": "../../secret.png"}))[0]


@row("N11", ValueError, "{ws}/bank-bad/bank.json", "not valid JSON")
def _(w):
    folder = _manifest_edit(w, lambda record: record)
    (folder / "bank.json").write_text("{")
    AnomalyBank.open(folder)


@row("N12", ValueError, "AnoGenAugment", "Mask", "(8, 8)")
def _(w):
    augment = AnoGenAugment(w / "bank", p=1.0, generator=torch.Generator().manual_seed(0))
    augment(tv_tensors.Image(torch.rand(3, SIZE, SIZE)), tv_tensors.Mask(torch.zeros(8, 8)))


# --- configs ------------------------------------------------------------------------------------------------
@row("G1", ValueError, "`learning_rate`", "-1")
def _(w):
    InversionConfig(learning_rate=-1.0)


@row("G2", ValueError, "`num_inference_steps`", "0")
def _(w):
    GenerationConfig(num_inference_steps=0)


@row("G3", ValueError, "`flip_p`", "1.5")
def _(w):
    PasteConfig(flip_p=1.5)


@row("G4", ValueError, "`blend`", "'soft'")
def _(w):
    PasteConfig(blend="soft")


@row("G5", ValueError, "`tau`", "1.5")
def _(w):
    weak_supervision_mask(torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4), tau=1.5)


@row("G6", ValueError, "`p`", "2")
def _(w):
    AnoGenAugment(w / "bank", p=2)


@row("G7", TypeError, "`config`", "dict")
def _(w):
    CopyPasteGenerator(*w.support(), config={"blend": "hard"})


@row("G8", ValueError, "`min_inside`", "2")
def _(w):
    BoxSampler(min_inside=2)


# --- the command line ---------------------------------------------------------------------------------------
def _paste(w: Workspace, *extra: str) -> None:
    support, masks = w.support()
    cli("generate", "--generator", "paste", "--support-images", *support, "--support-masks", *masks,
        "--images", w / "normal", "--out", w / "bank", "--boxes-per-image", "1", *extra)  # fmt: skip


@row("C1", CliFailed, "{ws}/embedding-bad/learned_embeds.safetensors", "not a safetensors file")
def _(w):
    folder = _embedding_folder(w)
    (folder / "learned_embeds.safetensors").write_bytes(pickle.dumps({"*": [0.0] * 32}))
    cli("generate", "--embedding", folder, "--images", w / "normal", "--out", w / "bank")


@row("C2", CliFailed, "'nobody/no-such-embedding'", "offline")
def _(w):
    cli("generate", "--embedding", "nobody/no-such-embedding", "--images", w / "normal", "--out", w / "bank")


@row("C3", CliFailed, "--support-images[0]", "{ws}/none.png")
def _(w):
    cli("generate", "--generator", "paste", "--support-images", w / "none.png", "--support-masks",
        w / "support/m0.png", "--images", w / "normal", "--out", w / "bank")  # fmt: skip


@row("C4", CliFailed, "`--images`", "{ws}/empty")
def _(w):
    (w / "empty").mkdir()
    cli("generate", "--generator", "paste", "--support-images", *w.support()[0], "--support-masks",
        *w.support()[1], "--images", w / "empty", "--out", w / "bank")  # fmt: skip


@row("C5", CliFailed, "--support-masks")
def _(w):
    cli("generate", "--generator", "paste", "--support-images", *w.support()[0], "--images", w / "normal",
        "--out", w / "bank")  # fmt: skip


@row("C6", CliFailed, "--max-image-pixels", "-1")
def _(w):
    cli("--max-image-pixels", "-1", "show", w / "bank", "--png", w / "sheet.png")


@row("C7", CliFailed, "{ws}/support/d0.png", "pixel budget of 100")
def _(w):
    support, masks = w.support()
    cli("--max-image-pixels", "100", "generate", "--generator", "paste", "--support-images", *support,
        "--support-masks", *masks, "--images", w / "normal", "--out", w / "bank")  # fmt: skip


@row("C8", CliFailed, "{ws}/notes.pt", "not a readable torch file")
def _(w):
    (w / "notes.pt").write_text("these are notes")
    cli("convert-official", w / "notes.pt", "--out", w / "embedding")


@row("C9", CliFailed, "{ws}/no-bank", "not an anomaly bank")
def _(w):
    cli("show", w / "no-bank", "--png", w / "sheet.png")


@row("C10", CliFailed, "--png")
def _(w):
    cli("show", w / "bank")


@row("C11", CliFailed, "./no/such/backbone")
def _(w):
    cli("learn", "--images", *w.support()[0], "--masks", *w.support()[1], "--out", w / "out",
        "--backbone", "./no/such/backbone")  # fmt: skip


@row("C12", CliFailed, "--flip-p", "1.5")
def _(w):
    _paste(w, "--flip-p", "1.5")


@row("C13", CliFailed, "--boxes-per-image", "'x'")
def _(w):
    _paste(w, "--boxes-per-image", "x")


@row("C14", CliFailed, "`--region`", "{ws}/none.png")
def _(w):
    _paste(w, "--region", str(w / "none.png"))


@row("C15", CliFailed, "{ws}/embedding-bad/config.json", "not valid JSON")
def _(w):
    folder = _embedding_folder(w, config="{")
    cli("generate", "--embedding", folder, "--images", w / "normal", "--out", w / "bank")


# --- the tests ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_ldm) -> Workspace:
    """What a user already has: support images and masks, normal images, a bank and an embedding."""
    root = tmp_path_factory.mktemp("bad-inputs")
    image = torch.full((3, SIZE, SIZE), 0.2)
    image[0, 8:20, 10:22] = 1.0
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 8:20, 10:22] = 1
    save_png(image, root / "support/d0.png")
    save_png(mask, root / "support/m0.png")
    for i in range(2):
        noise = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)) * 0.2 + 0.4
        save_png(noise, root / f"normal/n{i}.png")
    workspace = Workspace(root, tiny_ldm)
    write_bank(_generator(workspace), workspace.normals(), root / "bank", **_bank_options())
    vectors = torch.randn(1, tiny_ldm.token_dim, generator=torch.Generator().manual_seed(0))
    DefectEmbedding(vectors, "<spot>", category="widget", defect_type="spot").save_pretrained(
        root / "embedding"
    )
    return workspace


@pytest.fixture
def workspace(pristine, tmp_path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(pristine.root, root)
    return Workspace(root, pristine.backbone)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("key", sorted(ROWS, key=lambda k: (k[0], int(k[1:]))))
def test_bad_input_row(key, workspace):
    error, culprits, action = ROWS[key]
    before = _snapshot(workspace.root)
    with pytest.raises(error) as raised:
        action(workspace)
    message = str(raised.value)
    for culprit in culprits:
        assert culprit.format(ws=workspace.root) in message, f"{key}: {culprit!r} not named in {message!r}"
    if error is CliFailed:
        assert "Traceback" not in message and len(re.findall(r"error:", message)) == 1, message
        assert message.count("\n") == 1 or message.startswith("usage:"), f"{key}: not one line: {message!r}"
    after = _snapshot(workspace.root)
    lost = {name for name, digest in before.items() if after.get(name) != digest}
    assert not lost, f"{key}: already written files lost or changed: {sorted(lost)}"


def test_the_table_lists_exactly_the_tested_rows():
    table = {}
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"[A-Z]\d+", cells[0]):
            table[cells[0]] = cells[3].strip("`")
    tested = {
        key: ("exit code" if error is CliFailed else error.__name__) for key, (error, _, _) in ROWS.items()
    }
    assert set(table) == set(tested), sorted(set(table) ^ set(tested))
    wrong = {key: (table[key], tested[key]) for key in table if not table[key].startswith(tested[key])}
    assert not wrong, f"the table's error type differs from the test's: {wrong}"
    assert len(table) >= 40


def test_verbose_keeps_the_traceback(tmp_path, capsys, caplog):
    assert main(["-v", "show", str(tmp_path / "no-bank"), "--png", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "not an anomaly bank" in err
    assert "Traceback" in err + caplog.text, "-v logs the traceback"
