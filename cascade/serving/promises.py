"""The server watching its bundle's promise: without labels, on the texts it serves; with labels, on feedback.

* :class:`EstimateWatch`: the last ``window`` texts answered at the bundle's own threshold feed the same
  estimate ``cascade calibrate --traffic`` makes (average thresholded confidence, with the cut the calibration
  recorded): the share of them scoring above the cut estimates the figure promised. When the window is full
  and even the exact upper bound (at ``1 - level``) of that share is below the promise, the log says once that
  recent traffic does not support the promise; once more when it does again.
* :class:`FeedbackWatch`: labelled outcomes posted to ``/v1/feedback`` drive an anytime-valid test of the
  promise (:class:`cascade.calibration.sequential.PromiseMonitor`); the log says once when it is violated.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..calibration.sequential import MonitorState, PromiseMonitor
from .drift import CHECK_EVERY, SlidingCount

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class EstimateState:
    estimate: float | None  # None until the first text
    window: int
    promised: float | None
    supported: bool | None  # None: no promise, or the window is not full yet


class EstimateWatch:
    """Thread-safe sliding window of served texts' scores against a calibrated bundle's ATC cut."""

    def __init__(self, reference: dict[str, Any] | None, window: int = 2000, level: float = 0.001) -> None:
        self.reference = reference or None
        self.cut = float(self.reference["atc_cut"]) if self.reference else None
        self.promised = self.reference.get("promised") if self.reference else None
        self.figure = self.reference.get("figure", "accuracy") if self.reference else "accuracy"
        self.level = level
        self._above = SlidingCount(window)
        self._since = 0
        self._lock = threading.Lock()
        self._supported: bool | None = None

    def record(self, scores: np.ndarray) -> None:
        """Add the scores of texts served at the bundle's own threshold."""
        if self.cut is None:
            return
        with self._lock:
            self._above.add((np.asarray(scores) > self.cut).tolist())
            self._since += len(scores)
            if self._since >= CHECK_EVERY:
                self._check()

    def check(self) -> EstimateState:
        with self._lock:
            self._check()
            return self.state

    @property
    def state(self) -> EstimateState:
        n = len(self._above)
        return EstimateState(self._above.count / n if n else None, n, self.promised, self._supported)

    def _check(self) -> None:
        # lazy: scipy loads only when this runs, so `import cascade` stays light
        from scipy.stats import beta

        self._since = 0
        n = len(self._above)
        if self.promised is None or not self._above.full:
            return
        k = self._above.count
        upper = 1.0 if k >= n else float(beta.ppf(1.0 - self.level, k + 1, n - k))
        supported = upper >= self.promised
        if supported != self._supported and (self._supported is not None or not supported):
            if supported:
                log.warning("promise supported again by recent traffic: estimated %s %.1f%% over the last %d texts, "
                            "promised %.1f%%", self.figure, 100 * k / n, n, 100 * self.promised)
            else:
                log.warning("promise not supported by recent traffic: estimated %s %.1f%% over the last %d texts "
                            "(upper bound %.1f%% at %.1f%%), promised %.1f%% (average thresholded confidence with "
                            "the calibration's cut): texts unlike the certifying ones; check with labelled feedback",
                            self.figure, 100 * k / n, n, 100 * upper, 100 * (1 - self.level), 100 * self.promised)
        self._supported = supported


SEEN_TEXTS = 100_000  # feedback texts remembered, so that one text posted again is not counted again


class FeedbackWatch:
    """Thread-safe anytime-valid test of the promise on labelled feedback. A text is counted once (among the
    last :data:`SEEN_TEXTS` distinct ones): the test assumes independent draws, and the same text posted
    twenty times with a wrong label is one error, not twenty."""

    def __init__(self, promised: float | None, figure: str, alpha: float = 0.05, remember: int = SEEN_TEXTS) -> None:
        self.figure = figure
        self._monitor = PromiseMonitor(promised, alpha)
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()
        self._remember = remember

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def unseen(self, texts: list[str]) -> list[bool]:
        """For each text, whether it is new to the feedback (and not an earlier text of the same list)."""
        with self._lock:
            keys = [self._key(t) for t in texts]
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            return [k not in self._seen and first[k] == i for i, k in enumerate(keys)]

    def record(self, texts: list[str], outcomes: np.ndarray) -> tuple[MonitorState, int]:
        """Count the outcomes of texts still new (a concurrent request may have posted one meanwhile) and
        remember them; the test's state and how many were counted."""
        with self._lock:
            keep = np.zeros(len(texts), dtype=bool)
            for i, key in enumerate(map(self._key, texts)):
                if key not in self._seen:
                    keep[i] = True
                    self._seen.add(key)
                    self._order.append(key)
                    if len(self._order) > self._remember:
                        self._seen.discard(self._order.popleft())
            was = self._monitor.state.violated
            state = self._monitor.update(np.asarray(outcomes)[keep])
            if state.violated and not was and state.target is not None:
                log.warning("promise violated: labelled feedback shows %s below the promised %.1f%% at confidence "
                            "%.0f%% (%d texts, %.1f%% right; confidence sequence %.1f%%-%.1f%%)", self.figure,
                            100 * state.target, 100 * (1 - state.alpha), state.n, 100 * state.mean,
                            100 * state.lower, 100 * state.upper)
            return state, int(keep.sum())

    @property
    def state(self) -> MonitorState:
        with self._lock:
            return self._monitor.state
