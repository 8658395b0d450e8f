"""The GPU protocol: weakly supervised DRAEM / DeSTSeg with the paper's settings, through ``anogen-aug train``.

It writes an MVTec-layout copy (symbolic links) of a data set whose test split lacks the seed's support
anomalies, and prints (or, at toy size, runs) the ``anogen-aug generate`` and ``anogen-aug train`` commands.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from anogen_aug.images import load_mask
from anogen_aug.mvtec import read_mvtec, split_support

from .arms import box_sampler_for
from .evaluation import cap


def write_evaluation_layout(folder, train: list[Path], evaluation, out: Path) -> Path:
    """An MVTec-layout copy (symbolic links) of ``folder`` with these train and test images, in ``out``."""
    root = out / folder.category
    if root.exists():
        shutil.rmtree(root)
    links = [(path, root / "train" / "good" / path.name) for path in train]
    for sample in evaluation:
        links.append((sample.image_path, root / "test" / sample.defect_type / sample.image_path.name))
        if sample.mask_path is not None:
            links.append(
                (sample.mask_path, root / "ground_truth" / sample.defect_type / sample.mask_path.name)
            )
    for target, link in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve())
    return out


#: The paper's settings: DRAEM 700 epochs, batch 16; DeSTSeg 5000 steps, batch 32; 256 px; tau 0.9.
PAPER = {
    "draem": ["--epochs", "700", "--batch-size", "16", "--image-size", "256", "--accelerator", "gpu"],
    "destseg": ["--epochs", "5000", "--max-steps", "5000", "--batch-size", "32", "--image-size", "256",
                "--accelerator", "gpu"],
}  # fmt: skip
SMOKE = [
    "--epochs",
    "1",
    "--limit-train-batches",
    "2",
    "--image-size",
    "64",
    "--batch-size",
    "4",
    "--accelerator",
    "cpu",
]


def gpu_protocol_commands(
    folder, support, layout: Path, work: Path, *, smoke: bool, seed: int
) -> list[list[str]]:
    """``anogen-aug generate`` (paste generator, per defect type) and ``anogen-aug train`` per detector."""
    bank = work / "bank"
    commands = []
    for defect_type, samples in support.items():
        sampler = box_sampler_for([load_mask(s.mask_path) for s in samples])
        commands.append([
            "anogen-aug", "generate", "--generator", "paste", "--rotation-range", "0", "0",
            "--support-images", *[str(s.image_path) for s in samples],
            "--support-masks", *[str(s.mask_path) for s in samples],
            "--images", str(layout / folder.category / "train" / "good"), "--out", str(bank),
            "--category", folder.category, "--defect-type", defect_type, "--region", "none",
            "--width-range", *[f"{v:.3f}" for v in sampler.width_range],
            "--height-range", *[f"{v:.3f}" for v in sampler.height_range], "--seed", str(seed),
            *(["--boxes-per-image", "1", "--samples-per-box", "1"] if smoke else []),
        ])  # fmt: skip
    for model in ("draem", "destseg"):
        settings = SMOKE if smoke else PAPER[model]
        if smoke and model == "destseg" and not teacher_cached():
            settings = [
                *settings,
                "--no-pretrained",
            ]  # offline: a random teacher (proves the command, no more)
        commands.append([
            "anogen-aug", "train", "--data", str(layout), "--category", folder.category, "--bank", str(bank),
            "--model", model, "--tau", "0.9", *settings, "--seed", str(seed), "--out", str(work / model),
        ])  # fmt: skip
    return commands


def teacher_cached() -> bool:
    """Whether torchvision's ImageNet ResNet18 (DeSTSeg's teacher) is in the local torch hub cache."""
    from anogen_aug.integrations.anomalib.destseg import imagenet_resnet18_file

    return imagenet_resnet18_file().is_file()


def run_gpu_protocol(args, *, smoke: bool) -> dict:
    """Print (``--gpu-protocol``) or run at toy size (``--smoke-gpu-protocol``) the anomalib commands.

    The test split of the layout the commands read lacks the support anomalies, as in the CPU protocol. The
    smoke run uses KolektorSDD (the last ``--data``), 8 train images, 20 test images, 2 training batches at
    64 px, and a random DeSTSeg teacher when torchvision's ImageNet ResNet18 is not in the local cache.
    """
    folder = read_mvtec(args.data[-1] if smoke else args.data[0])
    seed = args.seeds[0]
    support, evaluation = split_support(folder.test, k=args.k, seed=seed)
    train = cap(list(folder.train), 8, seed=seed) if smoke else list(folder.train)
    evaluation = cap(evaluation, 20, seed=seed) if smoke else evaluation
    work = Path(args.work_dir) / ("gpu-smoke" if smoke else "gpu-protocol") / f"seed{seed}"
    if smoke and work.exists():
        shutil.rmtree(work)
    layout = write_evaluation_layout(folder, train, evaluation, work / "data")
    commands = gpu_protocol_commands(folder, support, layout, work, smoke=smoke, seed=seed)
    outcome = {"commands": [shlex.join(c) for c in commands], "metrics": {}}
    executable = shutil.which("anogen-aug") or str(Path(sys.executable).parent / "anogen-aug")
    for command in commands:
        print(shlex.join(command), flush=True)
        if not smoke:
            continue
        started = time.perf_counter()
        model = command[command.index("--model") + 1] if command[1] == "train" else None
        done = subprocess.run([executable, *command[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"failed ({done.returncode}): {shlex.join(command)}\n{done.stderr[-3000:]}")
        if model is None:
            continue
        metrics = json.loads((work / model / "metrics.json").read_text())
        outcome["metrics"][model] = {
            "metrics": metrics["metrics"],
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        print("  " + json.dumps(metrics["metrics"]), flush=True)
    return outcome
