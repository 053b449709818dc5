"""The ways of choosing a threshold on the certify part, and what a choice says it gives.

:class:`Policy` holds what one routing sees (confidence, each text's outcome under each stage, on the
certify and the fit part); :func:`by_target` certifies an accuracy (exact binomial bounds),
:func:`by_target_f1` a mean per-text F1 (Hoeffding-Bentkus), both by fixed-sequence testing in orders fixed
before the certifying texts are seen; :func:`by_curve` reads estimates off the curve (``fallthrough``,
``latency_ms``, ``match_neural``). :func:`expected_figures` says what a threshold gives, estimate or certified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..policy.routing import fall_through
from .curves import build_curve
from .statistics import (
    GRID,
    clopper_pearson_lower,
    fixed_sequence,
    fixed_sequence_threshold,
    grid_correct_counts,
    hoeffding_bentkus_lower,
    hoeffding_bentkus_p,
    samples_needed,
)
from .traffic import TrafficCheck, supported_bound

TrafficChecker = Callable[[float], TrafficCheck]  # a threshold -> what the traffic says of it

FIT_FRACTION = 0.3  # the share of calibration texts that fit the scores; the rest certify


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it is expected to give (what :meth:`Calibrator.choose` returns).

    Attributes
    ----------
    threshold : float
        The routing cut-off.
    measure : str
        The confidence measure it applies to.
    mode : str
        What was asked for (a target accuracy, F1, fall-through rate, cost, ...).
    request : dict
        The request's numbers.
    expected : dict
        What the certifying texts say it gives (accuracy, fall-through rate, cost, the lower bound).
    feasible : bool, default True
        False: the request could not be met; ``reason`` says why and what would help.
    reason : str
        Why a request was not certified, and the closest choice that was.
    always_neural : tuple of str
        Per-class calibration: labels whose texts always fall through.
    """

    threshold: float
    measure: str
    mode: str
    request: dict[str, float]
    expected: dict[str, Any]  # cheap_kept_accuracy is None when every text falls through
    feasible: bool = True
    reason: str = ""
    always_neural: tuple[str, ...] = ()  # per-class calibration: labels whose texts always fall through

    @property
    def certified(self) -> bool:
        """True for a target-accuracy (or target-F1) choice the test certified: the only kinds that promise
        anything."""
        return self.feasible and ("accuracy_lower_bound" in self.expected or "f1_lower_bound" in self.expected)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "certified": self.certified}


@dataclass
class Policy:
    """What one routing policy sees on the certify part and on the fit part."""

    conf: np.ndarray
    cheap_ok: np.ndarray
    neural_ok: np.ndarray
    fit: tuple[np.ndarray, np.ndarray, np.ndarray]  # (conf, cheap_ok, neural_ok) on the fit part
    costs_ms: dict[str, float]
    always_neural: tuple[str, ...] = ()
    f1: tuple[np.ndarray, np.ndarray] | None = None  # multi-label: each certifying text's F1 (cheap, fallen)

    def __post_init__(self) -> None:
        self.curve = build_curve(self.conf, self.cheap_ok, self.neural_ok, self.costs_ms)


def expected_figures(policy: Policy, threshold: float, certified_at: float | None = None,
              certified: str = "accuracy") -> dict[str, Any]:
    """What a threshold gives on the certifying texts. These are estimates (``accuracy`` is measured on
    those texts; for a multi-label bundle it is exact match, and ``mean_text_f1`` the mean per-text F1);
    only a choice certified by a target test carries a lower bound, ``accuracy_lower_bound`` or
    ``f1_lower_bound`` (``certified``), at ``certified_at`` (the level each test sequence ran at)."""
    n = len(policy.conf)
    mask = fall_through(policy.conf, threshold)
    correct = int(np.where(mask, policy.neural_ok, policy.cheap_ok).sum())
    kept = ~mask
    out: dict[str, Any] = {
        "fall_through_rate": float(mask.mean()),
        "accuracy": correct / n,
        "cheap_kept_accuracy": float(policy.cheap_ok[kept].mean()) if kept.any() else None,
        "ms_per_text": policy.costs_ms["cheap"] + float(mask.mean()) * policy.costs_ms["neural"],
        "n_certify": n,
        "kind": "estimate",
    }
    if policy.f1 is not None:
        out["mean_text_f1"] = float(np.where(mask, policy.f1[1], policy.f1[0]).mean())
    if certified_at is not None:
        bound = (float(clopper_pearson_lower(correct, n, certified_at)) if certified == "accuracy"
                 else hoeffding_bentkus_lower(out["mean_text_f1"], n, certified_at))
        # The asked confidence (in the request) is split between the test sequences (Bonferroni), so each
        # bound is at a higher level than asked: recorded under its own name, not as "confidence".
        out.update({f"{certified}_lower_bound": bound, "bound_level_each_sequence": certified_at, "kind": "certified"})
    return out


def by_curve(policy: Policy, measure: str, mode: str, value: float, allowed: np.ndarray, confidence: float,
              why_not: str) -> ThresholdChoice:
    curve = policy.curve
    if allowed.any():
        # fallthrough, latency: the allowed threshold sending the most texts on (the most accurate);
        # match_neural: the allowed one sending the fewest
        i = int(np.flatnonzero(allowed)[0 if mode == "match_neural" else -1])
        t = float(curve.threshold[i])
        return ThresholdChoice(t, measure, mode, {mode: value}, expected_figures(policy, t),
                               always_neural=policy.always_neural)
    closest = 0 if mode in ("fallthrough", "latency_ms") else int(np.argmax(curve.accuracy))
    t = float(curve.threshold[closest])
    return ThresholdChoice(t, measure, mode, {mode: value}, expected_figures(policy, t), False,
                           f"{why_not}; closest feasible: threshold {t:.4f}", policy.always_neural)


def target_sequences(policy: Policy, confidence: float) -> tuple[list[int], float]:
    """Where target_accuracy's test sequences start on ``GRID`` (every text to the neural stage, and the
    threshold most accurate on the fit part), and the level each is tested at (Bonferroni over them)."""
    _, fit_correct = grid_correct_counts(*policy.fit, GRID)
    starts = sorted({len(GRID) - 1, int(np.argmax(fit_correct))})
    return starts, 1.0 - (1.0 - confidence) / len(starts)


RULES = ("target_accuracy", "target_f1", "fallthrough", "latency_ms", "match_neural")


def check_request(*, target_accuracy: float | None = None, target_f1: float | None = None,
                  fallthrough: float | None = None, latency_ms: float | None = None,
                  match_neural: float | None = None, confidence: float = 0.95) -> tuple[str, float]:
    """The one rule asked for and its value, checked: exactly one rule, a finite value in its range and a
    confidence in [0.5, 1). Cheap, so callers run it before any long work (``cascade calibrate`` does)."""
    given = {name: value for name, value in zip(RULES, (target_accuracy, target_f1, fallthrough, latency_ms,
                                                       match_neural)) if value is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(RULES)}; got {sorted(given) or 'none'}")
    mode, value = next(iter(given.items()))
    value = float(value)
    if not 0.5 <= float(confidence) < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence} (0.95 means the promise holds with "
                         "probability 95%)")
    if mode in ("target_accuracy", "target_f1") and not 0.0 < value < 1.0:
        hint = f" (for {value:g}% write {value / 100:g})" if 1.0 < value < 100.0 else ""
        raise ValueError(f"{mode} must be between 0 and 1, got {value}{hint}")
    if mode == "fallthrough" and not 0.0 <= value <= 1.0:
        hint = f" (for {value:g}% write {value / 100:g})" if 1.0 < value <= 100.0 else ""
        raise ValueError(f"fallthrough must be a share between 0 and 1, got {value}{hint}")
    if mode == "latency_ms" and not 0.0 < value < float("inf"):
        raise ValueError(f"latency_ms must be a positive number of milliseconds, got {value}")
    if mode == "match_neural" and not 0.0 <= value < float("inf"):
        raise ValueError(f"match_neural is a number of accuracy points >= 0, got {value}")
    return mode, value


def by_target(policy: Policy, measure: str, target: float, confidence: float,
              traffic: TrafficChecker | None = None) -> ThresholdChoice:
    """The cheapest threshold certified to reach ``target`` accuracy; with ``traffic``, the cheapest one
    the traffic supports too (see :func:`_with_traffic`). ``target``: checked by :func:`check_request`."""
    request = {"target_accuracy": target, "confidence": confidence}
    # Two sequences walk down towards less fall-through, each at level (1 - confidence) / 2: one from
    # the threshold that sends every text to the neural stage, one from the threshold most accurate on
    # the fit part. Neither order depends on the certifying texts; Bonferroni covers using both.
    starts, level = target_sequences(policy, confidence)
    found: list[int] = []
    passed: set[int] = set()
    for start in starts:
        i, lower = fixed_sequence_threshold(policy.conf, policy.cheap_ok, policy.neural_ok, target, level, GRID,
                                            np.arange(start, -1, -1))
        if i is not None:
            found.append(i)
            passed.update(range(i, start + 1))
    if traffic is not None and passed:
        return _with_traffic(policy, measure, "target_accuracy", request, sorted(passed), lower, level, traffic)
    chosen = min(found) if found else None
    if chosen is not None:
        t = float(GRID[chosen])
        return ThresholdChoice(t, measure, "target_accuracy", request, expected_figures(policy, t, level),
                               always_neural=policy.always_neural)
    best = int(np.argmax(lower))
    t = float(GRID[best])
    expected = expected_figures(policy, t)
    n = len(policy.conf)
    where = (f"certify-part accuracy {expected['accuracy']:.2%} at threshold {t:.3f}, "
             f"{expected['fall_through_rate']:.1%} falling through")
    bound = f"lower bound (at {level:.1%} for each of the {len(starts)} test sequences)"
    if lower[best] >= target:
        reason = (f"accuracy {target:.2%} cannot be promised at confidence {confidence:.0%}: both test sequences "
                  f"stopped at thresholds that fell short before reaching the one whose {bound} is "
                  f"{lower[best]:.2%} ({where}); more labelled held-out texts would settle it. "
                  "Closest feasible: that threshold, uncertified")
    else:
        needed = samples_needed(expected["accuracy"], target, level)
        more = (f"about {needed:,} certifying texts at this accuracy would let it be promised: about "
                f"{needed / (1 - FIT_FRACTION):,.0f} labelled held-out texts in all, as calibration fits on "
                f"{FIT_FRACTION:.0%} of them and certifies on the rest (a larger --certification-share when "
                "training, or `cascade calibrate --val FILE` with more held-out labelled texts)" if needed
                else "the stages are not accurate enough on this data for more of it to help")
        reason = (f"accuracy {target:.2%} cannot be promised at confidence {confidence:.0%} from {n} certifying "
                  f"texts: the best {bound} is {lower[best]:.2%} ({where}), so about {lower[best]:.1%} is the "
                  f"most these texts can promise now; {more}. Closest feasible: that threshold")
    if traffic is not None:
        expected["traffic"] = traffic(t).to_dict()
    return ThresholdChoice(t, measure, "target_accuracy", request, expected, False, reason,
                           policy.always_neural)


def _with_traffic(policy: Policy, measure: str, mode: str, request: dict[str, float], passed: list[int],
                  lower: np.ndarray, level: float, traffic: TrafficChecker) -> ThresholdChoice:
    """Of the thresholds the certifying texts certified (``passed``, grid indices, with their lower bounds),
    the cheapest whose figure the traffic supports too (:func:`cascade.calibration.traffic.supported_bound`
    reaches the target); if none, no promise, saying why with both figures."""
    target = float(request[mode])
    kind = "accuracy" if mode == "target_accuracy" else "f1"
    what = "accuracy" if kind == "accuracy" else "mean F1"
    checks = []
    for i in passed:  # cheapest first
        t = float(GRID[i])
        check = traffic(t)
        checks.append((i, check))
        if supported_bound(float(lower[i]), check) >= target:
            expected = expected_figures(policy, t, level, kind)
            expected.update(traffic=check.to_dict(), supported_lower_bound=supported_bound(float(lower[i]), check))
            return ThresholdChoice(t, measure, mode, request, expected, always_neural=policy.always_neural)
    i, check = max(checks, key=lambda c: (c[1].bound, -c[0]))
    t = float(GRID[i])
    expected = {**expected_figures(policy, t), "traffic": check.to_dict()}
    reason = (f"{what} {target:.2%} is certified on the certifying texts (at threshold {t:.3f} their lower bound is "
              f"{float(lower[i]):.2%}, their {what} {check.certify_figure:.2%}), but the traffic does not support it: on "
              f"its {check.n_traffic:,} texts the estimated {what} there is {check.estimate:.2%} (average thresholded "
              f"confidence), with a lower bound of {check.bound:.2%} at {level:.1%}; the traffic supports at most "
              f"{check.bound:.2%} at any certified threshold. Texts like the traffic were not certified: certify on "
              "labelled texts drawn like it, or ask for at most what it supports. Not promised")
    return ThresholdChoice(t, measure, mode, request, expected, False, reason, policy.always_neural)


def by_target_f1(policy: Policy, measure: str, target: float, confidence: float,
                 traffic: TrafficChecker | None = None) -> ThresholdChoice:
    """As :meth:`_by_target`, for the mean per-text F1 of a multi-label bundle: at each threshold the
    Hoeffding-Bentkus p-value for "mean F1 < target" (the loss 1 - F1 is bounded in [0, 1]) must be at
    most the level, walking the same two fixed sequences."""
    if policy.f1 is None:
        raise ValueError("target_f1 is for multi-label bundles; use target_accuracy for this one")
    request = {"target_f1": target, "confidence": confidence}
    fit_conf, fit_cheap, fit_neural = policy.fit
    _, fit_correct = grid_correct_counts(fit_conf, fit_cheap, fit_neural, GRID)
    starts = sorted({len(GRID) - 1, int(np.argmax(fit_correct))})
    level = 1.0 - (1.0 - confidence) / len(starts)
    n = len(policy.conf)
    _, f1_sums = grid_correct_counts(policy.conf, policy.f1[0], policy.f1[1], GRID)
    p_values = hoeffding_bentkus_p(1.0 - f1_sums / n, n, 1.0 - target)
    found: list[int] = []
    passed: set[int] = set()
    for start in starts:
        i = fixed_sequence(p_values <= 1.0 - level, np.arange(start, -1, -1))
        if i is not None:
            found.append(i)
            passed.update(range(i, start + 1))
    if traffic is not None and passed:
        lower = np.array([hoeffding_bentkus_lower(float(f1_sums[i] / n), n, level) for i in range(len(GRID))])
        return _with_traffic(policy, measure, "target_f1", request, sorted(passed), lower, level, traffic)
    if found:
        t = float(GRID[min(found)])
        return ThresholdChoice(t, measure, "target_f1", request, expected_figures(policy, t, level, "f1"))
    best = int(np.argmax(f1_sums))
    t = float(GRID[best])
    expected = expected_figures(policy, t)
    bound = hoeffding_bentkus_lower(expected["mean_text_f1"], n, level)
    where = (f"certify-part mean F1 {expected['mean_text_f1']:.2%} at threshold {t:.3f}, "
             f"{expected['fall_through_rate']:.1%} falling through")
    what = f"Hoeffding-Bentkus lower bound (at {level:.1%} for each of the {len(starts)} test sequences)"
    if bound >= target:
        reason = (f"mean F1 {target:.2%} cannot be promised at confidence {confidence:.0%}: both test sequences "
                  f"stopped at thresholds that fell short before reaching the one whose {what} is {bound:.2%} "
                  f"({where}). Closest feasible: that threshold, uncertified")
    else:
        reason = (f"mean F1 {target:.2%} cannot be promised at confidence {confidence:.0%} from {n} certifying texts: "
                  f"the best {what} is {bound:.2%} ({where}); more labelled held-out texts at this F1 would help. "
                  "Closest feasible: that threshold")
    if traffic is not None:
        expected["traffic"] = traffic(t).to_dict()
    return ThresholdChoice(t, measure, "target_f1", request, expected, False, reason)
