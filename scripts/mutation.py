"""Targeted mutation check of the core math: each mutant must make a test fail ("killed").

Every mutant replaces one exact line fragment of the library (the script refuses to run if a fragment is no
longer found, so it cannot silently test nothing), runs the tests that guard that line, and restores the file.
The result table is written to ``scripts/mutation_results.md`` (and printed).

    .venv/bin/python scripts/mutation.py            # all mutants (about 10 minutes on 2 cores)
    .venv/bin/python scripts/mutation.py blend      # the mutants whose name contains "blend"

Not part of ``.ci/run``: each mutant re-runs a slice of the test suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "mutation_results.md"

STAGE2 = ["tests/test_sampling.py", "tests/test_stage2_reference.py", "tests/test_generation.py"]
STAGE1 = ["tests/test_inversion.py", "tests/test_inversion_step.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTANTS = [
    # stage 2: the per-step blend of the noised background (AnoGen §3.2)
    Mutant("blend deleted", "anogen_aug/sampling.py",
           "return keep * scheduler.add_noise(known_latents, noise, timestep) + (1 - keep) * latents",
           "return latents", tuple(STAGE2)),
    Mutant("blend without noise", "anogen_aug/sampling.py",
           "return keep * scheduler.add_noise(known_latents, noise, timestep) + (1 - keep) * latents",
           "return keep * known_latents + (1 - keep) * latents", tuple(STAGE2)),
    Mutant("blend keep inverted", "anogen_aug/sampling.py",
           "return keep * scheduler.add_noise(known_latents, noise, timestep) + (1 - keep) * latents",
           "return (1 - keep) * scheduler.add_noise(known_latents, noise, timestep) + keep * latents",
           tuple(STAGE2)),
    # stage 2: classifier-free guidance
    Mutant("guidance: conditional only", "anogen_aug/sampling.py",
           "return eps_uncond + guidance_scale * (eps_cond - eps_uncond)", "return eps_cond", tuple(STAGE2)),
    Mutant("guidance: scale dropped", "anogen_aug/sampling.py",
           "return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
           "return eps_uncond + (eps_cond - eps_uncond)", tuple(STAGE2)),
    Mutant("guidance: sign flipped", "anogen_aug/sampling.py",
           "return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
           "return eps_uncond - guidance_scale * (eps_cond - eps_uncond)", tuple(STAGE2)),
    # stage 2: the DDIM update
    Mutant("DDIM update skipped", "anogen_aug/sampling.py",
           "return scheduler.step(eps, timestep, latents, eta=eta, variance_noise=variance_noise).prev_sample",
           "return scheduler.step(eps, timestep, latents, eta=eta, variance_noise=variance_noise).pred_original_sample",
           tuple(STAGE2)),
    Mutant("DDIM eta ignored", "anogen_aug/sampling.py",
           "return scheduler.step(eps, timestep, latents, eta=eta, variance_noise=variance_noise).prev_sample",
           "return scheduler.step(eps, timestep, latents, eta=0.0).prev_sample", tuple(STAGE2)),
    # stage 2: the exact-background paste-back
    Mutant("paste-back: whole window", "anogen_aug/generation/generator.py",
           "final = torch.where(replaced, quantize(placed), image)", "final = quantize(placed)", tuple(STAGE2)),
    Mutant("paste-back: known latents not restored", "anogen_aug/generation/generator.py",
           "latents = paste_known_region(latents, z0, keep)", "latents = latents", tuple(STAGE2)),
    # stage 1: the masked loss and its latent mask
    Mutant("stage-1 loss: mask dropped", "anogen_aug/inversion/step.py",
           "squared = (prediction - target) ** 2 * mask", "squared = (prediction - target) ** 2 + 0 * mask",
           tuple(STAGE1)),
    Mutant("stage-1 loss: mask inverted", "anogen_aug/inversion/step.py",
           "squared = (prediction - target) ** 2 * mask", "squared = (prediction - target) ** 2 * (1 - mask)",
           tuple(STAGE1)),
    Mutant("latent mask: majority instead of any overlap", "anogen_aug/inversion/step.py",
           'rule="overlap"', 'rule="majority"', tuple(STAGE1)),
    Mutant("latent mask rule: any overlap dropped", "anogen_aug/masks.py",
           'return (F.interpolate(mask.float(), size=size, mode="bilinear") != 0).float()',
           'return (F.interpolate(mask.float(), size=size, mode="bilinear") > 0.5).float()',
           ("tests/test_masks.py", *STAGE1)),
    # detector training: the tau mask
    Mutant("tau mask: comparison flipped", "anogen_aug/losses.py",
           "confident_normal = prob_normal.detach() >= tau", "confident_normal = prob_normal.detach() < tau",
           ("tests/test_losses.py",)),
    Mutant("tau mask: strict comparison", "anogen_aug/losses.py",
           "confident_normal = prob_normal.detach() >= tau", "confident_normal = prob_normal.detach() > tau",
           ("tests/test_losses.py",)),
    # stage 1: each row's text is the template drawn for it
    Mutant("stage-1 template: always the first", "anogen_aug/inversion/step.py",
           "prompt_ids[choice.to(prompt_ids.device)]",
           "prompt_ids[torch.zeros_like(choice).to(prompt_ids.device)]", tuple(STAGE1)),
    Mutant("stage-1 template: rows swapped", "anogen_aug/inversion/step.py",
           "prompt_ids[choice.to(prompt_ids.device)]", "prompt_ids[choice.flip(0).to(prompt_ids.device)]",
           tuple(STAGE1)),
    # the transform's alpha blend
    Mutant("transform blend: alpha ignored", "anogen_aug/transforms.py",
           "blended = image.float() * (1 - alpha) + content * top * alpha",
           "blended = content * top + 0 * image.float()", ("tests/test_transforms.py", "tests/test_transform_blend.py")),
    Mutant("transform blend: alpha inverted", "anogen_aug/transforms.py",
           "blended = image.float() * (1 - alpha) + content * top * alpha",
           "blended = image.float() * alpha + content * top * (1 - alpha)", ("tests/test_transforms.py", "tests/test_transform_blend.py")),
]  # fmt: skip


def run(mutant: Mutant) -> tuple[bool, float]:
    """Apply ``mutant``, run its tests, restore the file; return (killed, seconds)."""
    path = ROOT / mutant.path
    source = path.read_text()
    if source.count(mutant.original) != 1:
        raise SystemExit(
            f"{mutant.name}: the fragment to mutate is not found once in {mutant.path}; update the list"
        )
    started = time.perf_counter()
    try:
        path.write_text(source.replace(mutant.original, mutant.mutated))
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(source)
    return result.returncode != 0, time.perf_counter() - started


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or any(word in m.name for word in argv)]
    rows = []
    for mutant in chosen:
        killed, seconds = run(mutant)
        rows.append((mutant, killed))
        print(f"{'KILLED ' if killed else 'SURVIVED'} {seconds:6.1f} s  {mutant.name}", flush=True)
    table = ["| mutant | file | line | becomes | result |", "|---|---|---|---|---|"]
    table += [
        f"| {m.name} | `{m.path}` | `{m.original}` | `{m.mutated}` | {'killed' if k else '**survived**'} |"
        for m, k in rows
    ]
    survived = [m.name for m, k in rows if not k]
    summary = f"{len(rows) - len(survived)} of {len(rows)} mutants killed"
    if not argv:
        RESULTS.write_text(
            "# Mutation check of the core math\n\n"
            f"`python scripts/mutation.py` on {time.strftime('%Y-%m-%d')}: {summary}.\n\n"
            + "\n".join(table)
            + "\n"
        )
    print(summary)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
