"""The neural stage behind an asyncio queue: fall-through texts from all concurrent requests are gathered
into micro-batches, run on one worker thread, so the event loop never waits on onnxruntime.

A batch starts as soon as the neural stage is free and holds at most ``max_batch`` texts and ``max_chars``
characters (one text at least), taken in turn from every waiting request: a request of 250 long texts
and a request of one text share the next batch, so the small one never waits behind the big one's whole
work. If fewer texts are waiting than a batch holds, it waits at most ``max_wait_ms`` for more. While one
batch runs, the next one fills, so batches grow with the load. The queue is bounded: a request that would
push it past ``max_queue`` texts is refused at once (:class:`Overloaded`), one that could never fit is
refused as such (:class:`TooLarge`). A cancelled request's texts leave the queue. A text's answer does not
depend on its batch mates.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Overloaded(Exception):
    """The neural stage's queue is full; the caller should retry later."""


class TooLarge(Exception):
    """More texts than the queue can ever hold: retrying cannot help; send fewer per request."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    taken: int = 0  # texts handed to batches so far
    parts: list[np.ndarray] = field(default_factory=list)  # their probabilities, in order


class NeuralBatcher:
    """Runs ``predict(texts) -> probabilities`` for many callers, in micro-batches (or, with
    ``batching=False``, one caller's texts at a time: the baseline the benchmark compares with)."""

    def __init__(self, predict: Callable[[list[str]], np.ndarray], *, max_batch: int = 64,
                 max_chars: int = 32_768, max_wait_ms: float = 0.0, max_queue: int = 4096, batching: bool = True,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_chars = max_chars
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.batching = batching
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-neural")
        self._waiting: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.queued = 0  # texts waiting or running

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="cascade-neural-batcher")

    async def stop(self) -> None:
        """Cancel what is queued, let the batch running now finish, and stop the worker."""
        for job in self._waiting:
            job.future.cancel()
        self._waiting.clear()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """The neural stage's probabilities for ``texts``, in order; raises :class:`Overloaded` (or
        :class:`TooLarge`) at once when the queue cannot take them."""
        if self._wake is None:
            raise RuntimeError("the batcher is not started")
        if len(texts) > self.max_queue:
            raise TooLarge(f"{len(texts)} texts fall through, more than the neural queue holds ({self.max_queue}); "
                           "send fewer texts per request")
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self.queued} texts are waiting for the neural stage (limit {self.max_queue})")
        self.queued += len(texts)
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._wake.set()
        try:
            return await job.future
        finally:
            self.queued -= len(texts)
            job.future.cancel()  # a cancelled caller: its texts leave the queue (no-op once answered)

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next batch: (job, start, end) spans, texts taken one at a time from each job in turn."""
        jobs = [job for job in self._waiting if not job.future.done()]
        if not self.batching:
            jobs = jobs[:1]
        taken = {id(job): 0 for job in jobs}
        n = chars = 0
        full = False
        while not full:
            added = False
            for job in jobs:
                i = job.taken + taken[id(job)]
                if i >= len(job.texts):
                    continue
                size = len(job.texts[i])
                if n >= self.max_batch or (n and chars + size > self.max_chars):
                    full = True
                    break
                taken[id(job)] += 1
                n, chars, added = n + 1, chars + size, True
            if not added:
                break
        spans = [(job, job.taken, job.taken + taken[id(job)]) for job in jobs if taken[id(job)]]
        for job, _, end in spans:
            job.taken = end
        self._waiting = deque(job for job in self._waiting if not job.future.done() and job.taken < len(job.texts))
        return spans

    def _pending(self) -> int:
        return sum(len(job.texts) - job.taken for job in self._waiting if not job.future.done())

    async def _run(self) -> None:
        if self._wake is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending():
                self._wake.clear()
                await self._wake.wait()
            if self.batching and self.max_wait > 0 and self._pending() < self.max_batch:
                deadline = loop.time() + self.max_wait
                while self._pending() < self.max_batch and (remaining := deadline - loop.time()) > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
            spans = self._take()
            if not spans:
                continue
            texts = [t for job, start, end in spans for t in job.texts[start:end]]
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as exc:
                for job, _, _ in spans:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(texts), time.perf_counter() - started)
            offset = 0
            for job, start, end in spans:
                rows = probs[offset:offset + end - start]
                offset += end - start
                if job.future.done():  # a cancelled request: its rows are dropped
                    continue
                job.parts.append(rows)
                if end == len(job.texts):
                    job.future.set_result(job.parts[0] if len(job.parts) == 1 else np.concatenate(job.parts))
