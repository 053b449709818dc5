"""The FastAPI application: routes, limits, authentication and metrics around one loaded cascade.

The cheap stage runs on a worker thread of its own and the neural stage behind the micro-batcher, so
the event loop only parses, routes and answers. Every answer equals ``Cascade.classify`` on the same
text: the two halves are the router's own (:meth:`Cascade.route_cheap`, :meth:`Cascade.merge_neural`).
"""


import asyncio
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from .._optional import require
from ..router import Cascade, check_threshold
from .batcher import NeuralBatcher, Overloaded
from .drift import FallThroughMonitor, promised_rate
from .metrics import ServiceMetrics
from .settings import ServeSettings

log = logging.getLogger(__name__)

OPEN_PATHS = ("/healthz", "/readyz")  # no API key needed: orchestrators probe these


class _State:
    """What the app holds while it runs."""

    def __init__(self) -> None:
        self.model: Cascade | None = None
        self.batcher: NeuralBatcher | None = None
        self.monitor: FallThroughMonitor | None = None
        self.ready = False
        self.cheap_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-cheap")


def create_app(settings: ServeSettings, model: Cascade | None = None) -> Any:
    """The ASGI app for ``settings`` (``model``: an already loaded cascade, else the settings' bundle is
    loaded and verified at startup)."""
    fastapi = require("fastapi", "serve")
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, StringConstraints

    state = _State()
    metrics = ServiceMetrics()

    Text = Annotated[StrictStr, StringConstraints(max_length=settings.max_chars)]

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[Text] = Field(max_length=settings.max_texts,
                                  description=f"texts to classify, at most {settings.max_texts}, each at most "
                                              f"{settings.max_chars} characters")
        # strict: true, "2" or "0.5" are not numbers here, as they are not for classify()
        top_k: StrictInt | None = Field(1, ge=1, description="labels listed per text (null: every label)")
        threshold: StrictFloat | StrictInt | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                        description="routing cut-off on the cheap stage's confidence (null: the "
                                                    "bundle's); not a score filter")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        loaded = model if model is not None else await asyncio.get_running_loop().run_in_executor(
            state.cheap_executor, lambda: Cascade.load(settings.bundle, threads=settings.threads))
        state.model = loaded
        promised = promised_rate(loaded.bundle.manifest) if loaded.bundle is not None else None
        state.monitor = FallThroughMonitor(promised[0] if promised else None, promised[1] if promised else "",
                                           window=settings.drift_window, level=settings.drift_level)
        state.batcher = NeuralBatcher(loaded.neural.predict_proba, max_batch=settings.max_batch,
                                      max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                                      batching=settings.batching, on_batch=_batch_done)
        await state.batcher.start()
        state.ready = True
        log.info("cascade serve: %s", loaded)
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()
            state.cheap_executor.shutdown(wait=True)

    def _batch_done(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.batch_seconds.observe(seconds)

    app = fastapi.FastAPI(title="cascade", version=_version(), lifespan=lifespan,
                          description="Fast, cheap text classification: a bag-of-words stage answers the texts it "
                                      "is sure of, an INT8 transformer the rest.")

    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: Any) -> Any:
        # FastAPI's own answer echoes the input, which JSON cannot always hold (NaN, lone surrogates)
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return Response(json.dumps({"detail": detail}, ensure_ascii=True, default=str), status_code=422,
                        media_type="application/json")

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the bundle is loaded and verified, and the server is not shutting down")
    async def readyz() -> Any:
        if state.ready:
            return {"status": "ready"}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/v1/info", summary="labels, task, threshold and promised figures (no hashes, no paths)")
    async def info() -> dict[str, Any]:
        m = _model(state)
        manifest = m.bundle.manifest if m.bundle is not None else {}
        calibration = manifest.get("calibration", {}).get("choice", {})
        monitor = state.monitor
        return {
            "task": "multi-label" if m.multi_label else "single-label", "labels": m.labels,
            "threshold": m.threshold, "confidence": m.measure,
            "promised": {"fall_through_rate": monitor.promised if monitor else None,
                         "source": monitor.source if monitor else "",
                         "calibration": {"request": calibration.get("request"),
                                         "expected": calibration.get("expected")} if calibration else None},
            "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars,
                       "max_body_bytes": settings.max_body_bytes},
            "version": _version(),
        }

    @app.get("/metrics", summary="Prometheus exposition format")
    async def prometheus() -> Any:
        if state.monitor is not None and state.batcher is not None:
            metrics.update_drift(state.monitor.check(), state.monitor.promised)
            metrics.queue_depth.set(state.batcher.queued)
        if state.model is not None:
            metrics.update_cache(state.model.cache)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/classify", summary="classify texts; one prediction per text, in order")
    async def classify(request: ClassifyRequest) -> Any:
        m = _model(state)
        if request.top_k is not None and request.top_k > len(m.labels):
            return JSONResponse({"detail": [{"loc": ["body", "top_k"], "type": "less_than_equal",
                                             "msg": f"top_k must be at most {len(m.labels)} (the bundle's labels)"}]},
                                status_code=422)
        texts = request.texts
        if not texts:
            return Response('{"predictions": [], "fall_through": 0}', media_type="application/json")
        threshold = check_threshold(request.threshold) if request.threshold is not None else None
        loop = asyncio.get_running_loop()
        probs, to_neural, fresh, cached = await loop.run_in_executor(state.cheap_executor, _cheap_part, m, texts,
                                                                     threshold)
        ask = to_neural & fresh  # repeated texts were answered from the cache, neural part included
        fallen = [texts[i] for i in ask.nonzero()[0]]
        neural = None
        if fallen:
            if state.batcher is None:
                raise RuntimeError("the server is not started")
            try:
                neural = await state.batcher.submit(fallen)
            except Overloaded as exc:
                metrics.overloaded.inc()
                return JSONResponse({"detail": f"overloaded: {exc}; retry shortly"}, status_code=503,
                                    headers={"Retry-After": "1"})
        probs = m.merge_neural(probs, ask, neural)
        if cached is not None and fresh.any():
            rows = fresh.nonzero()[0]
            m.cache.put_many([cached.keys[i] for i in rows], probs[rows], to_neural[rows], cached.state)
        top_k = len(m.labels) if request.top_k is None else request.top_k
        predictions = [p.to_dict() for p in m.predictions(probs, to_neural, top_k)]
        n_fallen = int(to_neural.sum())
        metrics.texts.labels("neural").inc(n_fallen)
        metrics.texts.labels("cheap").inc(len(texts) - n_fallen)
        if threshold is None and state.monitor is not None:
            state.monitor.record(to_neural.tolist())
        # serialised here: FastAPI's generic encoder would walk every float again
        return Response(json.dumps({"predictions": predictions, "fall_through": n_fallen}, allow_nan=False),
                        media_type="application/json")

    return app


class _Guard:
    """Pure ASGI middleware (no per-request task, unlike Starlette's BaseHTTPMiddleware): the API key, then
    the body limit (the body is read here, bounded, before any route sees it), then the request's metrics."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServiceMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self._expected = f"Bearer {settings.api_key}".encode() if settings.api_key is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        if (self._expected is not None and scope.get("path") not in OPEN_PATHS
                and not secrets.compare_digest(headers.get(b"authorization", b""), self._expected)):
            await _answer(send, 401, {"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                          ((b"www-authenticate", b"Bearer"),))
            return
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope.get("method") == "POST" and media != b"application/json":
            await _answer(send, 415, {"detail": "send the body as JSON with 'Content-Type: application/json'"})
            return
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, _too_large(limit))
            return
        chunks, size = [], 0
        while True:  # the whole body, at most `limit` bytes of it
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> dict[str, str]:
    return {"detail": f"request body over {limit} bytes; send fewer or shorter texts per request"}


async def _answer(send: Any, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


def _cheap_part(m: Cascade, texts: list[str], threshold: float | None) -> tuple[Any, Any, Any, Any]:
    """The cheap stage's probabilities and routing for the texts the answer cache does not hold (at the
    bundle's own threshold; a request with its own threshold bypasses the cache), and the cached answers of
    the rest: (probabilities, answered by the neural stage, computed now, the cache's view or None)."""
    import numpy as np

    if threshold is not None or m.cache.max_entries == 0:
        probs, to_neural = m.route_cheap(texts, threshold)
        return probs, to_neural, np.ones(len(texts), dtype=bool), None
    rows = m.cached_rows(texts)
    if rows.fresh.any():
        fresh = rows.fresh.nonzero()[0]
        rows.probs[fresh], rows.to_neural[fresh] = m.route_cheap([texts[i] for i in fresh], None)
    return rows.probs, rows.to_neural, rows.fresh, rows


def _model(state: _State) -> Cascade:
    if state.model is None:
        raise RuntimeError("the bundle is not loaded yet")
    return state.model


def _version() -> str:
    from .. import __version__

    return __version__
