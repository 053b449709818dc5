"""The connection guard: time limits and a slot table under uvicorn's HTTP protocol, so that clients who
connect and then send (or read) slowly, or not at all, cannot hold the server.

uvicorn limits none of this itself: a connection that sends half a request head waits forever, and its
``limit_concurrency`` counts such connections, so a thousand idle sockets turn every real request into a
503. The guard follows each connection through the HTTP parser's own events (message begun, headers
complete, message complete) and the application's answers, so it knows at every moment which phase the
connection is in:

* ``IDLE``: no byte of a request yet (new, or kept alive after an answer): closed after ``idle_timeout``;
* ``HEAD``: the request line and headers are arriving, from the first byte (blank lines before a request
  included): 408 and closed after ``header_timeout``, 431 and closed past ``max_head_bytes``;
* ``BODY``: the headers are in and the body is arriving (the request guard's ``body_timeout`` applies);
* ``BUSY``: the request is being answered;
* ``STALLED``: an answer is waiting for the client to read it (the socket's send buffer is full): closed
  after ``send_timeout``, and at once when a shutdown's grace period ends;
* ``LINGER``: answered and closing while the client may still be sending (below).

At most ``max_connections`` are open. When a new one arrives and all slots are taken, one that is not being
answered is closed to make room: a lingering one first, else the one that has gone longest without progress
(an idle connection since its last answer, a head since its first byte, a body since its last byte, a stalled
answer since it stalled). A client that sends its request at once is never that one, so slow clients lose
their slots to it. Only if every connection is being answered does the new one get 503.

A connection closed by the server while its client is still sending (an answer given before the body was
read: 401, 408, 413, 431, a probe sent a body, a refused connection) would otherwise be reset, and the client
could lose the answer. It *lingers* instead, as nginx's lingering close does: the answer is sent, the write
side is shut, and what the client still sends is read and dropped for at most ``LINGER_SECONDS``.

The guard subclasses uvicorn's httptools protocol: it extends :class:`asyncio.Protocol`'s methods and the
httptools parser callbacks (each calls uvicorn's own first), hands uvicorn a transport whose ``close``
lingers, and wraps the application the protocol calls.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from .responses import raw_response

log = logging.getLogger(__name__)

LINGER_SECONDS = 2.0


class Phase(enum.IntEnum):
    LINGER = 0
    IDLE = 1
    HEAD = 2
    BODY = 3
    STALLED = 4
    BUSY = 5


class _Parse(enum.Enum):
    """Where the HTTP parser is in the connection's byte stream."""

    BETWEEN = 0  # no message under way
    HEAD = 1
    BODY = 2


class ConnectionGuard:
    """The open connections, their phases and deadlines; ``on_close(reason)`` is told of every connection the
    guard closes (reasons: ``idle``, ``header_timeout``, ``head_too_large``, ``send_timeout``, ``replaced``,
    ``refused``, ``shutdown``)."""

    def __init__(self, *, max_connections: int, idle_timeout: float, header_timeout: float, send_timeout: float,
                 max_head_bytes: int, on_close: Callable[[str], None] | None = None) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.max_head_bytes = max_head_bytes
        self.on_close = on_close
        self._open: dict[Any, None] = {}  # insertion-ordered set of guarded protocols

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Any) -> bool:
        """Take ``conn`` into the table, closing another connection if the table is full; False when every
        connection is being answered (the caller refuses ``conn``)."""
        if len(self._open) >= self.max_connections:
            waiting = [c for c in self._open if c.phase != Phase.BUSY]
            if not waiting:
                return False
            min(waiting, key=lambda c: (c.phase != Phase.LINGER, c.since)).drop("replaced")
        self._open[conn] = None
        return True

    def forget(self, conn: Any) -> None:
        self._open.pop(conn, None)

    def closed(self, reason: str) -> None:
        if self.on_close is not None:
            self.on_close(reason)

    def abort_stalled(self) -> None:
        """Close every connection whose answer waits for its client to read it (at a shutdown's cut)."""
        for conn in [c for c in self._open if c.phase == Phase.STALLED]:
            conn.drop("shutdown")


class _LingeringTransport:
    """The transport uvicorn sees: everything passes through, but ``close`` asks the connection (which
    lingers if its client may still be sending), and writes to a closing socket are dropped."""

    def __init__(self, transport: Any, conn: Any) -> None:
        self._transport = transport
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if not self.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._conn.close_politely()

    def is_closing(self) -> bool:
        return bool(self._conn.phase == Phase.LINGER or self._transport.is_closing())


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's httptools protocol whose connections ``guard`` keeps in check."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedConnection(HttpToolsProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.phase = Phase.IDLE
            self.since = time.monotonic()
            self._real: Any = None  # the socket's own transport
            self._timer: asyncio.TimerHandle | None = None
            self._parse = _Parse.BETWEEN
            self._junk = False  # bytes (blank lines) arrived before the parser began a message
            self._head_bytes = 0
            self._heads = 0  # request heads parsed so far
            self._answering = 0  # requests the application is answering
            self._received = 0  # requests read to their end
            self._answered = 0  # requests the application has finished with
            self._write_paused = False
            self._lingering = False
            self._peer_done = False  # the client shut its write side while a request was being answered
            self._admitted = False
            inner: Any = self.app  # type: ignore[has-type]  # every request of this connection goes through it

            async def tracked(scope: dict[str, Any], receive: Any, send: Any) -> None:
                self._answering += 1
                self._settle()
                try:
                    await inner(scope, receive, send)
                finally:
                    self._answering -= 1
                    self._answered += 1
                    self._settle()
                    if self._peer_done and self._answered >= self._received:
                        self.close_politely()

            self.app = tracked

        # asyncio.Protocol

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            self._real = transport
            super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
            if not guard.admit(self):
                log.warning("refused a connection: all %d connections are being answered (--max-connections)",
                            guard.max_connections)
                self.drop("refused", raw_response(503, "every connection is being answered; retry shortly",
                                                  retry=True), linger=True)
                return
            self._admitted = True
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return  # the answer is sent: what the client still sends is dropped
            if self._parse == _Parse.BETWEEN and not self._junk:
                self._junk, self._head_bytes = True, 0  # a head begins (the parser skips blank lines first)
            if self._in_head():
                room = guard.max_head_bytes - self._head_bytes
                if len(data) > room:
                    heads = self._heads
                    first, data = data[:room], data[room:]
                    self._head_bytes += len(first)
                    super().data_received(first)
                    if self._real.is_closing() or self._lingering:
                        return
                    if self._heads == heads and self._in_head():
                        self.drop("head_too_large", raw_response(
                            431, f"request line and headers over {guard.max_head_bytes} bytes"), linger=True)
                        return
                else:
                    self._head_bytes += len(data)
            super().data_received(data)
            self._settle()

        def eof_received(self) -> bool | None:  # type: ignore[override]
            if self._lingering:
                self._real.close()
                return None
            if self._received > self._answered and self._parse == _Parse.BETWEEN:  # answer what came, then close
                self._peer_done = True
                return True
            return super().eof_received()  # type: ignore[no-any-return]

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            guard.forget(self)
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            self._write_paused = True
            self._settle()

        def resume_writing(self) -> None:
            super().resume_writing()
            self._write_paused = False
            self._settle()

        # httptools parser callbacks

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._parse = _Parse.HEAD
            self._settle()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._parse, self._junk = _Parse.BODY, False
            self._heads += 1
            self._settle()

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self.since = time.monotonic()  # a body is judged by its progress

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._received += 1
            self._parse, self._junk = _Parse.BETWEEN, False
            self._settle()

        # the guard's own

        def _in_head(self) -> bool:
            return self._parse == _Parse.HEAD or (self._parse == _Parse.BETWEEN and self._junk)

        def _settle(self) -> None:
            """Derive the phase from the parser's and the application's state; on a change, rearm its timer."""
            if self._lingering:
                phase = Phase.LINGER
            elif self._write_paused:
                phase = Phase.STALLED
            elif self._in_head():
                phase = Phase.HEAD
            elif self._parse == _Parse.BODY:
                phase = Phase.BODY
            elif self._answering:
                phase = Phase.BUSY
            else:
                phase = Phase.IDLE
            if phase != self.phase:
                self.phase = phase
                self.since = time.monotonic()
                self._arm()

        def _arm(self) -> None:
            self._cancel_timer()
            if self._real is None or self._real.is_closing():
                return
            if self.phase == Phase.LINGER:
                self._timer = self.loop.call_later(LINGER_SECONDS, self._real.close)
            elif not self._admitted:
                return
            elif self.phase == Phase.IDLE:
                self._timer = self.loop.call_later(guard.idle_timeout, self.drop, "idle")
            elif self.phase == Phase.HEAD:
                self._timer = self.loop.call_later(guard.header_timeout, self.drop, "header_timeout", raw_response(
                    408, f"the request's headers did not arrive within {guard.header_timeout:g} s"), True)
            elif self.phase == Phase.STALLED:
                self._timer = self.loop.call_later(guard.send_timeout, self.drop, "send_timeout")

        def drop(self, reason: str, answer: bytes | None = None, linger: bool = False) -> None:
            """Close the connection, after writing ``answer`` if there is one; ``linger``: politely."""
            if self._real is None or self._real.is_closing() or self._lingering:
                return
            guard.closed(reason)
            if answer is not None and not self._write_paused:
                self._real.write(answer)
            if linger and not self._write_paused:
                self.close_politely(force=True)
            else:
                self._cancel_timer()
                guard.forget(self)
                if self._write_paused:  # nothing more can be written: no point waiting to flush
                    self._real.abort()
                else:
                    self._real.close()

        def close_politely(self, force: bool = False) -> None:
            """Close; if the client may still be sending (or ``force``), shut the write side and drop what it
            sends for at most ``LINGER_SECONDS`` first, so it reads the answer instead of a reset."""
            real = self._real
            if real is None or real.is_closing() or self._lingering:
                return
            if not (force or self._in_head() or self._parse == _Parse.BODY) or not real.can_write_eof():
                self._cancel_timer()
                guard.forget(self)
                real.close()
                return
            self._lingering = True
            real.write_eof()
            real.resume_reading()
            self._settle()

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    return GuardedConnection
