"""Run the service on uvicorn: one process, guarded connections, a bounded shutdown, thread counts that fit
the cores.

One uvicorn worker serves every connection on one event loop; the cheap stage has one thread, the neural
stage one thread driving onnxruntime, whose intra-op pool gets the cores (``threads``). More uvicorn
workers would each load the bundle and each start an onnxruntime pool of that size: on a small machine
they would fight for the same cores, so scale out with more machines or containers instead.

uvicorn has no time limit on reading a request's head or body, and counts idle connections against its
concurrency limit; its protocol runs here under :mod:`~cascade.serving.connections`, which adds both, and
under :mod:`~cascade.serving.guard`, which bounds the body and the requests being answered. On SIGTERM or
SIGINT the listening socket closes, requests in flight get ``graceful_seconds``, and then
:mod:`~cascade.serving.drain` cancels what is left and answers it 503.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from .._optional import require
from ..model import Cascade
from .app import create_app
from .connections import MAX_REFUSED_LINGERING, ConnectionGuard, guarded_protocol
from .settings import ServeSettings

log = logging.getLogger(__name__)

BACKSTOP_SECONDS = 5.0  # past the grace period, uvicorn itself cancels what is left (never needed: tested)
# files the process needs besides its connections (bundle, pipes, the listening socket)
SPARE_DESCRIPTORS = 64 + MAX_REFUSED_LINGERING


def serve(settings: ServeSettings) -> bool:
    """Serve until SIGINT or SIGTERM, then shut down within ``graceful_seconds`` (and one unit of stage
    work). Returns True when stopped by Ctrl-C (SIGINT), which the caller reports as exit status 130."""
    uvicorn = require("uvicorn", "serve")
    require("h11", "serve")  # the connection guard runs under uvicorn's h11 protocol

    if settings.host not in ("127.0.0.1", "::1", "localhost") and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it (set --api-key or "
                    "$CASCADE_API_KEY)", settings.host)
    _reserve_descriptors(settings.max_connections + SPARE_DESCRIPTORS)
    # loaded and verified before uvicorn starts: a bad bundle is one line naming it, not a startup traceback
    model = Cascade.load(settings.bundle, threads=settings.threads, runtime=settings.runtime)
    app = create_app(settings, model)
    metrics = app.state.metrics
    guard = ConnectionGuard(max_connections=settings.max_connections, idle_timeout=settings.idle_timeout,
                            header_timeout=settings.header_timeout, send_timeout=settings.send_timeout,
                            max_head_bytes=settings.max_head_bytes,
                            on_close=lambda reason: metrics.connections_closed.labels(reason).inc())
    metrics.connections.set_function(lambda: len(guard))
    app.state.drain.on_cut.append(guard.cut)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1,
                            http=guarded_protocol(guard), ws="none",
                            limit_concurrency=None, timeout_keep_alive=settings.idle_timeout + 1,  # the guard's first
                            h11_max_incomplete_event_size=settings.max_head_bytes + (64 << 10),  # the guard's 431 first
                            timeout_graceful_shutdown=settings.graceful_seconds + BACKSTOP_SECONDS,
                            proxy_headers=False, access_log=False, log_level="info", lifespan="on")
    server = _server(uvicorn, config, app.state.drain, settings.graceful_seconds)
    log.info("cascade serve on http://%s:%d (OpenAPI at /docs)", settings.host, settings.port)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        server.interrupted = True
    if server.interrupted:
        log.info("stopped (Ctrl-C)")
    return bool(server.interrupted)


def _server(uvicorn: Any, config: Any, drain: Any, grace: float) -> Any:
    """uvicorn's server, telling the app's :class:`~cascade.serving.drain.Drain` when shutdown begins."""

    class Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        interrupted = False  # stopped by SIGINT (Ctrl-C)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig == signal.SIGINT:
                self.interrupted = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            drain.begin(grace)
            await super().shutdown(sockets=sockets)

    return Server(config)


def _reserve_descriptors(needed: int) -> None:
    """Raise the soft limit on open files to ``needed`` if the hard limit allows; else say what to change
    (otherwise connections past the limit fail in accept(), below every limit of ours)."""
    try:
        import resource  # lazy: a POSIX-only module, absent on Windows
    except ImportError:  # not on this platform (Windows): nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(f"max_connections needs {needed} open files but this process may open only {hard} "
                         "(`ulimit -Hn`): lower --max-connections or raise the limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
