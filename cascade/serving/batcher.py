"""The neural stage behind an asyncio queue: fall-through texts from all concurrent requests are gathered
into micro-batches, run on one worker thread, so the event loop never waits on onnxruntime.

A batch starts as soon as the neural stage is free and holds what has queued by then, up to
``max_batch`` texts (one request's texts are never split, so a large request may exceed it); if fewer
are waiting, it waits at most ``max_wait_ms`` for more. While one batch
runs, the next one fills, so batches grow with the load and throughput rises under concurrency. The
queue is bounded: a request that would push it past ``max_queue`` texts is refused (:class:`Overloaded`)
instead of waiting behind an unbounded backlog. A text's answer does not depend on its batch mates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Overloaded(Exception):
    """The neural stage's queue is full; the caller should retry later."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.perf_counter)


class NeuralBatcher:
    """Runs ``predict(texts) -> probabilities`` for many callers, in micro-batches (or, with
    ``batching=False``, one caller's texts at a time: the baseline the benchmark compares with)."""

    def __init__(self, predict: Callable[[list[str]], np.ndarray], *, max_batch: int = 64, max_wait_ms: float = 0.0,
                 max_queue: int = 4096, batching: bool = True,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.batching = batching
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-neural")
        self._jobs: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.queued = 0  # texts waiting or running

    async def start(self) -> None:
        self._jobs = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="cascade-neural-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        if self._worker is not None and self._jobs is not None:
            await self._jobs.join()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """The neural stage's probabilities for ``texts``, in order; raises :class:`Overloaded` at once when
        the queue cannot take them."""
        if self._jobs is None:
            raise RuntimeError("the batcher is not started")
        if self.queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self.queued} texts are waiting for the neural stage (limit {self.max_queue})")
        self.queued += len(texts)
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._jobs.put_nowait(job)
        try:
            return await job.future
        finally:
            self.queued -= len(texts)

    async def _run(self) -> None:
        if self._jobs is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._jobs.get()]
            if self.batching:
                size = len(batch[0].texts)
                deadline = loop.time() + self.max_wait
                while size < self.max_batch:
                    try:
                        job = self._jobs.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        try:
                            job = await asyncio.wait_for(self._jobs.get(), remaining)
                        except asyncio.TimeoutError:
                            break
                    batch.append(job)
                    size += len(job.texts)
            texts = [t for job in batch for t in job.texts]
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as exc:  # noqa: BLE001 - re-raised in every waiting request, which answers 500
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                if self._on_batch is not None:
                    self._on_batch(len(texts), time.perf_counter() - started)
                offset = 0
                for job in batch:
                    if not job.future.done():  # a cancelled request: its rows are dropped
                        job.future.set_result(probs[offset:offset + len(job.texts)])
                    offset += len(job.texts)
            finally:
                for _ in batch:
                    self._jobs.task_done()
