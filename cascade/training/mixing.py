"""Both stages' votes: how much the cheap stage's probabilities count for texts that fall through.

The neural stage answers the texts the cheap stage is unsure of, but the cheap stage still knows
something about them, and the two err on different texts. :func:`fit_cheap_weight` chooses the weight
of the cheap stage's vote on validation, among the texts that would fall through (the less confident
half), by the log-loss of the mixed probabilities; 0 (the neural stage alone) is always a candidate.
"""

from __future__ import annotations

import numpy as np

GRID = np.round(np.arange(0.0, 0.95, 0.05), 2)
SHARE = 0.5  # the less confident half of validation: where any sensible threshold sends texts on


def fit_cheap_weight(cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The weight w in ``grid`` minimising the mean log-loss of ``w * cheap + (1 - w) * neural`` on the
    validation texts whose cheap-stage max probability is in the lower ``SHARE``; ties to the smaller w."""
    conf = cheap.max(axis=1)
    low = conf <= np.quantile(conf, SHARE)
    rows = np.flatnonzero(low)
    losses = [float(-np.mean(np.log(np.clip(w * cheap[rows, y[rows]] + (1 - w) * neural[rows, y[rows]], 1e-12, 1))))
              for w in grid]
    best = min(range(len(grid)), key=lambda i: (round(losses[i], 12), i))
    return float(grid[best])


def fit_cheap_weight_topics(cheap: np.ndarray, neural: np.ndarray, y: np.ndarray, conf: np.ndarray,
                            grid: np.ndarray = GRID) -> float:
    """A tagger's weight: the w in ``grid`` minimising the mean binary log-loss, over every topic, of
    ``w * cheap + (1 - w) * neural`` on the selection texts whose set confidence ``conf`` is in the lower
    ``SHARE``; ties to the smaller w."""
    rows = np.flatnonzero(conf <= np.quantile(conf, SHARE))
    truth = y[rows].astype(bool)

    def loss(w: float) -> float:
        p = np.clip(w * cheap[rows] + (1 - w) * neural[rows], 1e-12, 1 - 1e-12)
        return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))

    losses = [loss(float(w)) for w in grid]
    best = min(range(len(grid)), key=lambda i: (round(losses[i], 12), i))
    return float(grid[best])
