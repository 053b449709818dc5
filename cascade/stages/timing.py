"""What each stage costs per text, measured where a choice needs it (calibration's latency target, the build's
"the transformer adds nothing" note)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def ms_per_text(runs: Mapping[str, Callable[[list[str]], Any]], texts: Sequence[str], max_texts: int = 256,
                repeats: int = 5) -> dict[str, float]:
    """Milliseconds per text of each named run (a stage's ``logits``), on an evenly spaced sample of at most
    ``max_texts`` of ``texts``: the median of ``repeats`` runs (one run under a passing load would mislead).
    Warm stages are the caller's to provide (ones that have just scored texts)."""
    sample = list(texts[:: max(1, len(texts) // max_texts)][:max_texts])
    costs = {}
    for name, run in runs.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(sample)
            times.append(time.perf_counter() - start)
        costs[name] = 1e3 * float(np.median(times)) / max(len(sample), 1)
    return costs
