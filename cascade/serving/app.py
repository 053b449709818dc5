"""The FastAPI application: routes and metrics around one loaded cascade.

The request guard (:mod:`~cascade.serving.guard`) checks every request before a route sees it; the stages
run off the event loop (:mod:`~cascade.serving.pipeline`), so the loop only parses, routes and answers.
Every answer equals ``Cascade.classify`` on the same text: the two halves are the router's own
(:meth:`Cascade.route_cheap`, :meth:`Cascade.merge_neural`).
"""


import asyncio
import json
import logging
from contextlib import asynccontextmanager
from typing import Any

from .._optional import require
from ..calibration.feedback import outcomes, promise_of
from ..calibration.traffic import served_score
from ..router import Cascade
from .batcher import NeuralBatcher, Overloaded, TooLarge
from .drain import Drain
from .drift import FallThroughMonitor, promised_rate
from .guard import OPEN_PATHS, RequestGuard
from .metrics import ServiceMetrics
from .pipeline import Pipeline
from .promises import EstimateWatch, FeedbackWatch
from .requests import Invalid, feedback_schema, parse_classify, parse_feedback, request_schema
from .responses import RETRY_AFTER, body
from .settings import ServeSettings

log = logging.getLogger(__name__)

BODY_ROUTES = frozenset({("POST", "/v1/classify"), ("POST", "/v1/feedback")})

__all__ = ["OPEN_PATHS", "create_app"]


class _State:
    """What the app holds while it runs."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.monitor: FallThroughMonitor | None = None
        self.estimate: EstimateWatch | None = None
        self.feedback: FeedbackWatch | None = None
        self.ready = False

    @property
    def model(self) -> Cascade:
        if self.pipeline is None:
            raise RuntimeError("the bundle is not loaded yet")
        return self.pipeline.model


def create_app(settings: ServeSettings, model: Cascade | None = None) -> Any:
    """The ASGI app for ``settings`` (``model``: an already loaded cascade, else the settings' bundle is
    loaded and verified at startup). ``app.state.metrics`` and ``app.state.drain`` are for the server that
    runs it: the connection guard's figures, and the start of a shutdown."""
    fastapi = require("fastapi", "serve")
    from fastapi import Request
    from fastapi.responses import Response

    state = _State()
    metrics = ServiceMetrics()
    drain = Drain()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        loaded = model if model is not None else await asyncio.get_running_loop().run_in_executor(
            None, lambda: Cascade.load(settings.bundle, threads=settings.threads))
        promised = promised_rate(loaded.bundle.manifest) if loaded.bundle is not None else None
        state.monitor = FallThroughMonitor(promised[0] if promised else None, promised[1] if promised else "",
                                           window=settings.drift_window, level=settings.drift_level)
        manifest = loaded.bundle.manifest if loaded.bundle is not None else {}
        state.estimate = EstimateWatch(manifest.get("calibration", {}).get("reference"), window=settings.drift_window,
                                       level=settings.drift_level)
        state.feedback = FeedbackWatch(*promise_of(loaded), alpha=settings.feedback_alpha)
        batcher = NeuralBatcher(loaded.neural.predict_proba, max_batch=settings.max_batch,
                                max_chars=settings.slice_chars, max_wait_ms=settings.max_wait_ms,
                                max_queue=settings.max_queue, batching=settings.batching, on_batch=_batch_done)
        state.pipeline = Pipeline(loaded, batcher, settings.slice_chars)
        await state.pipeline.start()
        state.ready = True
        log.info("cascade serve: %s", loaded)
        try:
            yield
        finally:
            state.ready = False
            await state.pipeline.stop()

    def _batch_done(n: int, seconds: float) -> None:
        metrics.batch_size.observe(n)
        metrics.batch_seconds.observe(seconds)

    app = fastapi.FastAPI(title="cascade", version=_version(), lifespan=lifespan, redirect_slashes=False,
                          description="Fast, cheap text classification: a bag-of-words stage answers the texts it "
                                      "is sure of, an INT8 transformer the rest.")
    app.state.metrics = metrics
    app.state.drain = drain

    @app.api_route("/healthz", methods=["GET", "HEAD"], summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"],
                   summary="the bundle is loaded and verified, and the server is not shutting down")
    async def readyz() -> Any:
        if state.ready and not drain.draining:
            return {"status": "ready"}
        return Response(json.dumps({"status": "not ready"}), status_code=503, media_type="application/json")

    @app.get("/v1/info", summary="labels, task, threshold and promised figures (no hashes, no paths)")
    async def info() -> dict[str, Any]:
        m = state.model
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
            "traffic_estimate": {"figure": state.estimate.figure, "promised": state.estimate.promised,
                                 "method": "average thresholded confidence with the calibration's cut, over the last "
                                           f"{settings.drift_window} texts at the bundle's threshold"}
            if state.estimate is not None and state.estimate.cut is not None else None,
            "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars,
                       "max_body_bytes": settings.max_body_bytes},
            "version": _version(),
        }

    @app.get("/metrics", summary="Prometheus exposition format")
    async def prometheus() -> Any:
        if state.monitor is not None and state.pipeline is not None:
            metrics.update_drift(state.monitor.check(), state.monitor.promised)
            metrics.queue_depth.set(state.pipeline.batcher.queued)
            metrics.update_cache(state.pipeline.model.cache)
        if state.estimate is not None and state.feedback is not None:
            metrics.update_promise(state.estimate.check(), state.feedback.state)
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    @app.post("/v1/classify", summary="classify texts; one prediction per text, in order",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": request_schema(settings.max_texts, settings.max_chars)}}}})
    async def classify(request: Request) -> Any:
        m = state.model
        try:
            asked = parse_classify(await request.body(), max_texts=settings.max_texts, max_chars=settings.max_chars,
                                   n_labels=len(m.labels))
        except Invalid as exc:
            return _detail(exc.errors, 422)
        if not asked.texts:
            return Response('{"predictions": [], "fall_through": 0}', media_type="application/json")
        routed = await _route(asked.texts, asked.threshold)
        if isinstance(routed, Response):
            return routed
        probs, to_neural = routed
        predictions = [p.to_dict() for p in m.predictions(probs, to_neural, asked.top_k)]
        n_fallen = int(to_neural.sum())
        metrics.texts.labels("neural").inc(n_fallen)
        metrics.texts.labels("cheap").inc(len(asked.texts) - n_fallen)
        if asked.threshold is None and state.monitor is not None:
            state.monitor.record(to_neural.tolist())
        if asked.threshold is None and state.estimate is not None and state.estimate.cut is not None:
            state.estimate.record(served_score(probs, to_neural, m.decisions))
        # serialised here: FastAPI's generic encoder would walk every float again
        return Response(json.dumps({"predictions": predictions, "fall_through": n_fallen}, allow_nan=False),
                        media_type="application/json")

    @app.post("/v1/feedback", summary="the true labels of texts already classified: checked against the promise",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": feedback_schema(settings.max_texts, settings.max_chars)}}}})
    async def feedback(request: Request) -> Any:
        m = state.model
        try:
            given = parse_feedback(await request.body(), max_texts=settings.max_texts, max_chars=settings.max_chars,
                                   model=m)
        except Invalid as exc:
            return _detail(exc.errors, 422)
        if state.feedback is None:
            raise RuntimeError("the server is not started")
        new = state.feedback.unseen(given.texts)  # a text is counted once, however often it is posted
        texts = [t for t, keep in zip(given.texts, new) if keep]
        labels = [y for y, keep in zip(given.labels, new) if keep]
        if not texts:
            return Response(json.dumps({"recorded": 0, "repeated": len(given.texts),
                                        "promise": state.feedback.state.to_dict()}, allow_nan=False),
                            media_type="application/json")
        routed = await _route(texts, None)  # the answers at the bundle's own threshold (cached if served)
        if isinstance(routed, Response):
            return routed
        probs, to_neural = routed
        scores = outcomes(m.predictions(probs, to_neural, 1), labels, state.feedback.figure)
        promise, recorded = state.feedback.record(texts, scores)
        return Response(json.dumps({"recorded": recorded, "repeated": len(given.texts) - recorded,
                                    "promise": promise.to_dict()}, allow_nan=False), media_type="application/json")

    async def _route(texts: list[str], threshold: float | None) -> tuple[Any, Any] | Response:
        """Both stages' answers for ``texts``, or the response saying why the queue cannot take them."""
        if state.pipeline is None:
            raise RuntimeError("the server is not started")
        try:
            return await state.pipeline.route(texts, threshold)
        except TooLarge as exc:
            return _detail(str(exc), 413)
        except Overloaded as exc:
            metrics.overloaded.labels("queue").inc()
            return _detail(f"overloaded: {exc}; retry shortly", 503, {"Retry-After": RETRY_AFTER[1].decode()})

    def _detail(detail: Any, status: int, headers: dict[str, str] | None = None) -> Any:
        return Response(body(detail), status_code=status, media_type="application/json", headers=headers)

    app.add_middleware(RequestGuard, settings=settings, metrics=metrics, drain=drain, body_routes=BODY_ROUTES,
                       paths=frozenset(getattr(route, "path", "") for route in app.routes))
    return app


def _version() -> str:
    from .. import __version__

    return __version__
