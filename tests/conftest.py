"""Shared fixtures: tiny offline backbones (both families) and small images. Nothing here touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(os.environ.get("ANOGEN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_ldm():
    from anogen_aug.testing import tiny_backbone

    return tiny_backbone("ldm", seed=0)


@pytest.fixture(scope="session")
def tiny_sd():
    from anogen_aug.testing import tiny_backbone

    return tiny_backbone("sd", seed=0)


@pytest.fixture(params=["ldm", "sd"])
def backbone(request):
    """A tiny backbone of each family (built once per session per family)."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA
