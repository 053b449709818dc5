"""The connection guard: time limits and a slot table under uvicorn's HTTP protocol, so that clients who
connect and then send (or read) slowly, or not at all, cannot hold the server.

uvicorn limits none of this itself: a connection that sends half a request head waits forever, and its
``limit_concurrency`` counts such connections, so a thousand idle sockets turn every real request into a
503. The guard runs under uvicorn's h11 protocol, which reads one request at a time (a pipelined request
waits in a buffer, unparsed, until the one before it is answered: no queue of parsed requests grows with
what a client sends), and reads each connection's phase off h11's own state:

* ``IDLE``: no byte of a request yet (new, or kept alive after an answer): closed after ``idle_timeout``;
* ``HEAD``: the request line and headers are arriving, from their first byte: 408 and closed after
  ``header_timeout``, 431 and closed past ``max_head_bytes`` (a pipelined head is measured too, when its
  turn comes);
* ``BODY``: the headers are in and the body is arriving (the request guard's ``body_timeout`` applies);
* ``BUSY``: the request is in and being answered;
* ``STALLED``: an answer waits for the client to read it (the send buffer is full): closed after
  ``send_timeout``, and at once when a shutdown's grace period ends;
* ``CLOSING``: the server is closing it (below).

At most ``max_connections`` are open. When a new one arrives and all slots are taken, one that is not being
answered is closed at once to make room: a closing one first, else the one that has gone longest without
progress (an idle connection since its last answer, a head since its first byte, a body since its last
byte, a stalled answer since it stalled). A client that sends its request at once is never that one, so
slow clients lose their slots to it. Only if every connection is being answered does the new one get 503.

A connection the server closes while its client may still be sending (an answer given before the body was
read: 401, 408, 413, 431, a probe sent a body, a refused connection) would otherwise be reset, and the client
could lose the answer. It *lingers* instead, as nginx's lingering close does: the answer is sent, the write
side shut, and what the client still sends is dropped for at most ``LINGER_SECONDS``. A closing connection
whose answer the client never reads is aborted after ``send_timeout``: a close never waits on a client.

The guard subclasses uvicorn's h11 protocol and extends only :class:`asyncio.Protocol`'s methods and two of
uvicorn's hooks (``handle_events``, ``on_response_complete``), each calling uvicorn's own first; uvicorn sees
a transport whose ``close`` goes through the guard.
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
HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
MAX_REFUSED_LINGERING = 64  # beyond this, a refused connection is closed at once (its descriptors are bounded)


class Phase(enum.Enum):
    CLOSING = "closing"
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    STALLED = "stalled"
    BUSY = "busy"


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
        self.hard = False  # past a shutdown's grace period: nothing lingers any more
        self.refused_lingering = 0  # refused connections still open
        self._open: dict[Any, None] = {}  # insertion-ordered set of guarded connections

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Any) -> bool:
        """Take ``conn`` into the table, closing another connection at once if the table is full; False when
        every connection is being answered (the caller refuses ``conn``)."""
        if len(self._open) >= self.max_connections:
            waiting = [c for c in self._open if c.phase != Phase.BUSY]
            if not waiting:
                return False
            victim = min(waiting, key=lambda c: (c.phase != Phase.CLOSING, c.since))
            victim.abort("replaced")
        self._open[conn] = None
        return True

    def forget(self, conn: Any) -> None:
        self._open.pop(conn, None)

    def closed(self, reason: str) -> None:
        if self.on_close is not None:
            self.on_close(reason)

    def cut(self) -> None:
        """A shutdown's grace period is over: close every connection that is waiting on its client."""
        self.hard = True
        for conn in [c for c in self._open if c.phase in (Phase.STALLED, Phase.CLOSING)]:
            conn.abort("shutdown")


class _GuardedTransport:
    """The transport uvicorn sees: everything passes through, but ``close`` goes through the connection (which
    may linger), and writes to a closing socket are dropped."""

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
        return bool(self._conn.phase == Phase.CLOSING or self._transport.is_closing())


class _GuardedConnection:
    """The guard's part of a connection: mixed into uvicorn's h11 protocol by :func:`guarded_protocol`, which
    sets ``guard`` and ``h11`` (imported there: uvicorn and h11 come with the [serve] extra). Its calls to
    ``super()`` reach the h11 protocol."""

    guard: ConnectionGuard
    h11: Any
    conn: Any  # the h11 protocol's own
    cycle: Any
    loop: asyncio.AbstractEventLoop
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[misc]
        self.phase = Phase.IDLE
        self.since = time.monotonic()
        self._real: Any = None  # the socket's own transport
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._peer_done = False  # the client shut its write side after sending a request
        self._admitted = False

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._real = transport
        super().connection_made(_GuardedTransport(transport, self))  # type: ignore[misc]
        if not self.guard.admit(self):
            log.warning("refused a connection: all %d connections are being answered (--max-connections)",
                        self.guard.max_connections)
            self.guard.closed("refused")
            self._real.write(raw_response(503, "every connection is being answered; retry shortly", retry=True))
            self.guard.refused_lingering += 1  # lingering, so that the client reads the 503 (a bounded number)
            self.close_politely(force=self.guard.refused_lingering <= MAX_REFUSED_LINGERING)
            return
        self._admitted = True
        self._settle()

    def data_received(self, data: bytes) -> None:
        if self.phase == Phase.CLOSING:
            return  # the answer is sent: what the client still sends is dropped
        super().data_received(data)  # type: ignore[misc]
    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self.phase == Phase.CLOSING:
            self._finish()
            return True
        if self._answering():  # the request is in: answer it, then close
            self._peer_done = True
            return True
        return super().eof_received()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if not self._admitted:
            self.guard.refused_lingering -= 1
        self.guard.forget(self)
        super().connection_lost(exc)  # type: ignore[misc]
    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self._write_paused = True
        self._settle()

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._write_paused = False
        self._settle()

    # uvicorn's hooks

    def handle_events(self) -> None:
        if self.phase == Phase.CLOSING:
            return
        if self.conn.their_state is self.h11.IDLE and self._head_too_large():  # h11 would parse it whole
            self.drop("head_too_large", raw_response(
                431, f"request line and headers over {self.guard.max_head_bytes} bytes"), linger=True)
            return
        super().handle_events()  # type: ignore[misc]
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._peer_done and not self._answering():
            self.close_politely()
        self._settle()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn's warning suggests installing a WebSocket library; this service has no WebSocket route and
        # answers an upgrade request (curl --http2's h2c) as plain HTTP/1.1
        log.debug("an Upgrade header was ignored: answered as HTTP/1.1")

    # the guard's own

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _receiving_head(self) -> bool:
        return self.conn.their_state is self.h11.IDLE and bool(self.conn.trailing_data[0])

    def _head_too_large(self) -> bool:
        """Whether the head h11 holds (a request arriving, or the next one pipelined behind an answer) ends
        past ``max_head_bytes``, or has not ended within it."""
        buffered = self.conn.trailing_data[0]
        if len(buffered) <= self.guard.max_head_bytes:
            return False
        return all(buffered.find(end, 0, self.guard.max_head_bytes) < 0 for end in HEAD_ENDS)

    def _settle(self) -> None:
        """Read the phase off h11's and the answer's state; on a change, rearm its timer."""
        if self.phase == Phase.CLOSING:
            return
        if self._write_paused:
            phase = Phase.STALLED
        elif self.conn.their_state is self.h11.SEND_BODY:
            phase = Phase.BODY
        elif self._answering():
            phase = Phase.BUSY
        elif self._receiving_head():
            phase = Phase.HEAD
        else:
            phase = Phase.IDLE
        if phase != self.phase or self._timer is None:
            self._enter(phase)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self.since = time.monotonic()
        self._cancel_timer()
        if not self._admitted or self._real is None or self._real.is_closing():
            return
        if phase == Phase.IDLE:
            self._timer = self.loop.call_later(self.guard.idle_timeout, self.drop, "idle")
        elif phase == Phase.HEAD:
            self._timer = self.loop.call_later(self.guard.header_timeout, self.drop, "header_timeout", raw_response(
                408, f"the request's headers did not arrive within {self.guard.header_timeout:g} s"), True)
        elif phase == Phase.STALLED:
            self._timer = self.loop.call_later(self.guard.send_timeout, self.abort, "send_timeout")

    def drop(self, reason: str, answer: bytes | None = None, linger: bool = False) -> None:
        """Close the connection, after writing ``answer`` if there is one; ``linger``: politely."""
        if self._real is None or self._real.is_closing() or self.phase == Phase.CLOSING:
            return
        self.guard.closed(reason)
        if answer is not None and not self._write_paused:
            self._real.write(answer)
        self.close_politely(force=linger)

    def abort(self, reason: str) -> None:
        """Close at once, whatever is unsent (a slow client replaced, a stalled reader, a shutdown's cut)."""
        if self._real is None:
            return
        self._cancel_timer()
        self.guard.forget(self)  # its slot is free now: abort() closes the socket at once
        self.guard.closed(reason)
        self.phase = Phase.CLOSING
        self._real.abort()

    def close_politely(self, force: bool = False) -> None:
        """Close; if the client may still be sending (or ``force``), shut the write side and drop what it
        sends for at most ``LINGER_SECONDS`` first, so it reads the answer instead of a reset. A close
        never waits longer than ``send_timeout`` for a client to read what is left to send."""
        real = self._real
        if real is None or real.is_closing() or self.phase == Phase.CLOSING:
            return
        self._cancel_timer()
        self.phase, self.since = Phase.CLOSING, time.monotonic()
        sending = self._receiving_head() or self.conn.their_state in (self.h11.SEND_BODY, self.h11.ERROR)
        if (force or sending) and not self.guard.hard and real.can_write_eof():
            real.write_eof()
            real.resume_reading()
            self._timer = self.loop.call_later(LINGER_SECONDS, self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        """Close the socket once what is left to send is sent, or abort it after ``send_timeout``."""
        self._cancel_timer()
        if self._real.is_closing():
            return
        if self._real.get_write_buffer_size() and not self.guard.hard:
            self._real.close()
            self._timer = self.loop.call_later(self.guard.send_timeout, self._real.abort)
        elif self._real.get_write_buffer_size():
            self._real.abort()
        else:
            self._real.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's h11 protocol whose connections ``guard`` keeps in check."""
    # lazy: uvicorn and h11 come with the [serve] extra
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type("GuardedConnection", (_GuardedConnection, H11Protocol), {"guard": guard, "h11": h11})
