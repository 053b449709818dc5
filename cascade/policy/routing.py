"""Routing: a cheap-stage confidence per text, the one place a threshold applies, and "none of these".

A text whose confidence (:func:`routing_confidence`) is below the threshold falls through to the neural
stage (:func:`fall_through`); its answer is then both stages' votes combined (:func:`fallthrough_answer`,
by a :class:`~cascade.policy.mix.Mix`). A bundle that may abstain answers "none of these" where the final
answer's probability is under its cut (:func:`abstains`, the cut chosen by :func:`abstain_cut`).
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from .mix import NEURAL_ALONE, Mix
from .multilabel import Decisions, assign, set_confidence

MEASURES = ("max_prob", "margin")  # a single-label bundle's confidence measures


def confidence(probs: np.ndarray, measure: str = "max_prob") -> np.ndarray:
    """The cheap stage's confidence in its answer: its largest class probability (``max_prob``) or
    the largest minus the second largest (``margin``)."""
    if measure == "max_prob":
        return probs.max(axis=-1)
    if measure == "margin":
        top2 = np.partition(probs, -2, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    raise ValueError(f"unknown confidence measure {measure!r}; use one of {MEASURES}")


def routing_confidence(probs: np.ndarray, measure: str = "max_prob",
                       always_neural: np.ndarray | None = None, decisions: Decisions | None = None) -> np.ndarray:
    """The confidence the threshold is compared with: :func:`confidence` (for a multi-label bundle, given
    its ``decisions``: the confidence in the whole set of topics assigned,
    :func:`cascade.policy.multilabel.set_confidence`), except that texts the cheap stage assigns to a class in
    ``always_neural`` (class indices, set by per-class calibration) get -1, below every threshold."""
    if decisions is None:
        conf = confidence(probs, measure)
        if always_neural is not None and len(always_neural):
            conf = np.where(np.isin(probs.argmax(axis=-1), always_neural), -1.0, conf)
        return conf
    conf = set_confidence(probs, decisions.cheap, measure, decisions.at_least_one)
    if always_neural is not None and len(always_neural):
        chosen = assign(probs, decisions.cheap, decisions.at_least_one)
        conf = np.where(chosen[:, always_neural].any(axis=1), -1.0, conf)
    return conf


def fallthrough_answer(cheap: np.ndarray, neural: np.ndarray, mix: Mix = NEURAL_ALONE,
                       multi_label: bool = False) -> np.ndarray:
    """The probabilities given to a text that falls through: both stages' votes combined by ``mix``
    (fitted on validation, :mod:`cascade.training.mixing`; by default the neural stage alone)."""
    return mix.answer(cheap, neural, multi_label)


def abstains(final: np.ndarray, below: float | None) -> np.ndarray:
    """True where the bundle answers "none of these": its final answer's probability is under ``below``."""
    if below is None:
        return np.zeros(len(final), dtype=bool)
    return final.max(axis=-1) < below


def fall_through(conf: np.ndarray, threshold: float) -> np.ndarray:
    """True where a text goes to the neural stage: its confidence is below the threshold."""
    return conf < threshold


def check_threshold(threshold: float) -> float:
    """A threshold as a float in [0, 1] (any real number type, numpy's included; not bool, not NaN)."""
    try:
        ok = not isinstance(threshold, bool) and isinstance(threshold, Real) and 0.0 <= float(threshold) <= 1.0
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"threshold must be a number between 0 and 1, got {repr(threshold)[:40]}")
    return float(threshold)


def abstain_cut(final: np.ndarray, max_rejected_share: float) -> float:
    """The "none of these" cut: the largest probability below which at most ``max_rejected_share`` of
    these (in-scope, selection) texts' final answers fall."""
    if not 0.0 < max_rejected_share < 1.0:
        raise ValueError(f"the share of in-scope texts that may be rejected must be in (0, 1), got {max_rejected_share}")
    top = np.sort(final.max(axis=1))
    return float(top[int(np.floor(max_rejected_share * len(top)))])
