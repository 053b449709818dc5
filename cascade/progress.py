"""Progress bars: on a terminal only, so logs, pipes and CI output never fill with carriage returns."""

from __future__ import annotations

from typing import Any

from tqdm import (
    tqdm,  # text bars everywhere: tqdm.auto warns in notebooks without ipywidgets
)


def progress_bar(iterable: Any = None, *, progress: bool, **options: Any) -> Any:
    """A tqdm bar (rate and ETA) on stderr when ``progress`` is on and stderr is a terminal; silent otherwise."""
    return tqdm(iterable, disable=None if progress else True, **options)
