"""Shutdown with a bound: once the server is told to stop, requests in flight get ``graceful_seconds`` to
finish; then each is cancelled (its queued stage work with it) and answered 503.

uvicorn's own bound cancels the tasks of requests still running, which answers them 500 and logs a traceback,
and nothing stops the stage work they queued. Here the request guard runs each request's work as a task it
registers with :class:`Drain`; :meth:`Drain.begin` starts the grace period, and at its end every registered
task is cancelled, so the guard answers 503 with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Drain:
    """The requests in flight, and whether the server is stopping (``draining``) or past its grace (``cut``)."""

    def __init__(self) -> None:
        self.draining = False
        self.cut = False
        self.cut_requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.on_cut: list[Callable[[], None]] = []  # also called at the cut (the server closes stalled readers)

    def track(self, task: asyncio.Task[None]) -> None:
        """Cancel ``task`` when the grace period ends (at once, if it has ended)."""
        if self.cut:
            task.cancel()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def begin(self, grace: float) -> None:
        """Start the grace period (the first call counts; call from the event loop)."""
        if self.draining:
            return
        self.draining = True
        if self._tasks:
            log.info("shutting down: %d request(s) in flight get %.1f s to finish", len(self._tasks), grace)
        self._timer = asyncio.get_running_loop().call_later(grace, self._cut)

    def _cut(self) -> None:
        self.cut = True
        pending = [t for t in self._tasks if not t.done()]
        self.cut_requests = len(pending)
        if pending:
            log.warning("shutting down: %d request(s) still in flight after the grace period are cancelled and "
                        "answered 503", len(pending))
        for callback in self.on_cut:  # first: a request waiting on a closed socket then sees it gone
            callback()
        for task in pending:
            task.cancel()
