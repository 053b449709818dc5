"""Exceptions raised by cascade."""

from __future__ import annotations

import sys
from collections.abc import Callable


class CascadeError(Exception):
    """Base class of cascade's own errors."""


class BundleError(CascadeError):
    """A bundle folder is missing, incomplete, corrupt, tampered with or of another format version."""


def run_module(main: Callable[[], object]) -> None:
    """Run a ``python -m`` entry point: a refusal (a bad argument, a bundle problem, a missing extra) ends
    the process with one line on stderr and exit status 2, as the ``cascade`` command does, not a traceback."""
    try:
        main()
    except (CascadeError, ValueError, ImportError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
