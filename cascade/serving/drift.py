"""Fall-through drift: the observed fall-through rate over a sliding window, tested against the promised one.

The bundle's calibration (or its build) measured what share of texts falls through at its threshold on
data like its certifying (or selection) texts. Served traffic unlike that data moves the share first,
before anyone sees accuracy drop. Each full window is tested with a two-sided exact binomial test; when
the p-value falls under the level, the monitor says so once (log and metrics), and once more when it
comes back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHECK_EVERY = 100  # texts between two tests (a test costs about 0.1 ms)


def promised_rate(manifest: dict[str, Any]) -> tuple[float, str] | None:
    """The fall-through rate the bundle's threshold was chosen for, and where it comes from: the
    calibration's estimate if the bundle was calibrated, else the build's selection figure."""
    expected = manifest.get("calibration", {}).get("choice", {}).get("expected", {})
    if isinstance(expected.get("fall_through_rate"), (int, float)):
        return float(expected["fall_through_rate"]), "calibration (certify part)"
    selection = manifest.get("metrics", {}).get("selection", {})
    if isinstance(selection.get("fall_through_rate"), (int, float)):
        return float(selection["fall_through_rate"]), "build (selection texts)"
    return None


class SlidingCount:
    """The last ``size`` yes/no flags and how many of them are yes (its owner holds the lock)."""

    def __init__(self, size: int) -> None:
        self._flags: deque[bool] = deque(maxlen=size)
        self.count = 0

    def add(self, flags: Iterable[bool]) -> None:
        for flag in flags:
            if len(self._flags) == self._flags.maxlen:
                self.count -= self._flags[0]
            self._flags.append(flag)
            self.count += flag

    def __len__(self) -> int:
        return len(self._flags)

    @property
    def full(self) -> bool:
        return len(self._flags) == self._flags.maxlen


@dataclass(frozen=True)
class DriftState:
    observed: float
    window: int  # texts in the window now
    p_value: float
    drifting: bool


class FallThroughMonitor:
    """Thread-safe sliding window of fall-through flags, tested against ``promised``."""

    def __init__(self, promised: float | None, source: str = "", window: int = 2000, level: float = 0.001) -> None:
        self.promised = promised
        self.source = source
        self.level = level
        self._flags = SlidingCount(window)
        self._since_check = 0
        self._lock = threading.Lock()
        self.state = DriftState(observed=0.0, window=0, p_value=1.0, drifting=False)

    def record(self, fallen: list[bool]) -> None:
        """Add the routing of texts served at the bundle's own threshold (others say nothing about drift)."""
        with self._lock:
            self._flags.add(fallen)
            self._since_check += len(fallen)
            if self._since_check >= CHECK_EVERY:
                self._check()

    def check(self) -> DriftState:
        """Test the window now (the metrics endpoint calls this) and return the state."""
        with self._lock:
            self._check()
            return self.state

    def _check(self) -> None:
        # lazy: scipy loads only when this runs, so `import cascade` stays light
        from scipy.stats import binomtest

        self._since_check = 0
        n = len(self._flags)
        observed = self._flags.count / n if n else 0.0
        full = self._flags.full
        if self.promised is None or not full:
            self.state = DriftState(observed, n, 1.0, self.state.drifting and full)
            return
        p_value = float(binomtest(self._flags.count, n, min(max(self.promised, 1e-9), 1 - 1e-9)).pvalue)
        drifting = p_value < self.level
        if drifting != self.state.drifting:
            if drifting:
                log.warning("fall-through drift: %.1f%% of the last %d texts fell through, against %.1f%% promised "
                            "by the %s (two-sided binomial test p = %.2g < %g): traffic differs from the data the "
                            "threshold was chosen on", 100 * observed, n, 100 * self.promised, self.source, p_value,
                            self.level)
            else:
                log.warning("fall-through back in line: %.1f%% of the last %d texts against %.1f%% promised "
                            "(p = %.2g)", 100 * observed, n, 100 * self.promised, p_value)
        self.state = DriftState(observed, n, p_value, drifting)
