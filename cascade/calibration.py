"""Choosing the routing threshold from a labelled validation set.

:func:`threshold_curve` lists every distinct routing decision a threshold can make on the validation
set (thresholds are midpoints between consecutive distinct confidences, so each sends a different
number of texts to the neural stage) with its fall-through rate and cascade accuracy.
:func:`best_accuracy_threshold` is the simple rule used when a bundle is built: the highest validation
accuracy, ties going to the lowest fall-through rate.
"""

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
    thresholds[0] = 0.0
    if c[-1] >= 1.0:  # no threshold up to 1 can send a text of confidence 1
        ks, below, above, thresholds = ks[:-1], below[:-1], above[:-1], thresholds[:-1]
    return ThresholdCurve(thresholds, ks / n, (below + above) / n)


def best_accuracy_threshold(conf: np.ndarray, cheap_correct: np.ndarray, neural_correct: np.ndarray) -> tuple[float, float, float]:
    """(threshold, validation accuracy, fall-through rate) of the most accurate routing; ties to the
    lowest fall-through rate."""
    curve = threshold_curve(conf, cheap_correct, neural_correct)
    best = int(np.flatnonzero(curve.accuracy == curve.accuracy.max())[0])
    return float(curve.thresholds[best]), float(curve.accuracy[best]), float(curve.fall_through_rate[best])
