"""The authors' released embeddings: a faithful replica of their torch-1.x CUDA pickle, read without trust.

The replica reproduces what the released ``DIFFUSION/logs/<category>_<defect>/embeddings.pt`` files hold: a torch
zip archive whose records sit under ``archive/`` (what torch 1.x wrote), ``data.pkl`` at pickle protocol 2, a dict
with ``string_to_token`` ``{"*": int64 scalar}`` and ``string_to_param`` a ``ParameterDict`` pickled with
NEWOBJ + BUILD from a torch-1.x module ``__dict__`` with no ``_keys``, every storage tagged ``cuda:0``.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from collections import OrderedDict

import pytest
import torch

from anogen_aug import convert_official
from anogen_aug.cli import main
from anogen_aug.official import convert_official_folder, split_folder_name


def torch1_parameter_dict(params: dict[str, torch.nn.Parameter]) -> torch.nn.ParameterDict:
    """A ParameterDict whose ``__dict__`` is what torch 1.x pickled (NEWOBJ + BUILD with this state)."""
    module = torch.nn.ParameterDict()
    module.__dict__.clear()
    module.__dict__.update(
        {
            "training": True,
            "_parameters": OrderedDict(params),
            "_buffers": OrderedDict(),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_is_full_backward_hook": None,
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": OrderedDict(),
            "_initialized": True,
        }
    )  # no "_keys": torch 1.x's ParameterDict had none
    return module


def write_authors_file(path, *, dim: int = 1280, seed: int = 0, payload=None) -> torch.Tensor:
    """Write a replica of an authors' embeddings.pt; return the vector it holds."""
    vector = torch.randn(1, dim, generator=torch.Generator().manual_seed(seed))
    if payload is None:
        payload = {
            "string_to_token": {"*": torch.tensor(265)},
            "string_to_param": torch1_parameter_dict({"*": torch.nn.Parameter(vector.clone())}),
        }
    buffer = io.BytesIO()  # a file object: torch names the records "archive/", as torch 1.x did
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"  # the storages of a CUDA machine
    try:
        torch.save(payload, buffer, pickle_protocol=2)
    finally:
        torch.serialization.location_tag = original
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return vector


def test_the_replica_is_faithful(tmp_path):
    path = tmp_path / "bottle_broken_large" / "embeddings.pt"
    write_authors_file(path)
    with zipfile.ZipFile(path) as archive:
        assert "archive/data.pkl" in archive.namelist()
        data = archive.read("archive/data.pkl")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ops[0] == ("PROTO", 2)
    assert ("GLOBAL", "torch.nn.modules.container ParameterDict") in ops
    assert "NEWOBJ" in {name for name, _ in ops} and "BUILD" in {name for name, _ in ops}
    assert b"cuda:0" in data and b"_keys" not in data
    with pytest.raises(AttributeError, match="_keys"):  # what the previous converter met on real files
        assert "*" in torch.load(path, map_location="cpu", weights_only=False)["string_to_param"]


def test_authors_file_converts_without_trust_pickle(tmp_path):
    path = tmp_path / "logs" / "bottle_broken_large" / "embeddings.pt"
    expected = write_authors_file(path)
    embedding = convert_official(path)
    assert torch.equal(embedding.vectors, expected)
    assert (embedding.category, embedding.defect_type) == ("bottle", "broken_large")
    assert embedding.backbone == "CompVis/ldm-text2im-large-256" and embedding.dim == 1280
    assert embedding.placeholder_token == "<bottle-broken_large>"


def test_a_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "logs" / "bottle_broken_large" / "embeddings.pt"
    write_authors_file(path, payload={"string_to_param": Exploit()})
    with pytest.raises(ValueError, match="system"):
        convert_official(path)
    assert not marker.exists()


def test_other_files_are_refused_with_the_file_named(tmp_path):
    other = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="string_to_param"):
        convert_official(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt"):
        convert_official(garbage)
    with pytest.raises(FileNotFoundError):
        convert_official(tmp_path / "missing.pt")
    live = tmp_path / "live" / "embeddings.pt"  # a file of today's torch reads the same way
    live.parent.mkdir()
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.ones(1, 8))})}, live)
    assert convert_official(live).dim == 8


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bottle_broken_large", ("bottle", "broken_large")),
        ("metal_nut_color", ("metal_nut", "color")),
        ("pcb1_missing", ("pcb1", "missing")),
        ("candle_chunk_of_wax_missing", ("candle", "chunk_of_wax_missing")),
        ("plain", (None, None)),
    ],
)
def test_folder_names_split_against_the_box_table(name, expected):
    assert split_folder_name(name) == expected


def test_a_whole_logs_folder_converts_and_failures_are_reported(tmp_path):
    logs = tmp_path / "logs"
    write_authors_file(logs / "bottle_broken_large" / "embeddings.pt", seed=1)
    write_authors_file(logs / "metal_nut_color" / "embeddings.pt", seed=2)
    (logs / "zipper_broken_teeth").mkdir()
    (logs / "zipper_broken_teeth" / "embeddings.pt").write_bytes(b"truncated")
    report = convert_official_folder(logs, tmp_path / "out", progress=False)
    assert sorted(report.converted) == ["bottle_broken_large", "metal_nut_color"]
    assert list(report.failed) == ["zipper_broken_teeth"]
    config = json.loads((tmp_path / "out" / "metal_nut_color" / "config.json").read_text())
    assert (config["category"], config["defect_type"]) == ("metal_nut", "color")
    card = (tmp_path / "out" / "metal_nut_color" / "README.md").read_text()
    for needed in ("CompVis/ldm-text2im-large-256", "metal_nut", "color", "gaobb/AnoGen", "2505.09263"):
        assert needed in card


def test_convert_official_command_takes_a_file_or_a_folder(tmp_path, capsys):
    logs = tmp_path / "logs"
    write_authors_file(logs / "hazelnut_crack" / "embeddings.pt")
    write_authors_file(logs / "hazelnut_hole" / "embeddings.pt")
    assert (
        main(
            [
                "convert-official",
                str(logs / "hazelnut_crack" / "embeddings.pt"),
                "--out",
                str(tmp_path / "one"),
            ]
        )
        == 0
    )
    assert (tmp_path / "one" / "learned_embeds.safetensors").is_file()
    assert main(["convert-official", str(logs), "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["hazelnut_crack", "hazelnut_hole"]
    assert "converted 2, failed 0" in capsys.readouterr().out
