"""The request batcher on its own (no model, no HTTP): continuous batching, fairness, the wait for company.

Issue 19's /classify tail came from requests that waited several batch cycles and from a lone request paying
``--max-wait-ms``; these tests pin down what the batcher promises instead: every waiting request (oldest first)
goes into the next call, requests that arrive during a call form the one after it, a lone request is not held
for ``max_wait``, and only long calls (generation) wait for company. Pure asyncio with a recording ``fn``: fast.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.serve.batcher import MIN_WAIT, WAIT_SHARE, Batcher, company_wait  # noqa: E402


class Recorder:
    """``fn`` for a Batcher: records each call's items (and its start time), answers each item doubled;
    ``gate`` (when set) holds a call until the test releases it."""

    def __init__(self, seconds: float = 0.0):
        self.calls: list[list] = []
        self.starts: list[float] = []
        self.seconds = seconds
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, items: list) -> list:
        self.starts.append(time.perf_counter())
        self.calls.append(list(items))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.seconds:
            time.sleep(self.seconds)
        return [2 * x for x in items]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def pool():
    ex = concurrent.futures.ThreadPoolExecutor(1)
    yield ex
    ex.shutdown(wait=True)


def test_company_wait_is_a_share_of_the_call_and_never_below_a_millisecond():
    assert company_wait(0.005, None) == 0.005                       # first call of a kind: its time unknown
    assert company_wait(0.005, 0.002) == 0.0                        # 2 ms classify call: 0.2 ms -> run at once
    assert company_wait(0.005, 0.009) == 0.0                        # 0.9 ms < MIN_WAIT
    assert company_wait(0.005, 0.02) == pytest.approx(WAIT_SHARE * 0.02)
    assert company_wait(0.005, 0.3) == 0.005                        # a generation: the full max_wait
    assert company_wait(0.0, 0.3) == 0.0
    assert WAIT_SHARE * 0.02 >= MIN_WAIT


def test_a_burst_is_served_oldest_first_in_full_batches(pool):
    rec = Recorder()

    async def main():
        b = Batcher(rec, pool, max_batch=16, max_wait_ms=1000)
        b.call_time = 0.001                                          # a known short call: no wait for company
        out = await asyncio.gather(*(b.submit(i) for i in range(40)))
        return out

    t0 = time.perf_counter()
    out = run(main())
    assert out == [2 * i for i in range(40)]
    assert rec.calls == [list(range(16)), list(range(16, 32)), list(range(32, 40))]
    assert time.perf_counter() - t0 < 0.5                            # max_wait (1 s) was never waited


def test_requests_arriving_during_a_call_form_the_next_one(pool):
    rec = Recorder()
    rec.gate = threading.Event()

    async def main():
        b = Batcher(rec, pool, max_batch=32, max_wait_ms=1000)
        b.call_time = 0.001
        first = asyncio.ensure_future(b.submit(0))
        while not rec.entered.is_set():                              # call 1 runs (held by the gate) ...
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]   # ... while 5 more arrive
        await asyncio.sleep(0.02)
        rec.gate.set()
        return await asyncio.gather(first, *later)

    assert run(main()) == [0, 2, 4, 6, 8, 10]
    assert rec.calls == [[0], [1, 2, 3, 4, 5]]                      # each waited at most for the call before
    assert rec.starts[1] - rec.starts[0] < 0.5                       # and not for max_wait after it


def test_no_request_waits_more_than_two_calls_under_steady_load(pool):
    """Many concurrent clients, each sending its next request when answered (the bench's /classify load):
    with room in a batch for all of them, a request is answered by the call after the one running when it
    arrived, so it waits at most about two calls."""
    rec = Recorder(seconds=0.004)
    waits: list[int] = []

    async def main():
        b = Batcher(rec, pool, max_batch=64, max_wait_ms=1000)
        b.call_time = 0.004

        async def client(k):
            for j in range(15):
                before = len(rec.calls)
                await b.submit(k)
                waits.append(len(rec.calls) - before)

        await asyncio.gather(*(client(k) for k in range(24)))

    run(main())
    assert len(waits) == 24 * 15 and max(waits) <= 2, max(waits)
    assert sum(map(len, rec.calls)) == 24 * 15 and len(rec.calls) < 24 * 15 / 4   # batched, not one by one


def test_a_lone_request_is_not_held_for_max_wait(pool):
    rec = Recorder()

    async def main():
        b = Batcher(rec, pool, max_batch=32, max_wait_ms=400)
        await b.submit(1)                                            # first call: waits max_wait (time unknown)
        lat = []
        for i in range(5):
            t = time.perf_counter()
            await b.submit(i)
            lat.append(time.perf_counter() - t)
        return lat

    lat = run(main())
    assert max(lat) < 0.2, lat                                       # each far below the 400 ms max_wait


def test_long_calls_wait_for_company(pool):
    """A kind whose calls are long (text generation) waits up to max_wait, from its oldest request's arrival,
    so requests sent a few ms apart share one call."""
    rec = Recorder(seconds=0.05)

    async def main():
        b = Batcher(rec, pool, max_batch=8, max_wait_ms=30)
        b.call_time = 0.5                                            # 10% of it is over max_wait: the full 30 ms
        futs = []
        for i in range(4):
            futs.append(asyncio.ensure_future(b.submit(i)))
            await asyncio.sleep(0.003)
        return await asyncio.gather(*futs)

    assert run(main()) == [0, 2, 4, 6]
    assert rec.calls == [[0, 1, 2, 3]]


def test_the_server_freezes_its_start_up_heap():
    """``grukit serve`` (ServeOptions.freeze_gc) moves the loaded heap out of the cyclic GC after warm-up:
    full collections of it were 240-480 ms pauses of the whole server under load."""
    from fastapi.testclient import TestClient

    from grukit.serve.app import ServeOptions, create_app
    gc.unfreeze()
    try:
        with TestClient(create_app([], ServeOptions())) as c:
            assert c.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0                            # apps made in-process (tests) do not
        with TestClient(create_app([], ServeOptions(freeze_gc=True))) as c:
            assert c.get("/health").status_code == 200
            assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_a_stream_tick_waits_for_company_from_its_oldest_chunk_only():
    """Streaming ticks (Triton's max queue delay): a tick waits at most ``max_wait`` counted from its oldest
    ready chunk's arrival, gathering the chunks that come meanwhile; chunks that already waited (queued during
    the previous tick) go at once."""
    from types import SimpleNamespace

    from grukit.serve.sessions import SessionBatcher

    async def main():
        sb = SessionBatcher(None, None, max_batch=8, max_wait_ms=80)
        q: asyncio.Queue = asyncio.Queue()
        stale = [SimpleNamespace(ready_at=time.perf_counter() - 1.0) for _ in range(3)]
        for s in stale:
            q.put_nowait(s)
        t = time.perf_counter()
        first = await sb._gather(q)
        quick = time.perf_counter() - t
        fresh = SimpleNamespace(ready_at=time.perf_counter())
        q.put_nowait(fresh)

        async def later():
            await asyncio.sleep(0.02)
            q.put_nowait(SimpleNamespace(ready_at=time.perf_counter()))

        t = time.perf_counter()
        second, _ = await asyncio.gather(sb._gather(q), later())
        return first, quick, second, time.perf_counter() - t

    first, quick, second, waited = run(main())
    assert len(first) == 3 and quick < 0.05                          # no wait: they had waited a second
    assert len(second) == 2 and 0.06 <= waited < 0.5                 # the late chunk joined; ~80 ms, not more


def test_short_ticks_run_on_the_event_loop_only_while_the_worker_is_idle():
    """A streaming tick runs on the event loop thread while the run's worker is idle and recent ticks were
    short; the first tick, a long one, or one while an HTTP batch computes goes to the worker (the run's
    model is never used by two threads at once)."""
    from types import SimpleNamespace

    from grukit.serve.batcher import on_worker, worker_idle
    from grukit.serve.sessions import INLINE_TICK, SessionBatcher

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="worker")
    busy = threading.Lock()                                    # held while "the model" is in use
    where: list[str] = []

    def use_model(seconds: float) -> None:
        assert busy.acquire(blocking=False), "two threads used the model at once"
        try:
            time.sleep(seconds)
        finally:
            busy.release()

    def tick(batch):
        where.append(threading.current_thread().name.split("_")[0])
        use_model(0.001)
        return [{"n": len(batch)} for _ in batch]

    async def main():
        sb = SessionBatcher(None, pool, max_batch=8, max_wait_ms=0)
        sb._tick = tick
        one = lambda: SimpleNamespace(id=1, closed=False)                      # noqa: E731
        await sb.push(one(), [0.0])                            # first tick: its time unknown -> worker
        await sb.push(one(), [0.0])                            # short and the worker idle -> here
        assert worker_idle(pool)
        http = asyncio.ensure_future(on_worker(pool, use_model, 0.3))          # an HTTP batch computing
        await asyncio.sleep(0.05)
        assert not worker_idle(pool)
        await sb.push(one(), [0.0])                            # -> worker, after the batch
        await http
        sb.tick_time = INLINE_TICK * 2                          # long ticks -> worker
        await sb.push(one(), [0.0])
        sb.task.cancel()

    run(main())
    pool.shutdown()
    assert where == ["worker", "MainThread", "worker", "worker"]
