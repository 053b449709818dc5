"""Checking a promise against labelled feedback as it arrives: an anytime-valid test by betting.

A bundle promises that its accuracy (for a tagger: exact match, or mean per-text F1) is at least ``target``.
Labelled outcomes ``x_1, x_2, ...`` in [0, 1] arrive one by one (1: right, 0: wrong; a tagger's per-text F1
in between). Under the promise (mean >= target), the capital

    K_t = prod_i (1 + lambda_i * (target - x_i)),   lambda_i in [0, c / (1 - target)], chosen from x_1..x_{i-1}

is a nonnegative supermartingale starting at 1, so by Ville's inequality the chance it ever reaches
``1 / alpha`` is at most ``alpha``, however long the stream and however often it is looked at. The alarm
fires when it does: the promise is violated at confidence ``1 - alpha``. The bets follow the aGRAPA rule of
Waudby-Smith & Ramdas ("Estimating means of bounded random variables by betting", JRSS-B 2023), which bets
more as the running mean falls further below the target. The same capital over a grid of candidate means
gives a confidence sequence for the mean: the running figures reported beside the alarm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MAX_BET = 0.5  # the share c of the largest bet that keeps the capital positive
GRID = np.linspace(0.0, 1.0, 201)


def bets(m: np.ndarray | float, mean: np.ndarray | float, var: np.ndarray | float, down: bool = True) -> np.ndarray:
    """aGRAPA bets against "the mean is at least ``m``" (``down``; else "at most ``m``"), from the running
    ``mean`` and ``var`` of the outcomes so far; clipped to keep every factor of the capital >= 1 - MAX_BET."""
    m, mean, var = np.asarray(m, float), np.asarray(mean, float), np.asarray(var, float)
    gap = (m - mean) if down else (mean - m)
    room = (1.0 - m) if down else m
    raw = gap / (var + gap ** 2)
    return np.clip(raw, 0.0, MAX_BET / np.maximum(room, 1e-12))


def log_capital_paths(outcomes: np.ndarray, target: float) -> np.ndarray:
    """The log of the capital against "mean >= ``target``" after each outcome, for many streams at once
    (``outcomes``: streams x time); what :class:`PromiseMonitor` computes one outcome at a time."""
    x = np.asarray(outcomes, float)
    streams, steps = x.shape
    capital = np.zeros(streams)
    total = np.full(streams, 0.5)  # a prior of one half-observation at 1/2: the first bets stay small
    squares = np.full(streams, 0.25)
    out = np.empty((streams, steps))
    for t in range(steps):
        mean = total / (t + 1)
        var = squares / (t + 1)
        capital = capital + np.log1p(bets(target, mean, var) * (target - x[:, t]))
        total = total + x[:, t]
        squares = squares + (x[:, t] - total / (t + 2)) ** 2
        out[:, t] = capital
    return out


@dataclass(frozen=True)
class MonitorState:
    """Where the stream stands: outcomes seen, their mean, the confidence sequence for the mean at
    ``1 - alpha`` (``lower``, ``upper``), and whether the promise is violated (``upper < target``: the alarm)."""

    n: int
    mean: float
    lower: float
    upper: float
    target: float | None
    alpha: float
    violated: bool
    log_capital: float  # against the promise; the alarm fires at log(1 / alpha)
    violated_after: int | None  # the outcome at which the alarm first fired

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return {"n": self.n, "mean": self.mean, "lower": self.lower, "upper": self.upper, "target": self.target,
                "confidence": 1.0 - self.alpha, "violated": self.violated, "log_capital": self.log_capital,
                "violated_after": self.violated_after}


class PromiseMonitor:
    """Anytime-valid monitor of "mean outcome >= ``target``" (``target`` None: the confidence sequence only)."""

    def __init__(self, target: float | None, alpha: float = 0.05) -> None:
        if target is not None and not 0.0 < target < 1.0:
            raise ValueError(f"target must be between 0 and 1, got {target}")
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must be between 0 and 0.5, got {alpha}")
        self.target, self.alpha = target, alpha
        self.n = 0
        self._total, self._squares = 0.5, 0.25
        self._sum = 0.0
        self._log_capital = 0.0
        self._down = np.zeros_like(GRID)  # log capital against "mean >= m", for each m of the grid
        self._up = np.zeros_like(GRID)  # against "mean <= m"
        self._bar = float(np.log(1.0 / alpha))
        self._upper, self._lower = 1.0, 0.0
        self._violated_after: int | None = None

    def update(self, outcomes: Iterable[float]) -> MonitorState:
        """Add outcomes (each in [0, 1]) in the order they arrived; returns the state after them."""
        for x in outcomes:
            x = float(x)
            if not 0.0 <= x <= 1.0:
                raise ValueError(f"an outcome must be between 0 and 1 (1: right, 0: wrong), got {x}")
            mean, var = self._total / (self.n + 1), self._squares / (self.n + 1)
            if self.target is not None:
                self._log_capital += float(np.log1p(bets(self.target, mean, var) * (self.target - x)))
            self._down += np.log1p(bets(GRID, mean, var) * (GRID - x))
            self._up += np.log1p(bets(GRID, mean, var, down=False) * (x - GRID))
            self.n += 1
            self._sum += x
            self._total += x
            self._squares += (x - self._total / (self.n + 1)) ** 2
            rejected_down = GRID[self._down >= self._bar]
            rejected_up = GRID[self._up >= self._bar]
            if rejected_down.size:  # the mean is below these: a running intersection keeps the bound valid
                self._upper = min(self._upper, float(rejected_down.min()))
            if rejected_up.size:
                self._lower = max(self._lower, float(rejected_up.max()))
            if self._violated_after is None and self._log_capital >= self._bar:
                self._violated_after = self.n
        return self.state

    @property
    def state(self) -> MonitorState:
        return MonitorState(self.n, self._sum / self.n if self.n else float("nan"), self._lower, self._upper,
                            self.target, self.alpha, self._violated_after is not None, self._log_capital,
                            self._violated_after)
