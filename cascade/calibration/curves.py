"""The trade-off curves: cascade accuracy and fall-through rate for every threshold of a routing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdCurve:
    """Parallel arrays, one entry per candidate threshold, in increasing threshold order."""

    thresholds: np.ndarray
    fall_through_rate: np.ndarray
    accuracy: np.ndarray


def threshold_curve(conf: np.ndarray, cheap_correct: np.ndarray, neural_correct: np.ndarray) -> ThresholdCurve:
    """Cascade accuracy and fall-through rate for every threshold that changes the routing."""
    conf = np.asarray(conf, dtype=np.float64)
    n = len(conf)
    if n == 0 or len(cheap_correct) != n or len(neural_correct) != n:
        raise ValueError("confidence and correctness arrays must be non-empty and of equal length")
    order = np.argsort(conf, kind="stable")
    c = conf[order]
    cheap_ok = np.asarray(cheap_correct, dtype=np.float64)[order]
    neural_ok = np.asarray(neural_correct, dtype=np.float64)[order]
    # k = number of texts that fall through; a threshold between c[k-1] and c[k] sends exactly those.
    ks = np.concatenate([[0], np.flatnonzero(np.diff(c) > 0) + 1, [n]])
    below = np.concatenate([[0.0], np.cumsum(neural_ok)])[ks]
    above = cheap_ok.sum() - np.concatenate([[0.0], np.cumsum(cheap_ok)])[ks]
    upper = np.concatenate([c, [1.0]])[ks]  # confidence of the first text that stays (1.0 if none)
    lower = np.concatenate([[0.0], c])[ks]  # confidence of the last text that falls (0.0 if none)
    mid = (lower + upper) / 2
    thresholds = np.where(mid > lower, mid, upper)  # a midpoint rounded down onto `lower` would keep it
    # Thresholds live in [0, 1]: texts of negative confidence (always sent on) fall through at every one,
    # and a text of confidence 1 at none.
    forced = int(np.sum(c < 0))
    keep = (ks >= forced) & ((ks < n) | (c[-1] < 1.0))
    ks, below, above, thresholds = ks[keep], below[keep], above[keep], thresholds[keep]
    thresholds[0] = 0.0
    return ThresholdCurve(thresholds, ks / n, (below + above) / n)


def best_accuracy_threshold(conf: np.ndarray, cheap_correct: np.ndarray, neural_correct: np.ndarray) -> tuple[float, float, float]:
    """(threshold, validation accuracy, fall-through rate) of the most accurate routing; ties to the
    lowest fall-through rate."""
    curve = threshold_curve(conf, cheap_correct, neural_correct)
    best = int(np.flatnonzero(curve.accuracy == curve.accuracy.max())[0])
    return float(curve.thresholds[best]), float(curve.accuracy[best]), float(curve.fall_through_rate[best])


@dataclass(frozen=True)
class Curve:
    """The trade-off on the certify part, one entry per threshold (increasing)."""

    threshold: np.ndarray
    fall_through_rate: np.ndarray
    accuracy: np.ndarray
    cheap_kept_accuracy: np.ndarray
    ms_per_text: np.ndarray

    def rows(self) -> list[dict[str, float]]:
        return [dict(zip(self.__dataclass_fields__, map(float, values)))
                for values in zip(*(getattr(self, f) for f in self.__dataclass_fields__))]


def build_curve(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray, costs_ms: dict[str, float]) -> Curve:
    """The trade-off curve of one routing on labelled texts."""
    base = threshold_curve(conf, cheap_ok, neural_ok)
    n = len(conf)
    fell = np.round(base.fall_through_rate * n).astype(int)
    cheap_by_conf = np.asarray(cheap_ok, dtype=np.float64)[np.argsort(conf, kind="stable")]
    cum = np.concatenate([[0.0], np.cumsum(cheap_by_conf)])
    kept = n - fell
    kept_acc = np.where(kept > 0, (cum[-1] - cum[fell]) / np.maximum(kept, 1), np.nan)
    return Curve(base.thresholds, base.fall_through_rate, base.accuracy, kept_acc,
                 costs_ms["cheap"] + base.fall_through_rate * costs_ms["neural"])
