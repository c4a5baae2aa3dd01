"""The batched per-session state (grukit.serve.slots): rows start at zero, are reused only once freed, keep open
sessions' state when the table grows, are freed by close() or by garbage collection, and never while the
session's chunk is in a tick; a tick with more sessions than the table holds still gives each one its own
offline result."""
from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.sessions import Session, SessionBatcher, advance  # noqa: E402
from grukit.serve.slots import Slots  # noqa: E402
from test_serve_runs import TASKS, chirp, tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    return {t: A.load_served(runs[t], t) for t in ("speech", "classify") if t in TASKS}


def test_rows_start_at_zero_are_reused_once_freed_and_growth_keeps_state():
    s = Slots(capacity=2)
    like = torch.zeros(1)
    (a, _), (b, _) = s.alloc(), s.alloc()
    h = s.gru(0, 2, 3, like)
    tail, seen = s.conv(0, 4, 5, like)
    h[:, a], h[:, b] = 1.0, 2.0
    tail[a], seen[a] = 7.0, 11
    c, _ = s.alloc()                                                   # the table doubles
    assert s.capacity == 4 and c not in (a, b) and s.used == 3
    h, (tail, seen) = s.gru(0, 2, 3, like), s.conv(0, 4, 5, like)
    assert (h[:, a] == 1).all() and (h[:, b] == 2).all() and (h[:, c] == 0).all()
    assert (tail[a] == 7).all() and int(seen[a]) == 11 and int(seen[c]) == 0
    h[:, c] = 5.0
    s.free(a)
    d, _ = s.alloc()
    assert d == a and (s.gru(0, 2, 3, like)[:, d] == 0).all() and (s.conv(0, 4, 5, like)[0][d] == 0).all()
    assert (s.gru(0, 2, 3, like)[:, c] == 5).all()                   # others untouched
    assert s.gru_row(0, c).shape == (2, 1, 3) and s.gru_row(1, c) is None


def test_a_release_frees_its_row_once_and_garbage_collection_frees_it_too():
    s = Slots(capacity=4)

    class Owner:
        pass
    o1, o2 = Owner(), Owner()
    (r1, rel1), (r2, _) = s.alloc(o1), s.alloc(o2)
    rel1()
    rel1()                                                             # a second release does nothing
    assert s.used == 1
    r3, _ = s.alloc()
    assert r3 == r1 and s.used == 2
    del o1                                                             # o1's row now belongs to another: kept
    gc.collect()
    assert s.used == 2
    del o2
    gc.collect()
    assert s.used == 1                                                 # o2 was never released: GC frees it


def test_growing_waits_for_a_tick_without_blocking_its_frees():
    """A full table grows only once no tick holds ``busy``, and while it waits it does not hold the row lock:
    a tick that frees a row meanwhile (a dropped session's finalizer run by a collection on the tick's
    thread) goes on, and the waiting alloc then takes that row, with no growth and no deadlock."""
    class Owner:
        pass
    owner = Owner()
    s = Slots(capacity=1)
    row, release = s.alloc(owner)
    got = {}
    s.busy.acquire()                                                   # a tick is running
    try:
        t = threading.Thread(target=lambda: got.update(alloc=s.alloc()))
        t.start()
        t.join(0.2)
        assert t.is_alive(), "alloc on a full table did not wait for the running tick"
        freer = threading.Thread(target=release)                       # the tick's thread frees a row
        freer.start()
        freer.join(5)
        assert not freer.is_alive(), "free() blocked while an alloc waited to grow the table (deadlock)"
    finally:
        s.busy.release()
    t.join(5)
    assert not t.is_alive() and got["alloc"][0] == row and s.capacity == 1       # the freed row, no growth


def test_more_sessions_than_rows_each_equal_alone(served):
    """A tick of 70 sessions (the table starts with 64 rows, so it grows while sessions are open) gives each
    one the GRU outputs and state of the whole-sequence forward of its own frames."""
    from grukit.nn import GRU
    torch.manual_seed(1)
    gru = GRU(3, 4, num_layers=2, batch_first=True).eval()
    sessions = [Session(served["classify"]) for _ in range(70)]
    xs = [torch.randn(5 + k % 3, 3) for k in range(70)]
    first = advance(gru, sessions[:40], [x[:2] for x in xs[:40]])
    later = advance(gru, sessions, [x[2:] if k < 40 else x for k, x in enumerate(xs)])
    for k, x in enumerate(xs):
        with torch.no_grad():
            ref, h_n = gru(x[None])
        got = torch.cat(([first[k]] if k < 40 else []) + [later[k]])
        torch.testing.assert_close(got, ref[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sessions[k].h, h_n, rtol=1e-5, atol=1e-6)


def test_a_session_closed_while_its_chunk_waits_keeps_its_row_until_the_tick_is_done(served):
    """close() of a session whose chunk is queued does not free its row (a new session could get it and then
    have it overwritten by the tick's write-back); the tick loop frees it when it drops the chunk."""
    s = served["speech"]
    chunk = chirp(1, 0, 0)[:800].astype(np.float32)

    async def main():
        sb = SessionBatcher(s, None, max_wait_ms=50)
        a, b = sb.open(), sb.open()
        slots = a.slots
        pending = asyncio.ensure_future(sb.push(a, chunk))
        await asyncio.sleep(0)                                          # a's chunk is queued
        used = slots.used
        sb.close(a)
        assert slots.used == used, "the row of a session with a queued chunk was freed at close()"
        out = await sb.push(b, chunk)                                   # a later tick: a's chunk dropped
        pending.cancel()
        return used, slots.used, out
    used, after, out = asyncio.run(main())
    assert after == used - 1 and out["frames"] > 0
