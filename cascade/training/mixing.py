"""Fit the answer of texts that fall through: which :class:`cascade.policy.mix.Mix`, with which weights.

Every candidate is fitted and scored on the selection texts that would fall through (the less confident
half: where any sensible threshold sends texts on), by log-loss (a tagger: binary log-loss over every topic):

* the neural stage alone (nothing to fit);
* ``linear``: the cheap stage's weight on a grid;
* ``product``: a tempered product of experts, its two weights fitted by L-BFGS-B.

:func:`fit_mix` picks the candidate with the lowest *cross-validated* log-loss (``FOLDS`` folds, so the
product's extra weight cannot win by fitting noise; ties go to the simpler), then refits it on every row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..policy.mix import MAX_PRODUCT_WEIGHT, Mix

log = logging.getLogger(__name__)

GRID = np.round(np.arange(0.0, 0.95, 0.05), 2)
SHARE = 0.5  # the less confident half of validation: where any sensible threshold sends texts on
FOLDS = 5
SEED = 0
_EPS = 1e-12


@dataclass(frozen=True)
class MixChoice:
    """The mix chosen, and every candidate's cross-validated log-loss (what it was chosen by)."""

    mix: Mix
    cv_log_loss: dict[str, float]
    n_texts: int

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.mix.kind if not self.mix.neural_alone else "neural", **self.mix.to_manifest(),
                "cv_log_loss": {k: round(v, 6) for k, v in self.cv_log_loss.items()}, "n_texts": self.n_texts,
                "folds": FOLDS}


def _loss(mix: Mix, cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    p = mix.answer(cheap, neural, multi_label)
    if multi_label:
        p = np.clip(p, _EPS, 1 - _EPS)
        return float(-np.mean(np.where(y.astype(bool), np.log(p), np.log1p(-p))))
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))))


def _fit_linear(cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, multi_label: bool) -> Mix:
    losses = [_loss(Mix("linear", float(w)), cheap, neural, y, multi_label) for w in GRID]
    best = min(range(len(GRID)), key=lambda i: (round(losses[i], 12), i))  # ties to the smaller weight
    return Mix("linear", float(GRID[best]))


def _fit_product(cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, multi_label: bool) -> Mix:
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.optimize import minimize

    def objective(w: np.ndarray) -> float:
        if w[0] == w[1] == 0.0:
            return np.inf
        return _loss(Mix("product", float(w[0]), float(w[1])), cheap, neural, y, multi_label)

    found = minimize(objective, np.array([0.5, 1.0]), method="L-BFGS-B",
                     bounds=[(0.0, MAX_PRODUCT_WEIGHT), (0.0, MAX_PRODUCT_WEIGHT)])
    a, b = (float(np.round(v, 6)) for v in found.x)
    if a == b == 0.0:
        return Mix("product", 0.0, 1.0)
    return Mix("product", a, b)


_FITTERS = {
    "neural": lambda cheap, neural, y, multi_label: Mix("linear", 0.0),
    "linear": _fit_linear,
    "product": _fit_product,
}


def fit_mix(cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, conf: np.ndarray, multi_label: bool = False,
            kinds: tuple[str, ...] = ("neural", "linear", "product")) -> MixChoice:
    """The mix among ``kinds`` with the lowest cross-validated log-loss on the selection texts whose routing
    confidence ``conf`` is in the lower ``SHARE``, refitted on all of them. ``y``: class indices, or a
    tagger's 0/1 (texts, topics) matrix."""
    rows = np.flatnonzero(conf <= np.quantile(conf, SHARE))
    c, n, t = cheap[rows], neural[rows], y[rows]
    folds = np.random.default_rng(SEED).permutation(len(rows)) % FOLDS
    cv: dict[str, float] = {}
    for kind in kinds:
        if len(rows) < 2 * FOLDS:  # too few to hold any out: score in-sample
            cv[kind] = _loss(_FITTERS[kind](c, n, t, multi_label), c, n, t, multi_label)
            continue
        total = 0.0
        for k in range(FOLDS):
            fit, held = folds != k, folds == k
            mix = _FITTERS[kind](c[fit], n[fit], t[fit], multi_label)
            total += _loss(mix, c[held], n[held], t[held], multi_label) * held.sum()
        cv[kind] = total / len(rows)
    best = min(range(len(kinds)), key=lambda i: (round(cv[kinds[i]], 9), i))  # ties to the simpler
    mix = _FITTERS[kinds[best]](c, n, t, multi_label)
    log.info("the answer of texts that fall through: %s (cross-validated log-loss %s)", mix.describe(),
             ", ".join(f"{k} {v:.4f}" for k, v in cv.items()))
    return MixChoice(mix, cv, len(rows))
