"""Batching across requests: one bounded queue per (run, kind) and a loop that makes one model call per batch.

A request handler only enqueues its item and awaits the answer. The loop is *continuous batching*: when the
run's worker is free it takes every waiting item (up to ``max_batch``, oldest first) and makes one call
``fn(items)`` (a list in, a list of the same length out) on the run's one worker thread, so the event loop
keeps accepting while the model computes; requests that arrive during that call form the next batch. Under
load each request therefore waits at most about one call for its own, and a lone request is not held back.

Waiting for company (``max_wait_ms``) only pays when a call is long next to the time the company needs to
arrive (text generation: a whole decode per call), so a batch waits at most ``max_wait_ms`` counted from its
oldest item's arrival, and never more than ``WAIT_SHARE`` of the kind's recent call time: a ~1 ms
classification runs at once, a 200 ms generation waits the full ``max_wait_ms`` for prompts sent together
(the very first batch of a kind, its call time unknown, waits ``max_wait_ms``).

Faults stay with the request that caused them: when a batch call raises, every item of that batch is run
again on its own, so one poisoned request gets its error and the others their answers. A full queue refuses
at once (:class:`QueueFull`, answered 503 with ``Retry-After``) instead of letting latency grow without bound.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Batcher", "QueueFull", "Job", "collect", "take", "company_wait", "on_worker", "worker_idle", "WAIT_SHARE",
           "MIN_WAIT"]

WAIT_SHARE = 0.1       # a batch waits for company at most this share of the kind's recent call time ...
MIN_WAIT = 0.001       # ... and not at all when that is under a millisecond (below the event loop's timer grain)


async def collect(q: asyncio.Queue, n: int, deadline: float) -> list:
    """Up to ``n`` more items from ``q``, waiting until ``deadline`` (``time.perf_counter()``) at most.

    Never loses an item: ``asyncio.wait_for(q.get(), t)`` can drop one that arrives as the timeout fires
    (CPython before 3.12), so the getter is awaited after its cancellation and its item kept if it had one.
    """
    items: list = []
    while len(items) < n:
        try:
            items.append(q.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        getter = asyncio.ensure_future(q.get())
        done, _ = await asyncio.wait({getter}, timeout=left)
        if getter in done:
            items.append(getter.result())
            continue
        getter.cancel()
        try:
            items.append(await getter)                       # it got an item before the cancel landed
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():        # we are being cancelled ourselves
                raise
        break
    return items


def company_wait(max_wait: float, call_time: float | None) -> float:
    """Seconds a new batch may wait for more items: ``max_wait`` capped by ``WAIT_SHARE`` of the recent call
    time ``call_time`` (None before the first call: ``max_wait``), and 0 when that is under ``MIN_WAIT``."""
    if call_time is None:
        return max_wait
    w = min(max_wait, WAIT_SHARE * call_time)
    return w if w >= MIN_WAIT else 0.0


_in_flight: "weakref.WeakKeyDictionary[concurrent.futures.Executor, int]" = weakref.WeakKeyDictionary()


async def on_worker(executor: concurrent.futures.Executor, fn: Callable, *args) -> Any:
    """``fn(*args)`` on the run's worker thread, awaited. The calls in flight on each worker are counted on the
    event loop thread (the only one that submits to it), so :func:`worker_idle` is exact there."""
    _in_flight[executor] = _in_flight.get(executor, 0) + 1
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    finally:
        _in_flight[executor] -= 1


def worker_idle(executor: concurrent.futures.Executor) -> bool:
    """No call submitted through :func:`on_worker` is queued or running on ``executor`` (call it on the event
    loop thread: until it yields, nothing else can start on the worker)."""
    return not _in_flight.get(executor, 0)


def take(q: asyncio.Queue, n: int) -> list:
    """Up to ``n`` items already in ``q``, oldest first, without waiting."""
    items: list = []
    while len(items) < n:
        try:
            items.append(q.get_nowait())
        except asyncio.QueueEmpty:
            break
    return items


class QueueFull(Exception):
    """The run's queue holds ``max_queue`` waiting requests."""


@dataclass
class Job:
    item: Any
    future: asyncio.Future
    enqueued: float


class Batcher:
    """Per-run request batcher (see the module docstring).

    Args:
        fn: ``fn(items) -> results``, one model call for a batch (runs on ``executor``).
        executor: the run's single worker thread (shared with the run's other batchers and sessions).
        max_batch: most items per call (1 turns batching off).
        max_wait_ms: the longest a batch's oldest item waits for company (counted from its arrival; see
            the module docstring: shorter for short calls, none for calls under 10 ms).
        max_queue: waiting items before new ones are refused.
        on_batch: ``on_batch(size)`` after each call (metrics).
    """

    def __init__(self, fn: Callable[[list], list], executor: concurrent.futures.Executor, *, max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 1024, on_batch: Callable[[int], None] | None = None):
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait = max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.queue: asyncio.Queue[Job] | None = None
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.busy = 0
        self.call_time: float | None = None       # moving average of this kind's call durations (seconds)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        self.task = self.loop.create_task(self._loop())

    @property
    def depth(self) -> int:
        return (self.queue.qsize() if self.queue is not None else 0) + self.busy

    async def submit(self, item) -> Any:
        """Enqueue one item and await its result (its own exception if it raised)."""
        if self.queue is None or self.loop is not asyncio.get_running_loop():
            self.start()                                  # first use, or the app runs in a new event loop
        if self.queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.queue.qsize()} requests are waiting (--max-queue {self.max_queue})")
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Job(item, fut, time.perf_counter()))
        return await fut

    async def _loop(self) -> None:
        q = self.queue
        while True:
            first = await q.get()
            jobs = [first] + take(q, self.max_batch - 1)                 # everything already waiting, FIFO
            if len(jobs) < self.max_batch:
                wait = company_wait(self.max_wait, self.call_time)
                if wait > 0:                                             # counted from the oldest's arrival
                    jobs += await collect(q, self.max_batch - len(jobs), first.enqueued + wait)
            jobs = [j for j in jobs if not j.future.done()]             # a cancelled (disconnected) request
            if not jobs:
                continue
            self.busy = len(jobs)
            t0 = time.perf_counter()
            try:
                await self._run(jobs)
            finally:
                self.busy = 0
                dt = time.perf_counter() - t0
                self.call_time = average(self.call_time, dt)

    async def _run(self, jobs: list[Job]) -> None:
        try:
            results = await on_worker(self.executor, self.fn, [j.item for j in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"batch call returned {len(results)} results for {len(jobs)} items")
            if self.on_batch:
                self.on_batch(len(jobs))
            for j, r in zip(jobs, results):
                if not j.future.done():
                    j.future.set_result(r)
        except Exception:  # noqa: BLE001 - isolate the item that raised: rerun each alone
            if len(jobs) == 1:
                import sys
                _set_error(jobs[0], sys.exc_info()[1])
                return
            for j in jobs:
                try:
                    [r] = await on_worker(self.executor, self.fn, [j.item])
                    if self.on_batch:
                        self.on_batch(1)
                    if not j.future.done():
                        j.future.set_result(r)
                except Exception as e:  # noqa: BLE001
                    _set_error(j, e)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queue is empty and no call is running, then stop the loop."""
        end = time.perf_counter() + timeout
        while self.depth and time.perf_counter() < end:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()


def average(mean: float | None, x: float, w: float = 0.2) -> float:
    """Exponential moving average (the first value starts it)."""
    return x if mean is None else (1 - w) * mean + w * x


def _set_error(job: Job, e: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(e)
