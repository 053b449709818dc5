"""Run the service on uvicorn: one process, graceful shutdown, thread counts that fit the cores.

One uvicorn worker serves every connection on one event loop; the cheap stage has one thread, the neural
stage one thread driving onnxruntime, whose intra-op pool gets the cores (``threads``). More uvicorn
workers would each load the bundle and each start an onnxruntime pool of that size: on a small machine
they would fight for the same cores, so scale out with more machines or containers instead.
"""

from __future__ import annotations

import logging

from .._optional import require
from .app import create_app
from .settings import ServeSettings

log = logging.getLogger(__name__)


def serve(settings: ServeSettings) -> None:
    """Serve until SIGINT or SIGTERM; then stop accepting, let requests in flight finish (up to
    ``graceful_seconds``), and stop."""
    uvicorn = require("uvicorn", "serve")
    if settings.host not in ("127.0.0.1", "::1", "localhost") and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it (set --api-key or "
                    "$CASCADE_API_KEY)", settings.host)
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, workers=1,
                            limit_concurrency=settings.max_concurrency,
                            timeout_graceful_shutdown=settings.graceful_seconds, access_log=False,
                            log_level="info", lifespan="on")
    log.info("cascade serve on http://%s:%d (OpenAPI at /docs)", settings.host, settings.port)
    uvicorn.Server(config).run()
