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


def best_accuracy_threshold(conf: np.ndarray, cheap_correct: np.ndarray,
                            neural_correct: np.ndarray) -> tuple[float, float, float]:
    """(threshold, validation accuracy, fall-through rate) of the most accurate routing; ties to the
    lowest fall-through rate."""
    curve = threshold_curve(conf, cheap_correct, neural_correct)
    best = int(np.flatnonzero(curve.accuracy == curve.accuracy.max())[0])
    return float(curve.thresholds[best]), float(curve.accuracy[best]), float(curve.fall_through_rate[best])


SAME_AS_BEST_ALPHA = 0.05
SAME_AS_BEST_MAX_DROP = 0.005
BUILD_RULE = (f"the lowest fall-through rate whose accuracy the one-sided exact McNemar test (level "
              f"{SAME_AS_BEST_ALPHA}) does not find below the most accurate threshold's, and is at most "
              f"{100 * SAME_AS_BEST_MAX_DROP:g} points below it, at it and every threshold between, on the "
              "selection texts")


@dataclass(frozen=True)
class RuleChoice:
    """What the build's threshold rule chose, next to the most accurate threshold it was compared with."""

    threshold: float
    accuracy: float
    fall_through_rate: float
    best_threshold: float
    best_accuracy: float
    best_fall_through_rate: float
    only_best_right: int  # texts the most accurate threshold gets right and the chosen one wrong
    only_chosen_right: int
    p_value: float  # one-sided exact McNemar: P(at least only_best_right of the discordant texts | no difference)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def cheapest_same_as_best(conf: np.ndarray, cheap_correct: np.ndarray, neural_correct: np.ndarray,
                          alpha: float = SAME_AS_BEST_ALPHA, max_drop: float = SAME_AS_BEST_MAX_DROP) -> RuleChoice:
    """The build's default threshold: walking down from the most accurate threshold towards less
    fall-through, the last one before the one-sided exact McNemar test first finds the cascade less
    accurate than at the best (p < ``alpha``) or its accuracy falls more than ``max_drop`` below the
    best's. Buying a sliver of accuracy with twice the traffic is not worth it when the sliver is
    indistinguishable from noise; ``max_drop`` keeps a small selection set, where the test has little
    power, from giving away more than that."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.stats import binom

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    curve = threshold_curve(conf, cheap_correct, neural_correct)
    conf = np.asarray(conf, dtype=np.float64)
    order = np.argsort(conf, kind="stable")
    cheap_ok = np.asarray(cheap_correct, dtype=bool)[order]
    neural_ok = np.asarray(neural_correct, dtype=bool)[order]
    # texts falling at the best threshold but kept at a lower one: the only ones whose answers differ
    n = len(conf)
    best = int(np.flatnonzero(curve.accuracy == curve.accuracy.max())[0])
    fell = np.round(curve.fall_through_rate * n).astype(int)
    only_neural = np.concatenate([[0], np.cumsum(neural_ok & ~cheap_ok)])
    only_cheap = np.concatenate([[0], np.cumsum(cheap_ok & ~neural_ok)])
    chosen, b_c, p_chosen = best, (0, 0), 1.0
    for i in range(best - 1, -1, -1):
        b = int(only_neural[fell[best]] - only_neural[fell[i]])
        c = int(only_cheap[fell[best]] - only_cheap[fell[i]])
        p = float(binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0
        if p < alpha or curve.accuracy[best] - curve.accuracy[i] > max_drop + 1e-12:
            break
        chosen, b_c, p_chosen = i, (b, c), p
    return RuleChoice(float(curve.thresholds[chosen]), float(curve.accuracy[chosen]),
                      float(curve.fall_through_rate[chosen]), float(curve.thresholds[best]),
                      float(curve.accuracy[best]), float(curve.fall_through_rate[best]), b_c[0], b_c[1], p_chosen)


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
