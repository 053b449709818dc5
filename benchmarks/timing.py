"""Timing helpers shared by the benchmarks: interleaved repetitions, warm-up excluded, medians."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def per_call_latencies(fn: Callable[[str], object], texts: Sequence[str]) -> np.ndarray:
    """Seconds taken by ``fn(text)`` for each text, one call per text (as a web request would be)."""
    out = np.empty(len(texts))
    for i, text in enumerate(texts):
        start = time.perf_counter()
        fn(text)
        out[i] = time.perf_counter() - start
    return out


def interleaved(systems: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, np.ndarray]:
    """Run each system's measurement ``rounds`` times, round-robin so drift hits all alike; the first
    ``warmup`` rounds are discarded."""
    results: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(warmup + rounds):
        for name, measure in systems.items():
            value = measure()
            if r >= warmup:
                results[name].append(value)
    return {name: np.array(v) for name, v in results.items()}


def spread(values: np.ndarray) -> str:
    """median [min-max] for a table cell."""
    return f"{np.median(values):,.0f} [{values.min():,.0f}-{values.max():,.0f}]"
