"""The FastAPI application: routes and metrics around one loaded cascade.

The request guard (:mod:`~cascade.serving.guard`) checks every request before a route sees it; the stages
run off the event loop (:mod:`~cascade.serving.pipeline`), so the loop only parses, routes and answers.
Every answer equals ``Cascade.classify`` on the same text: the two halves are the model's own
(:meth:`Cascade.route_cheap`, :meth:`Cascade.merge_neural`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from typing import Any

from .._optional import require
from ..calibration.feedback import outcomes, promise_of
from ..calibration.traffic import served_score
from ..model import Cascade
from ..version import __version__
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

require("fastapi", "serve")  # a clear message naming the extra; the module is imported only by `serve`
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import Response  # noqa: E402

log = logging.getLogger(__name__)

BODY_ROUTES = frozenset({("POST", "/v1/classify"), ("POST", "/v1/feedback")})

__all__ = ["OPEN_PATHS", "create_app"]


class Service:
    """What the app holds while it runs (``app.state.service``): its settings, the loaded cascade and what
    watches it, the metrics and the shutdown's :class:`~cascade.serving.drain.Drain`."""

    def __init__(self, settings: ServeSettings, model: Cascade | None) -> None:
        self.settings = settings
        self.preloaded = model
        self.metrics = ServiceMetrics()
        self.drain = Drain()
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

    async def start(self) -> None:
        """Load the bundle (unless given one), set up the watches and start the pipeline."""
        settings = self.settings
        loaded = self.preloaded if self.preloaded is not None else await asyncio.get_running_loop().run_in_executor(
            None, lambda: Cascade.load(settings.bundle, threads=settings.threads, runtime=settings.runtime))
        promised = promised_rate(loaded.bundle.manifest) if loaded.bundle is not None else None
        self.monitor = FallThroughMonitor(promised[0] if promised else None, promised[1] if promised else "",
                                          window=settings.drift_window, level=settings.drift_level)
        manifest = loaded.bundle.manifest if loaded.bundle is not None else {}
        self.estimate = EstimateWatch(manifest.get("calibration", {}).get("reference"), window=settings.drift_window,
                                      level=settings.drift_level)
        self.feedback = FeedbackWatch(*promise_of(loaded), alpha=settings.feedback_alpha)
        batcher = NeuralBatcher(loaded.neural.predict_proba, max_batch=settings.max_batch,
                                max_chars=settings.slice_chars, max_wait_ms=settings.max_wait_ms,
                                max_queue=settings.max_queue, batching=settings.batching, on_batch=self._batch_done)
        self.pipeline = Pipeline(loaded, batcher, settings.slice_chars)
        await self.pipeline.start()
        self.ready = True
        log.info("cascade serve: %s", loaded)

    async def stop(self) -> None:
        self.ready = False
        if self.pipeline is not None:
            await self.pipeline.stop()

    def _batch_done(self, n: int, seconds: float) -> None:
        self.metrics.batch_size.observe(n)
        self.metrics.batch_seconds.observe(seconds)

    async def route(self, texts: list[str], threshold: float | None) -> tuple[Any, Any] | Response:
        """Both stages' answers for ``texts``, or the response saying why the queue cannot take them."""
        if self.pipeline is None:
            raise RuntimeError("the server is not started")
        try:
            return await self.pipeline.route(texts, threshold)
        except TooLarge as exc:
            return _detail(str(exc), 413)
        except Overloaded as exc:
            self.metrics.overloaded.labels("queue").inc()
            return _detail(f"overloaded: {exc}; retry shortly", 503, {"Retry-After": RETRY_AFTER[1].decode()})


def create_app(settings: ServeSettings, model: Cascade | None = None) -> Any:
    """The ASGI app for ``settings`` (``model``: an already loaded cascade, else the settings' bundle is
    loaded and verified at startup). ``app.state.metrics`` and ``app.state.drain`` are for the server that
    runs it: the connection guard's figures, and the start of a shutdown."""
    service = Service(settings, model)
    app = FastAPI(title="cascade", version=_version(), lifespan=_lifespan, redirect_slashes=False,
                  description="Fast, cheap text classification: a bag-of-words stage answers the texts it "
                              "is sure of, an INT8 transformer the rest.")
    app.state.service, app.state.metrics, app.state.drain = service, service.metrics, service.drain
    app.add_api_route("/healthz", healthz, methods=["GET", "HEAD"], summary="the process is alive")
    app.add_api_route("/readyz", readyz, methods=["GET", "HEAD"],
                      summary="the bundle is loaded and verified, and the server is not shutting down")
    app.add_api_route("/v1/info", info, methods=["GET"],
                      summary="labels, task, threshold and promised figures (no hashes, no paths)")
    app.add_api_route("/metrics", prometheus, methods=["GET"], summary="Prometheus exposition format")
    app.add_api_route("/v1/classify", classify, methods=["POST"],
                      summary="classify texts; one prediction per text, in order",
                      openapi_extra=_json_body(request_schema(settings.max_texts, settings.max_chars)))
    app.add_api_route("/v1/feedback", feedback, methods=["POST"],
                      summary="the true labels of texts already classified: checked against the promise",
                      openapi_extra=_json_body(feedback_schema(settings.max_texts, settings.max_chars)))
    app.add_middleware(RequestGuard, settings=settings, metrics=service.metrics, drain=service.drain,
                       body_routes=BODY_ROUTES, paths=frozenset(getattr(route, "path", "") for route in app.routes))
    return app


@asynccontextmanager
async def _lifespan(app: Any) -> Any:
    service: Service = app.state.service
    await service.start()
    try:
        yield
    finally:
        await service.stop()


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> Any:
    service = _service(request)
    if service.ready and not service.drain.draining:
        return {"status": "ready"}
    return Response(json.dumps({"status": "not ready"}), status_code=503, media_type="application/json")


async def info(request: Request) -> dict[str, Any]:
    service = _service(request)
    settings, m, monitor, estimate = service.settings, service.model, service.monitor, service.estimate
    manifest = m.bundle.manifest if m.bundle is not None else {}
    calibration = manifest.get("calibration", {}).get("choice", {})
    return {
        "task": "multi-label" if m.multi_label else "single-label", "labels": m.labels,
        "threshold": m.threshold, "confidence": m.measure,
        "promised": {"fall_through_rate": monitor.promised if monitor else None,
                     "source": monitor.source if monitor else "",
                     "calibration": {"request": calibration.get("request"),
                                     "expected": calibration.get("expected")} if calibration else None},
        "traffic_estimate": {"figure": estimate.figure, "promised": estimate.promised,
                             "method": "average thresholded confidence with the calibration's cut, over the last "
                                       f"{settings.drift_window} texts at the bundle's threshold"}
        if estimate is not None and estimate.cut is not None else None,
        "limits": {"max_texts": settings.max_texts, "max_chars": settings.max_chars,
                   "max_body_bytes": settings.max_body_bytes},
        "version": _version(),
    }


async def prometheus(request: Request) -> Any:
    service = _service(request)
    metrics = service.metrics
    if service.monitor is not None and service.pipeline is not None:
        metrics.update_drift(service.monitor.check(), service.monitor.promised)
        metrics.queue_depth.set(service.pipeline.batcher.queued)
        metrics.update_cache(service.pipeline.model.cache)
    if service.estimate is not None and service.feedback is not None:
        metrics.update_promise(service.estimate.check(), service.feedback.state)
    payload, content_type = metrics.render()
    return Response(payload, media_type=content_type)


async def classify(request: Request) -> Any:
    service = _service(request)
    settings, m = service.settings, service.model
    try:
        asked = parse_classify(await request.body(), max_texts=settings.max_texts, max_chars=settings.max_chars,
                               n_labels=len(m.labels))
    except Invalid as exc:
        return _detail(exc.errors, 422)
    if not asked.texts:
        return Response('{"predictions": [], "fall_through": 0}', media_type="application/json")
    routed = await service.route(asked.texts, asked.threshold)
    if isinstance(routed, Response):
        return routed
    probs, to_neural = routed
    predictions = [p.to_dict() for p in m.predictions(probs, to_neural, asked.top_k)]
    n_fallen = int(to_neural.sum())
    service.metrics.texts.labels("neural").inc(n_fallen)
    service.metrics.texts.labels("cheap").inc(len(asked.texts) - n_fallen)
    if asked.threshold is None and service.monitor is not None:
        service.monitor.record(to_neural.tolist())
    if asked.threshold is None and service.estimate is not None and service.estimate.cut is not None:
        service.estimate.record(served_score(probs, to_neural, m.decisions))
    # serialised here: FastAPI's generic encoder would walk every float again
    return Response(json.dumps({"predictions": predictions, "fall_through": n_fallen}, allow_nan=False),
                    media_type="application/json")


async def feedback(request: Request) -> Any:
    service = _service(request)
    settings, m = service.settings, service.model
    try:
        given = parse_feedback(await request.body(), max_texts=settings.max_texts, max_chars=settings.max_chars,
                               model=m)
    except Invalid as exc:
        return _detail(exc.errors, 422)
    if service.feedback is None:
        raise RuntimeError("the server is not started")
    watch = service.feedback
    new = watch.unseen(given.texts)  # a text is counted once, however often it is posted
    texts = [t for t, keep in zip(given.texts, new) if keep]
    labels = [y for y, keep in zip(given.labels, new) if keep]
    if not texts:
        return Response(json.dumps({"recorded": 0, "repeated": len(given.texts), "promise": watch.state.to_dict()},
                                   allow_nan=False), media_type="application/json")
    routed = await service.route(texts, None)  # the answers at the bundle's own threshold (cached if served)
    if isinstance(routed, Response):
        return routed
    probs, to_neural = routed
    scores = outcomes(m.predictions(probs, to_neural, 1), labels, watch.figure)
    promise, recorded = watch.record(texts, scores)
    return Response(json.dumps({"recorded": recorded, "repeated": len(given.texts) - recorded,
                                "promise": promise.to_dict()}, allow_nan=False), media_type="application/json")


def _detail(detail: Any, status: int, headers: dict[str, str] | None = None) -> Any:
    return Response(body(detail), status_code=status, media_type="application/json", headers=headers)


def _version() -> str:
    return __version__
