"""The request guard: pure ASGI middleware (no per-request task of Starlette's) that every request passes
before a route sees it.

In order: the API key (401); a server shutting down (503); for routes that take a body, its media type
(415), its declared and actual size (413) and the time it takes to arrive (``body_timeout``: 408), then the
cap on requests being answered (``max_concurrency``: 503). Routes that take no body never read one: a
request that sends one anyway is answered and its connection closed. A body route's work runs as a task
the :class:`~cascade.serving.drain.Drain` can cancel at the end of a shutdown's grace period, and that is
cancelled when its client disconnects; either way it is answered 503, never 500. Every request is counted
in the metrics under its route's path (``other`` for paths no route has).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .drain import Drain
from .metrics import ServiceMetrics
from .responses import CLOSE, RETRY_AFTER, send_json
from .settings import ServeSettings

OPEN_PATHS = ("/healthz", "/readyz")  # no API key needed: orchestrators probe these


@dataclass
class _Exchange:
    """One request's state as the guard sees it."""

    status: int = 500
    close: bool = False  # add Connection: close (a body left unread, a request cut off)
    started: bool = False  # the response has started
    ending: bool = False  # its last part is being sent


class RequestGuard:
    """Wraps the application ``app``; ``body_routes`` are the (method, path) pairs whose body is read,
    ``paths`` every route's path (the metrics' route labels)."""

    def __init__(self, app: Any, *, settings: ServeSettings, metrics: ServiceMetrics, drain: Drain,
                 body_routes: frozenset[tuple[str, str]], paths: frozenset[str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.drain = drain
        self.body_routes = body_routes
        self.paths = paths
        self.answering = 0  # requests whose body is in, being answered
        self._key = settings.api_key.encode() if settings.api_key is not None else None
        metrics.answering.set_function(lambda: self.answering)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ex = _Exchange()

        async def send_tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                if ex.close:
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            elif not message.get("more_body", False):
                ex.ending = True
            await send(message)  # may wait for a slow reader; cancelled there, nothing was written
            if message["type"] == "http.response.start":
                ex.started = True

        try:
            await self._guarded(scope, receive, send_tracked, ex)
        finally:
            path = scope.get("path", "")
            route = path if path in self.paths else "other"
            self.metrics.requests.labels(route, str(ex.status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any, ex: _Exchange) -> None:
        headers = dict(scope.get("headers") or ())
        has_body = headers.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in headers
        reads_body = (scope.get("method"), scope.get("path")) in self.body_routes
        ex.close = has_body  # until the body is read
        if self._key is not None and scope.get("path") not in OPEN_PATHS and not self._authorized(headers):
            await send_json(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            ((b"www-authenticate", b"Bearer"),))
            return
        if self.drain.draining:
            ex.close = True
            await send_json(send, 503, "the server is shutting down; retry on another instance", (RETRY_AFTER,))
            return
        if not reads_body:
            await self.app(scope, _no_body(receive), send)
            return
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            await send_json(send, 415, "send the body as JSON with 'Content-Type: application/json'")
            return
        declared = headers.get(b"content-length", b"").strip().lstrip(b"0") or b"0"
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.settings.max_body_bytes):
            await send_json(send, 413, self._too_large())
            return
        work = asyncio.ensure_future(self._answer(scope, receive, send, ex))
        self.drain.track(work)
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:  # uvicorn's own last resort at shutdown: still 503, never a 500
            work.cancel()
            if not ex.started:
                ex.close = True
                await send_json(send, 503, "the server is shutting down; retry on another instance", (RETRY_AFTER,))
            return
        if work.cancelled():
            await self._cut_off(send, ex)
        else:
            work.result()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the request carries ``Authorization: Bearer <key>`` (the scheme in any case, as HTTP has it)."""
        scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), self._key or b"")

    async def _cut_off(self, send: Any, ex: _Exchange) -> None:
        """Answer a request whose work was cancelled: 503 at the end of a shutdown's grace period; nothing
        when its client is gone (counted as status 499, nginx's "client closed request")."""
        if ex.started:
            return
        if not self.drain.cut:
            ex.status = 499
            return
        ex.close = True
        self.metrics.cut_off.inc()
        await send_json(send, 503, "the server is shutting down and could not finish this request in its grace "
                                   "period; retry on another instance", (RETRY_AFTER,))

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any, ex: _Exchange) -> None:
        body = await self._read_body(receive, send, ex)
        if body is None:
            return
        if self.answering >= self.settings.max_concurrency:
            self.metrics.overloaded.labels("concurrency").inc()
            await send_json(send, 503, f"{self.answering} requests are being answered (limit "
                                       f"{self.settings.max_concurrency}); retry shortly", (RETRY_AFTER,))
            return
        gone = asyncio.Event()
        this = asyncio.current_task()

        async def watch() -> None:  # the client going away cancels the work done for it
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not ex.ending and this is not None:
                this.cancel()

        async def replay() -> dict[str, Any]:
            nonlocal body
            if body is not None:
                message, body = {"type": "http.request", "body": body, "more_body": False}, None
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        self.answering += 1
        watcher = asyncio.ensure_future(watch())
        try:
            await self.app(scope, replay, send)
        finally:
            self.answering -= 1
            watcher.cancel()

    async def _read_body(self, receive: Any, send: Any, ex: _Exchange) -> bytes | None:
        """The whole body, read within ``body_timeout`` and ``max_body_bytes``; None when the request was
        answered instead (408, 413) or its client went away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                await send_json(send, 408, f"the request body did not arrive within {self.settings.body_timeout:g} s")
                return None
            if message["type"] == "http.disconnect":
                ex.status = 499
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                await send_json(send, 413, self._too_large())
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                ex.close = False
                return b"".join(chunks)

    def _too_large(self) -> str:
        return (f"request body over {self.settings.max_body_bytes} bytes; send fewer or shorter texts per "
                "request")


def _no_body(receive: Any) -> Any:
    """A ``receive`` for routes that take no body: an empty one, never read from the client."""
    given = False

    async def empty() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while (message := await receive())["type"] != "http.disconnect":
            pass
        return message  # type: ignore[no-any-return]

    return empty
