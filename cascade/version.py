"""The package's version, read from the installed distribution's metadata (pyproject.toml is the one place
it is written); a source tree that was never installed reports ``0+unknown``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "cascade-text"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # run from a source tree without `pip install -e .`
    __version__ = "0+unknown"
