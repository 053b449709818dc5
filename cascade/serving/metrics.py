"""The service's Prometheus figures, in a registry of its own (two apps in one process never mix)."""

from __future__ import annotations

from typing import Any

from .._optional import require

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Counters, histograms and gauges of one app; :meth:`render` gives the exposition text."""

    def __init__(self) -> None:
        prom = require("prometheus_client", "serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("cascade_requests", "HTTP requests by route and status code (499: the client "
                                     "went away before its answer)", ["route", "status"], registry=r)
        self.latency = prom.Histogram("cascade_request_seconds", "request latency, by route", ["route"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.texts = prom.Counter("cascade_texts", "texts answered, by the stage that answered", ["stage"],
                                  registry=r)
        self.batch_size = prom.Histogram("cascade_neural_batch_texts", "texts per neural-stage micro-batch",
                                         buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = prom.Histogram("cascade_neural_batch_seconds", "time to run one neural micro-batch",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = prom.Gauge("cascade_neural_queue_texts", "fall-through texts waiting or running",
                                      registry=r)
        self.overloaded = prom.Counter("cascade_overloaded", "requests refused with 503 because the neural queue "
                                       "was full (queue) or max-concurrency requests were being answered "
                                       "(concurrency)", ["reason"], registry=r)
        self.cut_off = prom.Counter("cascade_shutdown_cut_off", "requests answered 503 because a shutdown's grace "
                                    "period ended before they were done", registry=r)
        self.answering = prom.Gauge("cascade_requests_answering", "requests whose body is in, being answered",
                                    registry=r)
        self.connections = prom.Gauge("cascade_connections_open", "open HTTP connections", registry=r)
        self.connections_closed = prom.Counter("cascade_connections_closed", "connections the server closed on "
                                               "its own: idle, header_timeout, head_too_large, send_timeout, "
                                               "replaced (to make room for a new one), refused (every one was being "
                                               "answered), shutdown (a stalled reader at the end of the grace period)",
                                               ["reason"], registry=r)
        self.promised = prom.Gauge("cascade_fall_through_promised_ratio", "fall-through rate the bundle promised "
                                   "at its threshold (-1: none recorded)", registry=r)
        self.observed = prom.Gauge("cascade_fall_through_observed_ratio", "fall-through rate over the sliding "
                                   "window (texts at the bundle's own threshold)", registry=r)
        self.window = prom.Gauge("cascade_fall_through_window_texts", "texts in the sliding window", registry=r)
        self.p_value = prom.Gauge("cascade_fall_through_p_value", "two-sided binomial test of the window against "
                                  "the promised rate (1 until the window is full)", registry=r)
        self.drift = prom.Gauge("cascade_fall_through_drift", "1 while the window's rate differs from the promised "
                                "one at the configured level", registry=r)

        self.estimated = prom.Gauge("cascade_estimated_figure", "the promised figure (accuracy, exact match or mean "
                                    "F1) estimated on the last drift-window texts served at the bundle's threshold "
                                    "(average thresholded confidence; -1: no calibration reference, or no text served yet)",
                                    registry=r)
        self.estimate_promised = prom.Gauge("cascade_estimated_figure_promised", "the figure the bundle's "
                                            "calibration promised (-1: none)", registry=r)
        self.estimate_supported = prom.Gauge("cascade_promise_supported_by_traffic", "1 while recent traffic "
                                             "supports the promise, 0 while it does not, -1 unknown (no promise, "
                                             "or the window is not full)", registry=r)
        self.feedback_texts = prom.Gauge("cascade_feedback_texts", "labelled texts posted to /v1/feedback",
                                         registry=r)
        self.feedback_mean = prom.Gauge("cascade_feedback_mean", "their mean outcome (accuracy, exact match or F1; "
                                        "-1 before any)", registry=r)
        self.feedback_lower = prom.Gauge("cascade_feedback_lower", "lower end of its anytime-valid confidence "
                                         "sequence", registry=r)
        self.feedback_upper = prom.Gauge("cascade_feedback_upper", "upper end of its anytime-valid confidence "
                                         "sequence", registry=r)
        self.promise_violated = prom.Gauge("cascade_promise_violated", "1 once labelled feedback shows the promise "
                                           "violated at the configured confidence", registry=r)
        self.cache_hits = prom.Gauge("cascade_cache_hits", "texts answered from the answer cache", registry=r)
        self.cache_misses = prom.Gauge("cascade_cache_misses", "texts the answer cache did not hold", registry=r)
        self.cache_entries = prom.Gauge("cascade_cache_entries", "answers the cache holds now", registry=r)

    def update_cache(self, cache: Any) -> None:
        self.cache_hits.set(cache.hits)
        self.cache_misses.set(cache.misses)
        self.cache_entries.set(len(cache))

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    def update_promise(self, estimate: Any, feedback: Any) -> None:
        self.estimated.set(-1.0 if estimate.estimate is None else estimate.estimate)
        self.estimate_promised.set(-1.0 if estimate.promised is None else estimate.promised)
        self.estimate_supported.set(-1.0 if estimate.supported is None else float(estimate.supported))
        self.feedback_texts.set(feedback.n)
        self.feedback_mean.set(feedback.mean if feedback.n else -1.0)
        self.feedback_lower.set(feedback.lower)
        self.feedback_upper.set(feedback.upper)
        self.promise_violated.set(float(feedback.violated))

    def update_drift(self, state: Any, promised: float | None) -> None:
        self.promised.set(-1.0 if promised is None else promised)
        self.observed.set(state.observed)
        self.window.set(state.window)
        self.p_value.set(state.p_value)
        self.drift.set(1.0 if state.drifting else 0.0)
