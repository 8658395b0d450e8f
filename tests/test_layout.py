"""The layout promises of the redesign, checked so they cannot rot: room sizes, boundaries, public seams.

- Modules of about 300 lines and functions of about 60 at most (shared/STYLE.md; a story function reads as
  numbered steps and may be the one long function of its module).
- The core never imports anomalib or kornia; reading an embedding or applying the transform never imports
  diffusers (each checked in a fresh interpreter).
- Tests and benchmarks use only public names of the library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [*sorted((ROOT / "anogen_aug").rglob("*.py")), *sorted((ROOT / "integrations").rglob("*.py"))]
MAX_MODULE_LINES = 330
MAX_FUNCTION_LINES = 70


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_rooms_have_a_readable_size(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines; split it by concept"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in _functions(ast.parse("\n".join(lines)))
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions past {MAX_FUNCTION_LINES} lines: {long}"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "anogen_aug":
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [f"{node.module}: {p}" for p in parts if p.startswith("_") and not p.startswith("__")]
    return found


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_tests_and_benchmarks_use_only_public_names(folder):
    found = {str(p.relative_to(ROOT)): _private_imports(p) for p in sorted((ROOT / folder).rglob("*.py"))}
    assert not {k: v for k, v in found.items() if v}


def _imported_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_the_core_never_imports_anomalib_or_kornia():
    modules = [p for p in sorted((ROOT / "anogen_aug").rglob("*.py")) if "integrations" not in p.parts]
    imports = "\n".join(
        "import " + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in modules
        if p.name != "__main__.py"
    )
    assert not _imported_after(imports) & {"anomalib", "kornia", "lightning"}


def test_the_transform_and_the_embedding_never_import_diffusers():
    code = "from anogen_aug import AnoGenAugment, AnomalyBank, DefectEmbedding, WeakSupervisionLoss"
    assert not _imported_after(code) & {"diffusers", "transformers"}


def test_every_subpackage_ships_in_the_wheel():
    """pyproject's explicit package list (needed for the integrations/ mapping) names every folder with code."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = {
        ".".join(("anogen_aug", *p.parent.relative_to(ROOT / "anogen_aug").parts)).rstrip(".")
        for p in (ROOT / "anogen_aug").rglob("__init__.py")
    }
    found |= {
        ".".join(("anogen_aug", *p.parent.relative_to(ROOT).parts))
        for p in (ROOT / "integrations").rglob("__init__.py")
    }
    assert listed == found
