"""Progress bars: on a terminal only, so logs, pipes and CI output never fill with carriage returns."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import (
    tqdm,  # text bars everywhere: tqdm.auto warns in notebooks without ipywidgets
)


def stderr_is_terminal() -> bool:
    """Whether standard error is an open terminal (it may be a file, a pipe, closed or None)."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Any = None, *, progress: bool, **options: Any) -> Any:
    """A tqdm bar (rate and ETA) on stderr when ``progress`` is on and stderr is a terminal; silent otherwise."""
    return tqdm(iterable, disable=not (progress and stderr_is_terminal()), **options)


MIN_TEXTS = 5_000  # fewer texts than this finish too soon for a bar to help
CHUNK = 1024


def map_with_progress(fn: Callable[[list[str]], np.ndarray], texts: list[str], *, desc: str, progress: bool,
                      min_texts: int = MIN_TEXTS, chunk: int = CHUNK) -> np.ndarray:
    """``fn(texts)`` computed ``chunk`` texts at a time behind a bar when there are at least ``min_texts``
    (the same rows as one call: ``fn``'s row for a text must depend on that text only)."""
    if not progress or not texts or len(texts) < min_texts:
        return fn(texts)
    parts = []
    with progress_bar(total=len(texts), desc=desc, unit="text", progress=progress) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(fn(texts[start : start + chunk]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)
