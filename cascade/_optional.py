"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "cascade-text"  # the name pip knows this package by (it is imported as `cascade`)


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says ``pip install 'cascade-text[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this feature needs {module!r}, which is not installed; "
            f"install it with: pip install '{DISTRIBUTION}[{extra}]' (in a clone: pip install -e '.[{extra}]')"
        ) from exc
