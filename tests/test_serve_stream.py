"""Streaming sessions: batched GRU steps equal the whole-sequence forward (sessions starting mid-way reset their
state), a streamed speech transcript equals the offline one (partials are its prefixes), concurrent sessions
share GRU steps and each still equals its offline result, streamed classification equals /classify, a client
that disconnects frees its session, and runs that cannot stream say why. Also ``grukit serve`` as a process:
SIGTERM lets an in-flight request finish and exits 0."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.app import ServeOptions, create_app  # noqa: E402
from grukit.serve.sessions import Session, advance  # noqa: E402
from test_serve_runs import TASKS, LiveServer, chirp, tiny_runs  # noqa: E402


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    return {t: A.load_served(runs[t], t) for t in TASKS}


def utterance(*digits) -> np.ndarray:
    return np.concatenate([chirp(d, k % 2, k) for k, d in enumerate(digits)])


def test_batched_steps_equal_forward_with_sessions_joining_late(served):
    from grukit.nn import GRU
    torch.manual_seed(0)
    gru = GRU(3, 5, num_layers=2, batch_first=True).eval()
    s = served["classify"]
    sessions = [Session(s) for _ in range(3)]
    xs = [torch.randn(n, 3) for n in (7, 4, 6)]
    # tick 1: sessions 0 and 1 start; tick 2: all three (2 joins late), with different chunk lengths
    a = advance(gru, sessions[:2], [xs[0][:3], xs[1][:1]])
    b = advance(gru, sessions, [xs[0][3:], xs[1][1:], xs[2]])
    for i, x in enumerate(xs):
        with torch.no_grad():
            ref, h_n = gru(x[None])
        got = torch.cat(([a[i]] if i < 2 else []) + [b[i]])
        torch.testing.assert_close(got, ref[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sessions[i].h, h_n[:, :1], rtol=1e-5, atol=1e-6)


def test_a_tick_of_sessions_in_different_phases_equals_each_alone(served):
    """Sessions with different chunk sizes and start times share ticks (front end grouped by frame count and
    stride phase, one GRU step per time step); each one's outputs equal its session run alone."""
    from grukit.serve.sessions import SessionBatcher
    s = served["speech"]
    sb = SessionBatcher(s, None)
    waves = [utterance(0, 1, 2), utterance(2, 1), utterance(1, 0, 0)]
    sizes, starts = (800, 560, 720), (0, 0, 2)
    together = [Session(s) for _ in waves]
    pos = [0, 0, 0]
    for tick in range(40):
        live = []
        for k, q in enumerate(together):
            if tick >= starts[k] and not q.closed:
                chunk = waves[k][pos[k]:pos[k] + sizes[k]]
                pos[k] += sizes[k]
                q.pending, q.final = (chunk, False) if len(chunk) else (None, True)
                q.closed = not len(chunk)
                live.append(q)
        if not live:
            break
        sb._tick(live)
    for k, w in enumerate(waves):
        alone = Session(s)
        for i in range(0, len(w), sizes[k]):
            alone.pending, alone.final = w[i:i + sizes[k]], False
            sb._tick([alone])
        alone.pending, alone.final = None, True
        out = sb._tick([alone])[0]
        torch.testing.assert_close(torch.cat(together[k].log_probs), torch.cat(alone.log_probs), rtol=1e-5, atol=1e-5)
        assert together[k].output(final=True)["text"] == out["text"]
        assert out["text"] == A.transcribe_batch(s, [w])[0]["text"]


def test_a_tick_featurises_all_sessions_in_one_call_equal_to_each_alone(served):
    """StreamingFeatures.push_many (one FFT + mel call per tick) gives each stream exactly the frames its own
    push gives, chunk sizes mixed (one too short for a frame), a chunk of None its finish(), and the rest equal
    features(whole signal)."""
    from grukit.data import audio
    spec = audio.FeatureSpec.from_dict(served["speech"].meta["features"])
    waves = [utterance(0, 1), utterance(2), utterance(1, 2, 0)]
    sizes = (800, 37, 560)
    many = [audio.StreamingFeatures(spec) for _ in waves]
    one = [audio.StreamingFeatures(spec) for _ in waves]
    got: list[list[np.ndarray]] = [[] for _ in waves]
    for i in range(4000):
        idx = [k for k, w in enumerate(waves) if i * sizes[k] < len(w)]
        if not idx:
            break
        chunks = [waves[k][i * sizes[k]:(i + 1) * sizes[k]] for k in idx]
        outs = audio.StreamingFeatures.push_many([many[k] for k in idx], chunks)
        for k, c, o in zip(idx, chunks, outs):
            ref = one[k].push(c)
            assert o.shape == ref.shape and np.array_equal(o, ref)
            got[k].append(o)
    ends = audio.StreamingFeatures.push_many(many, [None] * len(many))                # None: each one's finish()
    for k, w in enumerate(waves):
        ref = one[k].finish()
        assert ends[k].shape == ref.shape and len(ref) and np.array_equal(ends[k], ref) and many[k].done
        whole = np.concatenate(got[k] + [ends[k]])
        np.testing.assert_allclose(whole, audio.features(w, spec), rtol=1e-5, atol=1e-4)
    assert any(len(o) == 0 for o in got[1]) and all(len(o) for o in got[0])   # zero-frame chunks mixed in


def test_streamed_transcript_equals_offline_and_partials_grow(served):
    from fastapi.testclient import TestClient
    wave = utterance(0, 2, 1, 1)
    offline = A.transcribe_batch(served["speech"], [wave])[0]["text"]
    with TestClient(create_app(list(served.values()))) as c, c.websocket_connect("/runs/speech/stream") as ws:
        assert ws.receive_json()["task"] == "speech"
        partials = []
        for i in range(0, len(wave), 800):                                   # 100 ms chunks at 8 kHz
            ws.send_bytes(wave[i:i + 800].astype("<f4").tobytes())
            partials.append(ws.receive_json()["partial"]["text"])
        ws.send_json({"end": True})
        final = ws.receive_json()["final"]
    assert final["text"] == offline
    assert all(final["text"].startswith(p) for p in partials) and partials == sorted(partials, key=len)


def test_next_session_on_the_same_connection_equals_offline_and_frees_the_first(served):
    """{"end": true, "next": true}: the final output, then a new session on the same connection (a new id, a
    fresh state: its transcript equals the offline one of its own audio); the finished session is freed."""
    from fastapi.testclient import TestClient
    waves = [utterance(0, 2), utterance(1, 1, 0)]
    offline = [o["text"] for o in A.transcribe_batch(served["speech"], waves)]
    app = create_app(list(served.values()))
    finals, ids = [], []
    with TestClient(app) as c, c.websocket_connect("/runs/speech/stream") as ws:
        for k, wave in enumerate(waves):
            hello = ws.receive_json()
            ids.append(hello["session"])
            active = 'grukit_active_sessions{run="speech"} 1.0' in app.state.metrics.text().decode()
            assert active, "the finished session was not freed (or the new one not opened)"
            for i in range(0, len(wave), 800):
                ws.send_bytes(wave[i:i + 800].astype("<f4").tobytes())
                ws.receive_json()
            ws.send_json({"end": True, "next": k == 0})
            finals.append(ws.receive_json()["final"]["text"])
        with pytest.raises(Exception):                                        # closed after the last final
            ws.receive_json()
    assert finals == offline and ids[0] != ids[1]
    assert 'grukit_active_sessions{run="speech"} 0.0' in app.state.metrics.text().decode()


def test_concurrent_sessions_share_steps_and_each_equals_offline(served):
    import websockets
    waves = [utterance(*d) for d in ((0, 1), (2, 2, 0), (1, 0, 2, 1), (2,), (1, 1))]
    offline = [o["text"] for o in A.transcribe_batch(served["speech"], waves)]
    app = create_app(list(served.values()), ServeOptions(max_wait_ms=20))

    async def one(url, wave):
        async with websockets.connect(url + "/runs/speech/stream") as ws:
            json.loads(await ws.recv())
            for i in range(0, len(wave), 800):
                await ws.send(wave[i:i + 800].astype("<f4").tobytes())
                json.loads(await ws.recv())
            await ws.send(json.dumps({"end": True}))
            return json.loads(await ws.recv())["final"]["text"]

    async def main(url):
        return await asyncio.gather(*(one(url, w) for w in waves))

    with LiveServer(app) as url:
        got = asyncio.run(main(url.replace("http", "ws")))
    assert got == offline
    text = app.state.metrics.text().decode()
    count = float(next(l.split()[-1] for l in text.splitlines()
                       if l.startswith('grukit_batch_size_count{kind="stream",run="speech"}')))
    total = float(next(l.split()[-1] for l in text.splitlines()
                       if l.startswith('grukit_batch_size_sum{kind="stream",run="speech"}')))
    assert total / count > 1.5, (count, total)                              # sessions shared GRU steps


def test_streamed_classification_equals_classify(served):
    from fastapi.testclient import TestClient
    x = np.random.default_rng(3).normal(size=(9, 2)).round(4)
    with TestClient(create_app(list(served.values()))) as c:
        whole = c.post("/runs/classify/classify", json={"sequences": [x.tolist(), x[:4].tolist()]}).json()
        with c.websocket_connect("/runs/classify/stream") as ws:
            ws.receive_json()
            ws.send_json({"frames": x[:4].tolist()})
            part = ws.receive_json()["partial"]
            ws.send_bytes(x[4:].astype("<f4").tobytes())
            ws.receive_json()
            ws.send_json({"end": True})
            final = ws.receive_json()["final"]
    probs = lambda p: [p["probabilities"][k] for k in ("down", "up")]          # noqa: E731
    np.testing.assert_allclose(probs(final), probs(whole["predictions"][0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs(part), probs(whole["predictions"][1]), rtol=1e-5, atol=1e-6)
    assert final["frames"] == 9 and part["frames"] == 4


def test_bad_chunks_are_answered_and_the_session_goes_on(served):
    from fastapi.testclient import TestClient
    with TestClient(create_app(list(served.values()))) as c, c.websocket_connect("/runs/classify/stream") as ws:
        ws.receive_json()
        ws.send_json({"frames": [[1.0, 2.0, 3.0]]})
        assert ws.receive_json() == {"error": "frames must be (n, 2) for this run; got shape (1, 3)"}
        ws.send_bytes(b"abc")
        assert "not float32" in ws.receive_json()["error"]
        ws.send_text("{not json")
        assert "error" in ws.receive_json()
        ws.send_json({"frames": [[0.5, 0.5]]})
        assert ws.receive_json()["partial"]["frames"] == 1


def test_disconnect_frees_the_session(served):
    from fastapi.testclient import TestClient
    app = create_app(list(served.values()))
    gauge = lambda: [l for l in app.state.metrics.text().decode().splitlines()          # noqa: E731
                     if l.startswith('grukit_active_sessions{run="speech"}')]
    with TestClient(app) as c:
        with c.websocket_connect("/runs/speech/stream") as ws:
            ws.receive_json()
            ws.send_bytes(chirp(1)[:800].astype("<f4").tobytes())
            ws.receive_json()
            assert gauge() == ['grukit_active_sessions{run="speech"} 1.0']
        t0 = time.time()                                                    # closed without {"end": true}
        while gauge() != ['grukit_active_sessions{run="speech"} 0.0'] and time.time() - t0 < 5:
            time.sleep(0.02)
        assert gauge() == ['grukit_active_sessions{run="speech"} 0.0']


@pytest.mark.parametrize("task, why", [("forecast", "forecast runs have no frame-by-frame output"),
                                       ("lm", "lm runs have no frame-by-frame output")])
def test_runs_that_cannot_stream_say_why(served, task, why):
    from fastapi.testclient import TestClient
    with TestClient(create_app(list(served.values()))) as c, c.websocket_connect(f"/runs/{task}/stream") as ws:
        assert ws.receive_json() == {"error": f"run {task!r} cannot stream: {why}"}


def test_a_classify_run_streams_only_when_every_member_can(served):
    """A member with the first-difference input (scaled over the whole series) cannot stream; one such member
    among streamable ones makes the run refuse streaming instead of failing inside the GRU."""
    import dataclasses
    s = served["classify"]
    assert A.streamable(s) and len(s.models) > 1
    mixed = dataclasses.replace(s, models=list(s.models))
    mixed.models[1] = copy.deepcopy(s.models[1])
    mixed.models[1].difference = True
    assert not mixed.models[1].streamable and not A.streamable(mixed)


# ------------------------------------------------------------------ the process: SIGTERM drains, exit 0
def test_sigterm_finishes_in_flight_work_and_exits_0(served):
    import socket
    import threading

    import httpx
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "grukit.cli", "serve", str(served["lm"].run.path),
                             "--port", str(port), "--max-wait-ms", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() - t0 < 60, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.1)
        result = {}
        req = threading.Thread(target=lambda: result.update(r=httpx.post(
            url + "/runs/lm/generate", json={"prompt": "the", "length": 2000, "seed": 1}, timeout=60)))
        req.start()
        busy = 'grukit_queue_depth{kind="generate",run="lm"} 1.0'
        t0 = time.time()
        while busy not in httpx.get(url + "/metrics", timeout=5).text:   # until the generation is running
            assert time.time() - t0 < 30 and req.is_alive(), "the generation never showed as in flight"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        req.join(60)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert rc == 0, out
    assert result["r"].status_code == 200 and len(result["r"].json()["text"]) >= 2000 - 10, out
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=1)


def test_websocket_connection_lines_are_left_out_of_the_log_without_access_log(caplog):
    """Without --access-log, uvicorn's three lines per WebSocket connection are dropped (a stream reconnecting
    every utterance made them ~3% of the event loop); start-up lines and errors are kept."""
    import logging

    from grukit.serve.server import quiet_websocket_log
    log = logging.getLogger("uvicorn.error")
    keep = quiet_websocket_log()
    try:
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/runs/speech/stream")
            log.info("connection open")
            log.info("connection closed")
            log.info("Application startup complete.")
            log.error("Exception in ASGI application")
    finally:
        log.removeFilter(keep)
    assert [r.getMessage() for r in caplog.records] == ["Application startup complete.",
                                                        "Exception in ASGI application"]


def test_session_wait_sets_how_long_a_streaming_tick_waits_for_company(served):
    """--session-wait-ms (not the request batchers' --max-wait-ms) is how long a tick waits for company from
    its oldest chunk's arrival: a lone session's chunk is answered after about that long, and at once with 0."""
    from fastapi.testclient import TestClient
    chunk = utterance(1)[:800].astype("<f4").tobytes()
    took = {}
    for wait in (0.0, 300.0):
        app = create_app(list(served.values()), ServeOptions(max_wait_ms=0, session_wait_ms=wait))
        with TestClient(app) as c, c.websocket_connect("/runs/speech/stream") as ws:
            ws.receive_json()
            ws.send_bytes(chunk)                                             # the first tick: warm
            ws.receive_json()
            t = time.perf_counter()
            ws.send_bytes(chunk)
            assert "partial" in ws.receive_json()
            took[wait] = time.perf_counter() - t
    assert took[300.0] >= 0.3 and took[0.0] < 0.25, took
