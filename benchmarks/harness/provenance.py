"""What every result file records besides its numbers: package versions, git commit and a digest of the
sources, the machine and the command line; and the atomic write of that file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from anogen_aug.atomic import write_text_atomic

from .precision import native_bf16

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("anogen-aug", "torch", "torchvision", "diffusers", "transformers", "anomalib", "numpy", "psutil")
#: The Python sources whose digest identifies the code a result came from (uncommitted changes included).
SOURCES = ("anogen_aug", "integrations", "benchmarks")


def cpu_model() -> str:
    """The CPU model name as `lscpu` prints it (falls back to `platform.processor()`)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def git_commit() -> dict:
    """The checked-out commit and whether the tree has uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def source_digest() -> str:
    """SHA-256 (16 hex) of the library's, integrations' and benchmarks' Python sources."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of `PACKAGES` and ``extra`` (None where not installed)."""
    versions = {}
    for name in (*PACKAGES, *extra):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(*, extra_packages: tuple[str, ...] = ()) -> dict:
    """Package versions, git commit and machine description stored with every result."""
    return {
        "packages": package_versions(extra_packages),
        "python": platform.python_version(),
        "git": {**git_commit(), "source_sha256": source_digest()},
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "native_bf16": native_bf16(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(path: str | os.PathLike, result: dict) -> Path:
    """Write ``result`` plus the environment as JSON, atomically (temp file, fsync, rename)."""
    payload = {**result, "environment": environment()}
    return write_text_atomic(json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n", path)
