"""The cascade's two stages as the server runs them: the cheap stage on a thread of its own, one slice of a
request at a time, and the neural stage behind the micro-batcher; big requests never stall small ones.

A request's texts go to the cheap stage in slices of at most ``slice_chars`` characters, one slice per call
on the stage's single thread, and the next slice is queued only when the previous one is done: a small
request that arrives meanwhile waits for one slice, not for the whole big request. The batcher shares each
neural micro-batch among the requests waiting in the same way. Every answer is still the one
:meth:`Cascade.classify` gives the same text, since no stage's answer depends on a text's batch mates.
Cancelling :meth:`Pipeline.route` (a client gone, a shutdown past its grace period) stops its remaining
slices and withdraws its texts from the neural queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from ..limits import chunks
from ..model import Cascade
from .batcher import NeuralBatcher


class Pipeline:
    """Routes requests' texts through ``model``'s stages: :meth:`route` gives their final probabilities and
    which texts the neural stage answered, using and filling the model's answer cache at its own threshold."""

    def __init__(self, model: Cascade, batcher: NeuralBatcher, slice_chars: int) -> None:
        self.model = model
        self.batcher = batcher
        self._slices = replace(model.cheap.limits, chunk_chars=slice_chars)
        self._cheap = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-cheap")

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        """Drop queued work, wait for the slice and the micro-batch running now, and stop both threads."""
        await self.batcher.stop()
        self._cheap.shutdown(wait=True, cancel_futures=True)

    async def route(self, texts: list[str], threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(final probabilities, answered by the neural stage) of ``texts``, at ``threshold`` (None: the
        bundle's own; at the bundle's own, repeated texts are answered from the cache, neural part included)."""
        m = self.model
        if not texts:
            return np.empty((0, len(m.labels))), np.zeros(0, dtype=bool)
        loop = asyncio.get_running_loop()
        parts = [await loop.run_in_executor(self._cheap, _cheap_slice, m, texts[a:b], threshold)
                 for a, b in chunks(texts, self._slices)]
        probs = np.concatenate([p[0] for p in parts])
        to_neural = np.concatenate([p[1] for p in parts])
        fresh = np.concatenate([p[2] for p in parts])
        ask = to_neural & fresh  # repeated texts were answered from the cache, neural part included
        neural = await self.batcher.submit([texts[i] for i in np.flatnonzero(ask)]) if ask.any() else None
        probs = m.merge_neural(probs, ask, neural)
        keys = [key for p in parts for key in p[3]] if parts and parts[0][3] is not None else None
        if keys is not None and fresh.any():
            rows = np.flatnonzero(fresh)
            m.cache.put_many([keys[i] for i in rows], probs[rows], to_neural[rows], parts[0][4])
        return probs, to_neural


def _cheap_slice(m: Cascade, texts: list[str], threshold: float | None) -> tuple[Any, ...]:
    """The cheap stage's probabilities and routing of the texts the answer cache does not hold (at the
    bundle's own threshold; a request at another threshold bypasses the cache), and the cached answers of
    the rest: (probabilities, answered by the neural stage, computed now, cache keys or None, cache state)."""
    if not m.uses_cache(threshold):
        probs, to_neural = m.route_cheap(texts, threshold)
        return probs, to_neural, np.ones(len(texts), dtype=bool), None, None
    rows = m.cached_rows(texts)
    if rows.fresh.any():
        fresh = np.flatnonzero(rows.fresh)
        rows.probs[fresh], rows.to_neural[fresh] = m.route_cheap([texts[i] for i in fresh], None)
    return rows.probs, rows.to_neural, rows.fresh, rows.keys, rows.state
