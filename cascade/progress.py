"""Progress: a bar on a terminal; in logs (stderr a file or a pipe) a line per step and, on long work, a
heartbeat with the count, rate and ETA every ``HEARTBEAT_S`` seconds, so logs never fill with carriage
returns and a long build is never silent."""

from __future__ import annotations

import logging
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


log = logging.getLogger("cascade.progress")
HEARTBEAT_S = 30.0


class _Null:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LoggedBar(tqdm):
    """A tqdm that draws nothing and logs instead: a line when its description changes (a new step, with
    the time since the bar started), at most one every ``HEARTBEAT_S`` seconds while it counts (done,
    rate, ETA), and one at the end of a bar that ran that long."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._desc_seen: str | None = None
        self._logged_at = 0.0
        self._closing = False
        kwargs.update(file=_Null(), mininterval=HEARTBEAT_S, dynamic_ncols=False)
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        self._closing = True
        super().close()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        d = self.format_dict
        desc, n, total, elapsed = d.get("prefix") or "", d["n"], d.get("total"), d["elapsed"]
        if self._desc_seen is None:  # the bar's first draw: nothing done yet, nothing to say
            self._desc_seen = desc
            return True
        of = f"{n:,}/{total:,}" if total else f"{n:,}"
        if desc != self._desc_seen:
            self._desc_seen = desc
            log.info("%s (%s in)", desc, self.format_interval(elapsed))
        elif self._closing:
            if elapsed >= HEARTBEAT_S:
                log.info("%s: %s done in %s", desc, of, self.format_interval(elapsed))
        elif elapsed - self._logged_at >= HEARTBEAT_S:
            rate = d.get("rate") or (n / elapsed if elapsed > 0 else 0.0)
            eta = f", about {self.format_interval((total - n) / rate)} left" if total and rate else ""
            log.info("%s: %s after %s%s", desc, of, self.format_interval(elapsed), eta)
        else:
            return True
        self._logged_at = elapsed
        return True


def progress_bar(iterable: Any = None, *, progress: bool, **options: Any) -> Any:
    """With ``progress`` on: a tqdm bar (rate and ETA) on a terminal; otherwise, when the ``cascade`` logger
    logs INFO (the command line does), a :class:`LoggedBar`. Silent when ``progress`` is off."""
    if progress and stderr_is_terminal():
        return tqdm(iterable, **options)
    if progress and log.isEnabledFor(logging.INFO):
        return LoggedBar(iterable, **options)
    return tqdm(iterable, disable=True, **options)


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
