"""Lazy public names of a package: a name's module is imported on first use, so importing the package is cheap.

``import anogen_aug`` must not import diffusers (DataLoader workers that only need `AnoGenAugment` stay light),
and ``anogen_aug.integrations.anomalib`` must import without anomalib until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str,
    exports: dict[str, str],
    namespace: dict[str, Any],
    *,
    extras: tuple[str, ...] = (),
    hint: str = "",
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` for ``exports`` (name -> submodule).

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the submodule (relative to ``package``) that defines it.
        namespace: The package's ``globals()``; a name is cached there after its first use.
        extras: Top-level modules of an optional extra; failing to import one raises ``ImportError(hint)``.
        hint: What to install, e.g. ``"needs anomalib: pip install 'anogen-aug[anomalib]'"``.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(f".{exports[name]}", package)
        except ImportError as error:
            if (error.name or "").split(".")[0] not in extras:
                raise
            raise ImportError(f"{package}.{name} {hint}") from error
        value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
