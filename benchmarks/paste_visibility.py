"""Paste visibility: how many crop-and-paste samples show no defect, or a defect cut along its box edge.

For every shared data set (``/work/shared/data``: magnetic_tile, kolektorsdd, mvtec_3d_ad_rgb/tire), the support
set is `split_support(k=3)` of the test split, one `CopyPasteGenerator` per defect type; ``--images`` normal
train images (each assigned one defect type in turn) get 2 boxes x 2 samples, boxes from the packaged table
(``fallback=True``), the way `write_bank` draws them. Per sample it measures the mask area, the contrast (mean
absolute change inside the mask, 8-bit levels: `anogen_aug.visibility.mask_visibility`'s formula) and whether a
paste was cut (a placed patch lost mask pixels at the box edge). It does so twice: with the code of ``--old``
(default: the commit before issue 12's paste fix, checked out as a git worktree) and with this tree's defaults,
each in its own process (two versions of the package cannot share one). Writes
``benchmarks/results/paste_visibility.json`` and prints a table.

    python -m benchmarks.paste_visibility
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

DATA = Path("/work/shared/data")
DATA_SETS = {
    "magnetic_tile": DATA / "magnetic_tile" / "magnetic_tile",
    "kolektorsdd": DATA / "kolektorsdd" / "kolektorsdd",
    "mvtec_3d_ad_rgb/tire": DATA / "mvtec_3d_ad_rgb" / "tire",
}
OLD_COMMIT = "db1be5c70f52e2d014f5827a1e52f323e3b213ae"  # the paste generator before issue 12's fix
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "paste_visibility.json"


def measure(root: Path, images: int, seed: int = 0) -> dict:
    """Generate ``images`` x 2 x 2 samples on one data set with whichever ``anogen_aug`` is importable."""
    from anogen_aug import paste
    from anogen_aug.boxes import BoxSampler
    from anogen_aug.images import load_image
    from anogen_aug.mvtec import read_mvtec, split_support

    placed_pixels, cuts = [], []
    resize_mask = paste.resize_mask

    def recording_resize_mask(*args, **kwargs):  # the scaled patch mask, before it is put in the box
        result = resize_mask(*args, **kwargs)
        placed_pixels.append(int(result.sum()))
        return result

    paste.resize_mask = recording_resize_mask
    folder = read_mvtec(root)
    support, _ = split_support(folder.test, k=3, seed=seed)
    generators, samplers = {}, {}
    for defect_type, items in sorted(support.items()):
        generator = paste.CopyPasteGenerator([s.image_path for s in items], [s.mask_path for s in items])
        place = generator._place

        def recording_place(*args, _place=place, **kwargs):  # cut: the canvas holds fewer mask pixels
            canvas, canvas_mask = _place(*args, **kwargs)
            cuts.append(int(canvas_mask.sum()) < placed_pixels[-1])
            return canvas, canvas_mask

        generator._place = recording_place
        generators[defect_type] = generator
        samplers[defect_type] = BoxSampler.from_table(folder.category, defect_type, fallback=True)
    types = sorted(generators)
    samples = []
    for i, path in enumerate(folder.train[:images]):
        defect_type = types[i % len(types)]
        source = load_image(path, name=str(path))
        for b in range(2):
            box_generator = torch.Generator().manual_seed(seed * 100_003 + i * 10 + b)
            boxes = samplers[defect_type].sample(source, 1, generator=box_generator)
            for s in range(2):
                del cuts[:]
                result = generators[defect_type].generate(
                    source,
                    boxes,
                    generator=torch.Generator().manual_seed(seed * 100_003 + i * 100 + b * 10 + s),
                )
                inside = result.mask.bool()[0]
                change = (result.image - source).abs().mean(0)  # (H, W)
                area = int(inside.sum())
                contrast = float(change[inside].mean()) * 255 if area else 0.0
                samples.append(
                    {"defect_type": defect_type, "area": area, "contrast": contrast, "cut": any(cuts)}
                )
    return summarise(samples)


def summarise(samples: list[dict]) -> dict:
    n = len(samples)
    share = lambda test: round(sum(map(test, samples)) / n, 4)  # noqa: E731
    return {
        "samples": n,
        "mask_under_10px": share(lambda s: s["area"] < 10),
        "contrast_under_10": share(lambda s: s["contrast"] < 10),
        "contrast_under_5": share(lambda s: s["contrast"] < 5),
        "invisible": share(lambda s: s["area"] < 10 or s["contrast"] < 10),
        "cut": share(lambda s: s["cut"]),
        "median_area": sorted(s["area"] for s in samples)[n // 2],
        "median_contrast": round(sorted(s["contrast"] for s in samples)[n // 2], 2),
    }


def _old_tree(path: Path) -> Path:
    if not (path / "anogen_aug" / "paste.py").is_file():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), OLD_COMMIT], check=True
        )
    return path


def _run_worker(code: Path, name: str, images: int) -> dict:
    """`measure` in a fresh process that imports ``anogen_aug`` from ``code``."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--images", str(images)]
    done = subprocess.run(command, env=env, cwd=code, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="normal images per data set (x 2 boxes x 2)")
    parser.add_argument("--old", type=Path, default=Path("/tmp/anogen-old"), help="tree of the old code")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(DATA_SETS[args.worker], args.images)))
        return
    old = _old_tree(args.old)
    results = {"old_commit": OLD_COMMIT, "images_per_data_set": args.images, "data_sets": {}}
    header = f"{'data set':22} {'code':4} {'n':>4} {'mask<10px':>9} {'contr<10':>8} {'contr<5':>7} {'cut':>6}"
    print(header)
    for name, root in DATA_SETS.items():
        if not root.is_dir():
            print(f"{name:22} missing: {root}")
            continue
        results["data_sets"][name] = {"old": _run_worker(old, name, args.images)}
        results["data_sets"][name]["new"] = _run_worker(ROOT, name, args.images)
        for code, row in results["data_sets"][name].items():
            print(
                f"{name:22} {code:4} {row['samples']:4d} {row['mask_under_10px']:9.1%} "
                f"{row['contrast_under_10']:8.1%} {row['contrast_under_5']:7.1%} {row['cut']:6.1%}"
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
