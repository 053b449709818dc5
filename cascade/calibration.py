"""Choosing the routing threshold from a labelled validation set, with promises that hold.

:class:`Calibrator` (``cascade.calibrate(model, texts, labels)``) does the work:

1. It splits the validation set by text hash: 30% *fits* the score and 70% *certifies* it, so that
   every figure it promises comes from texts the score was not fitted on.
2. On the fit part it fits a temperature per stage (minimum log-loss), reports the expected calibration
   error (ECE) before and after, and picks the confidence measure, max probability or top-1 minus
   top-2 margin, with the lower area under the risk-coverage curve (AURC).
3. On the certify part it draws the curve: for every threshold, the fall-through rate, the cascade's
   accuracy, the accuracy of the texts the cheap stage keeps, and the expected ms per text from
   per-stage costs timed during calibration.
4. :meth:`Calibrator.choose` picks a threshold by one of four rules:

   * ``target_accuracy`` with ``confidence``: Learn-then-Test fixed-sequence testing (Angelopoulos et
     al., 2021) over a fixed grid of 201 thresholds. Two sequences walk down the grid towards less
     fall-through, one from the threshold that sends every text to the neural stage and one from the
     threshold most accurate on the fit part, so neither order depends on the certifying texts. Each runs
     at level (1 - ``confidence``) / 2 (Bonferroni): at each threshold the null "accuracy < target" is
     rejected when the exact one-sided Clopper-Pearson lower bound reaches the target, and a sequence
     stops at its first failure. All rejected thresholds keep their promise together with probability
     at least ``confidence``, so the one with the lowest fall-through rate is taken: with probability at
     least ``confidence`` over the draw of the validation set, its accuracy on unseen data from the same
     distribution is at least the target.
   * ``fallthrough``: at most this share of texts goes to the neural stage (a quantile, as RouteLLM).
   * ``latency_ms``: expected cost per text within a budget.
   * ``match_neural``: cascade accuracy within this many points of the neural stage alone.

   An infeasible request returns the closest feasible choice, with ``feasible=False`` and a reason,
   and warns (:class:`CalibrationWarning`).

:func:`threshold_curve` and :func:`best_accuracy_threshold` are the simple rule that bundle builds use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from .bundle import Bundle
    from .router import Cascade

log = logging.getLogger(__name__)


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


# --- statistics -----------------------------------------------------------------------------------


class CalibrationWarning(UserWarning):
    """A calibration result holds with caveats: a target cannot be met, or the data is suspect."""


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 probability: the bin-size-weighted mean |accuracy - confidence| over equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(total / len(y))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the log-loss of softmax(logits / T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(logsumexp(z, axis=1) - z[rows, y]))

    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def aurc(conf: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean error rate of the k most confident answers, over k."""
    from .evaluation import risk_coverage

    _, accuracy = risk_coverage(conf, correct)
    return float(np.mean(1.0 - accuracy))


def clopper_pearson_lower(k: np.ndarray | int, n: int, confidence: float) -> np.ndarray:
    """Exact one-sided lower confidence bound for a binomial proportion with k successes in n."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lower = beta.ppf(1.0 - confidence, k, n - k + 1.0)
    return np.where(k <= 0, 0.0, lower)


def samples_needed(accuracy: float, target: float, confidence: float, limit: int = 1_000_000) -> int | None:
    """About how many labelled texts, at this observed accuracy, make the lower bound reach the target
    (None when the accuracy itself is not above the target)."""
    if accuracy <= target:
        return None
    lo, hi = 1, 1
    while clopper_pearson_lower(np.floor(accuracy * hi), hi, confidence) < target:
        hi *= 2
        if hi > limit:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if clopper_pearson_lower(np.floor(accuracy * mid), mid, confidence) >= target:
            hi = mid
        else:
            lo = mid + 1
    return int(lo)


def grid_correct_counts(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray,
                        grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(texts falling through, texts answered correctly) of the cascade at each threshold of ``grid``."""
    order = np.argsort(conf, kind="stable")
    c = conf[order]
    cum_neural = np.concatenate([[0], np.cumsum(np.asarray(neural_ok, dtype=np.int64)[order])])
    cum_cheap = np.concatenate([[0], np.cumsum(np.asarray(cheap_ok, dtype=np.int64)[order])])
    fall = np.searchsorted(c, grid, side="left")  # texts with confidence < threshold
    return fall, cum_neural[fall] + cum_cheap[-1] - cum_cheap[fall]


def fixed_sequence_threshold(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray, target: float,
                             confidence: float, grid: np.ndarray,
                             order: np.ndarray | None = None) -> tuple[int | None, np.ndarray]:
    """Learn-then-Test fixed-sequence testing over ``grid``: the index of the lowest threshold certified
    to reach ``target`` accuracy at ``confidence`` (None if none is), and every threshold's lower bound.

    Thresholds are tested in ``order`` (default: highest first), which must not depend on these data;
    testing stops at the first whose bound falls short. All thresholds rejected before that hold their
    promise together with probability >= ``confidence``, so the lowest of them may be taken."""
    n = len(conf)
    _, correct = grid_correct_counts(conf, cheap_ok, neural_ok, grid)
    lower = clopper_pearson_lower(correct, n, confidence)
    rejected = []
    for i in (np.arange(len(grid))[::-1] if order is None else order):
        if lower[i] < target:
            break
        rejected.append(int(i))
    return (min(rejected) if rejected else None), lower


def plug_in_threshold(conf: np.ndarray, cheap_ok: np.ndarray, neural_ok: np.ndarray, target: float,
                      grid: np.ndarray) -> int | None:
    """The naive rule, for comparison: the lowest grid threshold whose validation accuracy reaches the
    target (no allowance for the validation set being a sample)."""
    _, correct = grid_correct_counts(conf, cheap_ok, neural_ok, grid)
    ok = np.flatnonzero(correct / len(conf) >= target)
    return int(ok[0]) if len(ok) else None


# --- the calibrator ------------------------------------------------------------------------------

FIT_FRACTION = 0.3
GRID = np.round(np.linspace(0.0, 1.0, 201), 6)  # thresholds tested by target_accuracy: fixed in advance


def _fit_part(texts: Sequence[str]) -> np.ndarray:
    """A mask of the texts that fit the score (about FIT_FRACTION of them, by a salted text hash: unsalted,
    it would follow the hash order that carved the validation split out of the training data)."""
    def draw(text: str) -> float:
        return int(hashlib.sha256(b"cascade-fit-split:" + text.encode("utf-8", "replace")).hexdigest()[:8], 16) / 16**8

    return np.array([draw(t) < FIT_FRACTION for t in texts], dtype=bool)


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


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


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it is expected to give; ``feasible=False`` says the request could not be met."""

    threshold: float
    measure: str
    mode: str
    request: dict[str, float]
    expected: dict[str, float]
    feasible: bool = True
    reason: str = ""
    always_neural: tuple[str, ...] = ()  # per-class calibration: labels whose texts always fall through

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass
class _Policy:
    """What one routing policy sees on the certify part and on the fit part."""

    conf: np.ndarray
    cheap_ok: np.ndarray
    neural_ok: np.ndarray
    fit: tuple[np.ndarray, np.ndarray, np.ndarray]  # (conf, cheap_ok, neural_ok) on the fit part
    costs_ms: dict[str, float]
    always_neural: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.curve = build_curve(self.conf, self.cheap_ok, self.neural_ok, self.costs_ms)


@dataclass
class Calibrator:
    """Fits calibrated scores on a validation set and chooses thresholds with stated guarantees."""

    model: "Cascade"
    measures: tuple[str, ...] = ("max_prob", "margin")
    temperatures_: dict[str, float] = field(default_factory=dict)
    measure_: str = ""
    ece_: dict[str, dict[str, float]] = field(default_factory=dict)
    aurc_: dict[str, float] = field(default_factory=dict)
    costs_ms_: dict[str, float] = field(default_factory=dict)
    n_fit_: int = 0
    n_certify_: int = 0
    warnings_: list[str] = field(default_factory=list)
    choice_: ThresholdChoice | None = None

    def calibrate(self, texts: Sequence[str], labels: Sequence[str]) -> "Calibrator":
        """Score the validation set with both stages, fit temperatures, pick the measure, draw the curve."""
        from .inputs import as_text_list
        from .router import MEASURES, confidence
        from .stages.cheap import softmax

        texts, _ = as_text_list(texts)
        labels = [str(label) for label in labels]
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown confidence measures {unknown}; use some of {MEASURES}")
        self.warnings_ = []
        y = self._check_labels(labels)
        self._check_overlap(texts)

        start = time.perf_counter()
        cheap_logits = self.model.cheap.logits(texts)
        cheap_s = time.perf_counter() - start
        start = time.perf_counter()
        neural_logits = self.model.neural.logits(texts)
        neural_s = time.perf_counter() - start
        self.costs_ms_ = {"cheap": 1e3 * cheap_s / len(texts), "neural": 1e3 * neural_s / len(texts)}

        fit = _fit_part(texts)
        if fit.all() or not fit.any():
            raise ValueError(f"need more validation texts: {len(texts)} cannot be split into fit and certify parts")
        known = y >= 0
        self.n_fit_, self.n_certify_ = int(fit.sum()), int((~fit).sum())
        for name, logits in (("cheap", cheap_logits), ("neural", neural_logits)):
            use = fit & known
            t = fit_temperature(logits[use], y[use])
            self.temperatures_[name] = t
            certify = ~fit & known
            self.ece_[name] = {
                "before": expected_calibration_error(softmax(logits[certify]), y[certify]),
                "after": expected_calibration_error(softmax(logits[certify] / t), y[certify]),
            }
        cheap_p = softmax(cheap_logits / self.temperatures_["cheap"])
        neural_p = softmax(neural_logits / self.temperatures_["neural"])
        cheap_ok = cheap_p.argmax(1) == y
        self.aurc_ = {m: aurc(confidence(cheap_p[fit], m), cheap_ok[fit]) for m in self.measures}
        self.measure_ = min(self.measures, key=lambda m: self.aurc_[m])
        neural_ok = neural_p.argmax(1) == y
        self._parts = {"fit": fit, "cheap_p": cheap_p, "cheap_ok": cheap_ok, "neural_ok": neural_ok, "y": y}
        self._policies = {False: self._make_policy(())}
        self.choice_ = None
        log.info("calibrated on %d texts (%d fit, %d certify): temperatures %s, measure %s (AURC %s)",
                 len(texts), self.n_fit_, self.n_certify_, self.temperatures_, self.measure_, self.aurc_)
        return self

    # -- guard rails --

    def _warn(self, message: str) -> None:
        self.warnings_.append(message)
        warnings.warn(message, CalibrationWarning, stacklevel=3)

    def _check_labels(self, labels: list[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.model.labels)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            self._warn(
                f"{sum(label in unknown for label in labels)} validation texts have labels the bundle does not "
                f"know (e.g. {unknown[:3]}); they count as errors of both stages. Is this the right bundle?"
            )
        absent = set(index) - set(labels)
        if len(absent) > len(index) // 2:
            self._warn(f"the validation set covers only {len(index) - len(absent)} of the bundle's "
                       f"{len(index)} labels; its figures describe that subset")
        return np.array([index.get(label, -1) for label in labels], dtype=np.int64)

    def _check_overlap(self, texts: list[str]) -> None:
        from .bundle import text_hash

        seen = self.model.bundle.train_hashes() if self.model.bundle is not None else None
        if seen is None:
            log.info("the bundle records no training-text hashes; overlap with training data not checked")
            return
        overlap = sum(text_hash(t) in seen for t in texts)
        if overlap:
            self._warn(f"{overlap} of {len(texts)} validation texts ({overlap / len(texts):.1%}) are training "
                       "texts of this bundle; the figures promised will be optimistic: use held-out data")

    # -- the curve and the choices --

    def _require_fitted(self) -> None:
        if not self.measure_:
            raise RuntimeError("call calibrate(texts, labels) first")

    @property
    def curve(self) -> Curve:
        """Every distinct routing of the certify part, with its expected figures."""
        return self.curve_for(per_class=False)

    def curve_for(self, per_class: bool) -> Curve:
        """The curve with (``per_class=True``) or without the always-neural classes of per-class calibration."""
        return self._policy(per_class).curve

    def _make_policy(self, always_neural: tuple[str, ...]) -> _Policy:
        from .router import routing_confidence

        p = self._parts
        fit, idx = p["fit"], np.array([self.model.labels.index(c) for c in always_neural], dtype=np.int64)
        conf = routing_confidence(p["cheap_p"], self.measure_, idx)
        return _Policy(conf[~fit], p["cheap_ok"][~fit], p["neural_ok"][~fit],
                       (conf[fit], p["cheap_ok"][fit], p["neural_ok"][fit]), self.costs_ms_, always_neural)

    def _policy(self, per_class: bool) -> _Policy:
        self._require_fitted()
        if per_class not in self._policies:
            self._policies[per_class] = self._make_policy(self.flag_classes())
        return self._policies[per_class]

    def flag_classes(self, alpha: float = 0.05) -> tuple[str, ...]:
        """Classes whose cheap-stage answers are much less often right than the rest, on the fit part:
        among fit texts the cheap stage assigns to the class, an exact one-sided binomial test against its
        overall fit accuracy, Bonferroni-corrected over the classes it assigned. Per-class calibration
        sends these classes' texts to the neural stage whatever their confidence."""
        from scipy.stats import binom

        self._require_fitted()
        p = self._parts
        fit = p["fit"]
        pred, ok = p["cheap_p"][fit].argmax(1), p["cheap_ok"][fit]
        overall = float(ok.mean())
        classes = np.unique(pred)
        flagged = [self.model.labels[c] for c in classes
                   if binom.cdf(int(ok[pred == c].sum()), int((pred == c).sum()), overall) < alpha / len(classes)]
        return tuple(flagged)

    def _expected(self, policy: _Policy, threshold: float, confidence: float) -> dict[str, float]:
        from .router import fall_through

        n = len(policy.conf)
        mask = fall_through(policy.conf, threshold)
        correct = int(np.where(mask, policy.neural_ok, policy.cheap_ok).sum())
        kept = ~mask
        return {
            "fall_through_rate": float(mask.mean()),
            "accuracy": correct / n,
            "accuracy_lower_bound": float(clopper_pearson_lower(correct, n, confidence)),
            "confidence": confidence,
            "cheap_kept_accuracy": float(policy.cheap_ok[kept].mean()) if kept.any() else float("nan"),
            "ms_per_text": self.costs_ms_["cheap"] + float(mask.mean()) * self.costs_ms_["neural"],
            "n_certify": n,
        }

    def choose(self, *, target_accuracy: float | None = None, confidence: float = 0.95,
               fallthrough: float | None = None, latency_ms: float | None = None,
               match_neural: float | None = None, per_class: bool = False) -> ThresholdChoice:
        """Choose a threshold by exactly one rule (see the module docstring). ``per_class=True`` first
        sends the classes :meth:`flag_classes` finds to the neural stage whatever their confidence."""
        requests = {"target_accuracy": target_accuracy, "fallthrough": fallthrough, "latency_ms": latency_ms,
                    "match_neural": match_neural}
        given = {k: v for k, v in requests.items() if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of target_accuracy, fallthrough, latency_ms, match_neural; "
                             f"got {sorted(given) or 'none'}")
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        policy = self._policy(per_class)
        curve = policy.curve
        mode, value = next(iter(given.items()))
        value = float(value)
        if mode == "target_accuracy":
            choice = self._by_target(policy, value, confidence)
        elif mode == "fallthrough":
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fallthrough must be a share between 0 and 1, got {value}")
            choice = self._by_curve(policy, mode, value, curve.fall_through_rate <= value + 1e-12, confidence,
                                    f"no threshold sends at most {value:.1%} of texts to the neural stage")
        elif mode == "latency_ms":
            if value <= 0:
                raise ValueError(f"latency_ms must be positive, got {value}")
            choice = self._by_curve(
                policy, mode, value, curve.ms_per_text <= value, confidence,
                f"even the cheapest routing costs {curve.ms_per_text[0]:.3f} ms per text here, over "
                f"the {value} ms budget",
            )
        else:
            if value < 0:
                raise ValueError(f"match_neural is a number of accuracy points >= 0, got {value}")
            neural_acc = float(np.mean(policy.neural_ok))
            choice = self._by_curve(policy, mode, value, curve.accuracy >= neural_acc - value / 100 - 1e-12,
                                    confidence, "no threshold comes that close to the neural stage")
        self.choice_ = choice
        if not choice.feasible:
            self._warn(choice.reason)
        return choice

    def _by_curve(self, policy: _Policy, mode: str, value: float, allowed: np.ndarray, confidence: float,
                  why_not: str) -> ThresholdChoice:
        curve = policy.curve
        if allowed.any():
            # fallthrough, latency: the allowed threshold sending the most texts on (the most accurate);
            # match_neural: the allowed one sending the fewest
            i = int(np.flatnonzero(allowed)[0 if mode == "match_neural" else -1])
            t = float(curve.threshold[i])
            return ThresholdChoice(t, self.measure_, mode, {mode: value}, self._expected(policy, t, confidence),
                                   always_neural=policy.always_neural)
        closest = 0 if mode in ("fallthrough", "latency_ms") else int(np.argmax(curve.accuracy))
        t = float(curve.threshold[closest])
        return ThresholdChoice(t, self.measure_, mode, {mode: value}, self._expected(policy, t, confidence), False,
                               f"{why_not}; closest feasible: threshold {t:.4f}", policy.always_neural)

    def _by_target(self, policy: _Policy, target: float, confidence: float) -> ThresholdChoice:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target_accuracy must be between 0 and 1, got {target}")
        request = {"target_accuracy": target, "confidence": confidence}
        # Two sequences walk down towards less fall-through, each at level (1 - confidence) / 2: one from
        # the threshold that sends every text to the neural stage, one from the threshold most accurate on
        # the fit part. Neither order depends on the certifying texts; Bonferroni covers using both.
        _, fit_correct = grid_correct_counts(*policy.fit, GRID)
        starts = sorted({len(GRID) - 1, int(np.argmax(fit_correct))})
        level = 1.0 - (1.0 - confidence) / len(starts)
        found = []
        for start in starts:
            i, lower = fixed_sequence_threshold(policy.conf, policy.cheap_ok, policy.neural_ok, target, level, GRID,
                                                np.arange(start, -1, -1))
            if i is not None:
                found.append(i)
        chosen = min(found) if found else None
        if chosen is not None:
            t = float(GRID[chosen])
            return ThresholdChoice(t, self.measure_, "target_accuracy", request, self._expected(policy, t, level),
                                   always_neural=policy.always_neural)
        best = int(np.argmax(lower))
        t = float(GRID[best])
        expected = self._expected(policy, t, level)
        n = len(policy.conf)
        where = (f"validation accuracy {expected['accuracy']:.2%} at threshold {t:.3f}, "
                 f"{expected['fall_through_rate']:.1%} falling through")
        bound = f"lower bound (at {level:.1%} for each of the {len(starts)} test sequences)"
        if lower[best] >= target:
            reason = (f"accuracy {target:.2%} cannot be promised at confidence {confidence:.0%}: both test sequences "
                      f"stopped at thresholds that fell short before reaching the one whose {bound} is "
                      f"{lower[best]:.2%} ({where}); more validation data would settle it. "
                      "Closest feasible: that threshold, uncertified")
        else:
            needed = samples_needed(expected["accuracy"], target, level)
            more = (f"about {needed:,} certifying texts (a validation set of about {needed / (1 - FIT_FRACTION):,.0f}) "
                    "at this accuracy would let it be promised" if needed
                    else "the stages are not accurate enough on this data for more of it to help")
            reason = (f"accuracy {target:.2%} cannot be promised at confidence {confidence:.0%} from {n} certifying "
                      f"texts: the best {bound} is {lower[best]:.2%} ({where}); {more}. "
                      "Closest feasible: that threshold")
        return ThresholdChoice(t, self.measure_, "target_accuracy", request, expected, False, reason,
                               policy.always_neural)

    # -- output --

    def report(self) -> dict[str, Any]:
        """What was fitted and measured, for the manifest and for people."""
        self._require_fitted()
        return {
            "measure": self.measure_,
            "cheap_temperature": self.temperatures_["cheap"],
            "neural_temperature": self.temperatures_["neural"],
            "ece": self.ece_,
            "aurc": self.aurc_,
            "costs_ms_per_text": self.costs_ms_,
            "neural_threads": self.model.neural.threads,
            "machine": machine_description(),
            "n_fit": self.n_fit_,
            "n_certify": self.n_certify_,
            "method": "temperatures and measure fitted on a 30% hash split; choices certified on the rest",
            "warnings": list(self.warnings_),
        }

    def apply(self, choice: ThresholdChoice | None = None) -> None:
        """Make the model in memory route with the calibrated scores and the chosen threshold."""
        choice = self._resolve(choice)
        self.model.cheap.temperature = self.temperatures_["cheap"]
        self.model.neural.temperature = self.temperatures_["neural"]
        self.model.measure = self.measure_
        self.model.always_neural = choice.always_neural
        self.model.threshold = choice.threshold

    def save(self, path: str | Path | None = None, choice: ThresholdChoice | None = None) -> "Bundle":
        """Write the calibration and the chosen threshold into the bundle (or a copy at ``path``),
        atomically, and apply them to the model in memory."""
        from .bundle import write_bundle

        choice = self._resolve(choice)
        bundle = self.model.bundle
        if bundle is None:
            raise ValueError("this model was not loaded from a bundle; nothing to save into")
        manifest = {k: v for k, v in bundle.manifest.items() if k not in ("files", "format_version")}
        manifest["threshold"] = choice.threshold
        manifest["calibration"] = {**self.report(), "always_neural": list(choice.always_neural),
                                   "choice": choice.to_json()}
        manifest["threshold_rule"] = f"cascade calibrate: {choice.mode} {choice.request}"
        files = {name: bundle.path / name for name in bundle.manifest["files"]}
        saved = write_bundle(path if path is not None else bundle.path, files, manifest)
        self.apply(choice)
        if path is None:
            self.model.bundle = saved
        return saved

    def _resolve(self, choice: ThresholdChoice | None) -> ThresholdChoice:
        self._require_fitted()
        choice = choice or self.choice_
        if choice is None:
            raise ValueError("choose(...) a threshold first, or pass a choice")
        return choice

    def plot(self, path: str | Path | None = None, choice: ThresholdChoice | None = None) -> Any:
        """The trade-off curve (accuracy against fall-through rate and against ms per text), the chosen
        point marked: saved as a PNG at ``path`` (returned), or returned as a matplotlib Figure (shown
        inline in a notebook). Needs matplotlib (``pip install 'cascade[plot]'``)."""
        from ._optional import require

        require("matplotlib", "plot")
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

        choice = choice or self.choice_
        policy = self._policy(bool(choice and choice.always_neural))
        curve = policy.curve
        fig = Figure(figsize=(11, 4.2))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, x, label in ((axes[0], 100 * curve.fall_through_rate, "texts falling through to the neural stage (%)"),
                             (axes[1], curve.ms_per_text, "expected ms per text")):
            ax.plot(x, 100 * curve.accuracy, color="tab:blue", label="cascade")
            ax.axhline(100 * np.mean(policy.neural_ok), color="tab:orange", ls="--", label="neural stage alone")
            ax.axhline(100 * np.mean(policy.cheap_ok), color="tab:green", ls=":", label="cheap stage alone")
            if choice is not None:
                cx = 100 * choice.expected["fall_through_rate"] if ax is axes[0] else choice.expected["ms_per_text"]
                ax.plot([cx], [100 * choice.expected["accuracy"]], "o", color="tab:red", ms=8,
                        label=f"chosen ({choice.mode}{'' if choice.feasible else ', infeasible'})")
                if choice.mode == "target_accuracy":
                    ax.axhline(100 * choice.request["target_accuracy"], color="tab:red", lw=0.8, ls="-.",
                               label="target")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"accuracy on {self.n_certify_} certifying texts (%)")
        axes[0].legend(loc="lower right", fontsize=8)
        fig.suptitle(f"cascade trade-off (confidence: {self.measure_}, calibrated)")
        fig.tight_layout()
        if path is None:
            return fig
        fig.savefig(Path(path), dpi=110)
        return Path(path)


def calibrate(model: "Cascade", texts: Sequence[str], labels: Sequence[str], **options: Any) -> Calibrator:
    """Calibrate ``model`` on a labelled validation set: ``Calibrator(model, **options).calibrate(...)``."""
    return Calibrator(model, **options).calibrate(texts, labels)
