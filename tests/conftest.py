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


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A tiny MVTec-layout folder holding the category "tiny" (`anomalib_toy.write_mvtec_folder`)."""
    from anomalib_toy import write_mvtec_folder

    return write_mvtec_folder(tmp_path_factory.mktemp("mvtec"))


@pytest.fixture(scope="module")
def bank(data_root, tmp_path_factory):
    """6 crop-and-paste samples of ``data_root``'s anomalies on its normals (`anomalib_toy.write_toy_bank`)."""
    from anomalib_toy import write_toy_bank

    return write_toy_bank(data_root, tmp_path_factory.mktemp("bank"))
