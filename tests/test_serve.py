"""grukit serve over HTTP: every task's route against the task's own inference, batching across requests
(answers equal to solo answers, fewer model calls than requests), and every fault of issue 19: a poisoned
request among 50 good ones, a full queue (503 + Retry-After), a body over the limit (413), bad input (422 with
one line), unknown runs/routes (404), bearer auth (401), metrics. Tiny runs, in-process ASGI: seconds."""
from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.app import ServeOptions, create_app  # noqa: E402
from test_serve_runs import TASKS, chirp, tiny_runs  # noqa: E402


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    return {t: A.load_served(runs[t], t) for t in TASKS}


def client(served, **opts):
    from fastapi.testclient import TestClient
    return TestClient(create_app(list(served.values()), ServeOptions(**opts)))


def gather(app, calls):
    """Run [(method, path, json)] concurrently against ``app`` in one event loop; returns the responses."""
    async def main():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*(c.request(m, p, json=j) for m, p, j in calls))
    return asyncio.run(main())


def batch_counts(app, run, kind) -> tuple[float, float]:
    """(model calls, items) from the batch-size histogram."""
    text = app.state.metrics.text().decode()
    get = lambda what: sum(float(l.split()[-1]) for l in text.splitlines()            # noqa: E731
                           if l.startswith(f"grukit_batch_size_{what}{{") and f'run="{run}"' in l
                           and f'kind="{kind}"' in l)
    return get("count"), get("sum")


def seqs(n, T=9, F=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(3, T + 1)), F)).round(4).tolist() for _ in range(n)]


# ------------------------------------------------------------------ status routes
def test_health_runs_docs_metrics(served):
    with client(served) as c:
        assert c.get("/health").json() == {"status": "ok", "runs": 6}
        runs = {r["name"]: r for r in c.get("/runs").json()}
        assert {n: r["task"] for n, r in runs.items()} == {t: t for t in TASKS}
        assert runs["forecast"]["config"]["horizon"] == 4 and runs["classify"]["inputs"]["classes"] == ["down", "up"]
        assert runs["speech"]["streaming"] and not runs["forecast"]["streaming"]
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/runs/{name}/forecast", "/runs/{name}/classify", "/runs/{name}/generate",
                "/runs/{name}/transcribe", "/runs/{name}/anomalies", "/metrics"} <= set(paths)
        c.post("/runs/classify/classify", json={"sequences": seqs(2)})
        text = c.get("/metrics").text
    for family in ("grukit_requests_total", "grukit_errors_total", "grukit_request_seconds_bucket",
                   "grukit_batch_size_bucket", "grukit_queue_depth", "grukit_active_sessions"):
        assert family in text, family
    assert 'grukit_requests_total{route="/runs/{name}/classify",status="200"} 1.0' in text


# ------------------------------------------------------------------ every task against its own inference
def test_forecast_is_forecast_series_and_batching_changes_nothing(served):
    s = served["forecast"]
    ys = [10 + np.sin(np.arange(n) / 2) + 0.1 * k for k, n in enumerate((20, 30, 14))]
    with client(served) as c:
        together = c.post("/runs/forecast/forecast", json={"series": [y.tolist() for y in ys]}).json()["forecasts"]
        alone = [c.post("/runs/forecast/forecast", json={"series": [y.tolist()]}).json()["forecasts"][0] for y in ys]
    for t, a, y in zip(together, alone, ys):
        assert set(t) == {"point", "lo", "hi", "quantiles"} and np.shape(t["point"]) == (4, 1)
        for k in t:
            np.testing.assert_allclose(t[k], a[k], rtol=1e-5)
        ref = s.module.forecast_series(s.models, s.meta, s.config, [y])[0]
        for k in ("point", "lo", "hi"):
            np.testing.assert_allclose(t[k], ref[k], rtol=1e-6)
        assert (np.array(t["lo"]) <= np.array(t["point"]) + 1e-9).all()
        assert (np.array(t["point"]) <= np.array(t["hi"]) + 1e-9).all()


def test_classify_is_classify_sequences(served):
    s = served["classify"]
    xs = seqs(5)
    with client(served) as c:
        preds = c.post("/runs/classify/classify", json={"sequences": xs}).json()["predictions"]
    ref = s.module.classify_sequences(s.models, s.meta, [np.array(x, np.float32) for x in xs])
    for p, r in zip(preds, ref):
        np.testing.assert_allclose([p["probabilities"][k] for k in ("down", "up")], r, rtol=1e-6, atol=1e-7)
        assert p["label"] == ["down", "up"][int(r.argmax())]


def test_anomalies_match_step_scores(served):
    s = served["autoencoder"]
    v = np.c_[np.arange(60.0), np.sin(np.arange(60) / 3)]
    v[40, 1] += 4
    with client(served) as c:
        out = c.post("/runs/autoencoder/anomalies", json={"values": v.tolist()}).json()
    ref, flags = s.module.anomaly_scores(s.models, s.meta, s.config, v)
    np.testing.assert_allclose(out["scores"], ref, rtol=1e-6)
    assert out["flags"] == flags.tolist()
    assert out["flags"] == (np.array(out["scores"]) > out["threshold"]).tolist() and any(out["flags"])


def test_transcribe_matches_grukit_transcribe(served, tmp_path):
    import soundfile as sf
    s = served["speech"]
    wave = np.concatenate([chirp(2), chirp(0, 1), chirp(1)])
    path = tmp_path / "u.wav"
    sf.write(str(path), wave, 8000, subtype="FLOAT")
    with client(served) as c:
        out = c.post("/runs/speech/transcribe", files={"file": ("u.wav", path.read_bytes(), "audio/wav")}).json()
        bad = c.post("/runs/speech/transcribe", files={"file": ("x.wav", b"not audio at all", "audio/wav")})
    from grukit.tasks import speech
    assert out["text"] == speech.transcribe_files(s.run, [path])[0]["text"]
    assert abs(out["seconds"] - len(wave) / 8000) < 1e-3
    assert bad.status_code == 422 and "x.wav" in bad.json()["detail"]


def test_concurrent_generations_are_decoded_together(served):
    from grukit.data.text import Vocab
    from grukit.tasks import language
    s = served["lm"]
    vocab = Vocab.from_dict(s.meta["vocab"])
    app = create_app(list(served.values()), ServeOptions(max_batch=8, max_wait_ms=150))
    # greedy requests of different prompts and lengths: one batched call, each text equal to its solo decode
    reqs = [{"prompt": p, "length": n, "temperature": 0} for p, n in
            (("the ", 24), ("a cat", 10), ("", 17), ("the dog ", 30))]
    res = gather(app, [("POST", "/runs/lm/generate", r) for r in reqs])
    for r, resp in zip(reqs, res):
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"] == language.sample(s.models[0], vocab, r["prompt"], r["length"], 0.0)
    calls, items = batch_counts(app, "lm", "generate")
    assert items == 4 and calls < 4                                  # decoded together, not one by one
    # a seeded request alone is exactly the entry point's text for that seed
    [one] = gather(app, [("POST", "/runs/lm/generate", {"prompt": "the", "length": 30, "temperature": 0.9,
                                                        "seed": 11})])
    assert one.json()["text"] == language.sample(s.models[0], vocab, "the", 30, 0.9, seed=11)
    # streamed as Server-Sent Events: the pieces joined are the same text
    from fastapi.testclient import TestClient
    with TestClient(app) as c:
        with c.stream("POST", "/runs/lm/generate", json={"prompt": "the", "length": 30, "temperature": 0.9,
                                                          "seed": 11, "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            body = "".join(r.iter_text())
        scored = c.post("/runs/lm/score", json={"texts": ["the cat sat", "zzzz qqq"]}).json()["scores"]
    events = [e for e in body.split("\n\n") if e.strip()]
    pieces = [json.loads(e[len("data: "):])["text"] for e in events if e.startswith("data: ")]
    assert events[-1].startswith("event: done") and len(pieces) > 5
    assert "".join(pieces) == one.json()["text"] == json.loads(events[-1].split("data: ", 1)[1])["text"]
    assert [x["score"] for x in scored] == pytest.approx(language.score(s.models, s.meta, ["the cat sat", "zzzz qqq"]))


def test_music_roll_and_midi(served):
    import pretty_midi
    s = served["music"]
    with client(served) as c:
        pieces = c.post("/runs/music/generate", json={"steps": 12, "temperature": 1.0, "seed": 3, "n": 2}).json()
    refs = s.module.generate(s.models, s.meta, 2, 12, 1.0, 3)
    assert len(pieces["pieces"]) == 2
    for out, ref in zip(pieces["pieces"], refs):
        roll = np.zeros((out["frames"], out["keys"]), np.uint8)
        for t, p in out["notes"]:
            roll[t, p] = 1
        np.testing.assert_array_equal(roll, ref)
    import base64
    pm = pretty_midi.PrettyMIDI(io.BytesIO(base64.b64decode(out["midi_base64"])))
    onsets = int(((np.diff(np.vstack([np.zeros((1, 88)), roll]).astype(int), axis=0)) == 1).sum())
    assert len(pm.instruments[0].notes) == onsets


# ------------------------------------------------------------------ batching and faults
def test_batching_across_requests_fewer_calls_same_answers(served):
    app = create_app(list(served.values()), ServeOptions(max_batch=32, max_wait_ms=200))
    xs = seqs(32, seed=1)
    res = gather(app, [("POST", "/runs/classify/classify", {"sequences": [x]}) for x in xs])
    calls, items = batch_counts(app, "classify", "classify")
    assert items == 32 and calls <= 4, (calls, items)
    solo = A.classify_batch(served["classify"], [np.array(x, np.float32) for x in xs])
    for r, ref in zip(res, solo):
        np.testing.assert_allclose(list(r.json()["predictions"][0]["probabilities"].values()),
                                   list(ref["probabilities"].values()), rtol=1e-5, atol=1e-6)


def test_one_poisoned_request_among_50_good_ones(served, monkeypatch):
    real = A.classify_batch

    def poisoned(s, items):
        if any(float(x[0, 0]) == 1234.5 for x in items):
            raise RuntimeError("poisoned input reached the model")
        return real(s, items)

    monkeypatch.setattr(A, "classify_batch", poisoned)
    app = create_app(list(served.values()), ServeOptions(max_batch=64, max_wait_ms=200))
    xs = seqs(51, seed=2)
    xs[17] = [[1234.5, 0.0], [0.0, 0.0]]
    res = gather(app, [("POST", "/runs/classify/classify", {"sequences": [x]}) for x in xs])
    good = [x for i, x in enumerate(xs) if i != 17]
    ref = real(served["classify"], [np.array(x, np.float32) for x in good])
    answers = [r for i, r in enumerate(res) if i != 17]
    assert [r.status_code for r in answers] == [200] * 50
    for r, p in zip(answers, ref):
        assert r.json()["predictions"][0]["label"] == p["label"]
        np.testing.assert_allclose(r.json()["predictions"][0]["probabilities"]["up"], p["probabilities"]["up"],
                                   rtol=1e-5, atol=1e-6)
    assert res[17].status_code == 500 and "poisoned input reached the model" in res[17].json()["detail"]
    calls, items = batch_counts(app, "classify", "classify")
    assert calls < 51                                                # they were batched, then isolated


def test_full_queue_answers_503_with_retry_after(served, monkeypatch):
    real = A.classify_batch

    def slow(s, items):
        time.sleep(0.2)
        return real(s, items)

    monkeypatch.setattr(A, "classify_batch", slow)
    app = create_app(list(served.values()), ServeOptions(max_batch=1, max_wait_ms=0, max_queue=2))
    res = gather(app, [("POST", "/runs/classify/classify", {"sequences": [x]}) for x in seqs(8)])
    codes = [r.status_code for r in res]
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    busy = next(r for r in res if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]


def test_body_limit_413(served):
    with client(served, max_body=2000) as c:
        r = c.post("/runs/classify/classify", json={"sequences": seqs(40, T=20)})
        assert r.status_code == 413 and "limit of 2000 bytes" in r.json()["detail"]
        assert c.post("/runs/classify/classify", json={"sequences": seqs(1, T=3)}).status_code == 200


@pytest.mark.parametrize("path, body, message", [
    ("/runs/classify/classify", {"sequences": [[[1, 2, 3]]]}, "sequences[0] has 3 feature(s) per step; this run reads 2"),
    ("/runs/classify/classify", {"sequences": [[["a", 1]]]}, "sequences[0] must be numbers"),
    ("/runs/classify/classify", {"sequences": []}, "sequences is empty"),
    ("/runs/classify/classify", {"seqs": []}, "sequences: Field required"),
    ("/runs/forecast/forecast", {"series": [[]]}, "series is empty"),
    ("/runs/forecast/forecast", {"series": [[1.0]], "ids": ["a", "b"]}, "ids has 2 entries for 1 series"),
    ("/runs/forecast/forecast", {"series": [[1.0] * 11 + [None]]}, "series has a missing or non-finite value at index [11]"),
    ("/runs/forecast/forecast", {"series": [[-1.0] * 12]}, "log transform needs positive values"),
    ("/runs/autoencoder/anomalies", {"values": [[0.0, 1.0]] * 5}, "values has 5 rows; the model reads windows of 16"),
    ("/runs/lm/generate", {"prompt": "a", "length": 0}, "length=0: expected a whole number of tokens"),
    ("/runs/lm/generate", {"prompt": "a", "temperature": -1}, "temperature=-1.0: expected a number >= 0"),
    ("/runs/music/generate", {"steps": 0}, "steps=0, n=1: expected 1 to 10000 frames"),
    ("/runs/music/generate", {"temperature": -1}, "temperature=-1.0: expected a number >= 0"),
])
def test_bad_input_422_one_line(served, path, body, message):
    with client(served) as c:
        r = c.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail, detail


DIRECT_CASES = [
    ("/runs/classify/classify", {"sequences": seqs(3, seed=5)}),
    ("/runs/classify/classify", {"sequences": [[[1, 2, 3]]]}),
    ("/runs/classify/classify", {"sequences": []}),
    ("/runs/classify/classify", {"seqs": []}),
    ("/runs/classify/classify", b"{not json"),
    ("/runs/forecast/forecast", {"series": [[float(v) for v in range(1, 21)]]}),
    ("/runs/forecast/forecast", {"series": [[1.0]], "ids": ["a", "b"]}),
    ("/runs/autoencoder/anomalies", {"values": [[0.1 * i, 1.0] for i in range(40)]}),
    ("/runs/autoencoder/anomalies", {"values": [[0.0, 1.0]] * 5}),
    ("/runs/lm/score", {"texts": ["abc", "hello"]}),
    ("/runs/lm/score", {"texts": []}),
    ("/runs/nope/classify", {"sequences": [[[0, 0]]]}),
    ("/runs/forecast/classify", {"sequences": [[[0, 0]]]}),
]


def test_direct_json_routes_answer_as_fastapi_does(served):
    """The JSON task routes answered in guard.Guard, below FastAPI's stack, give the same status, bytes and
    headers as FastAPI's own routes (``direct=False``), for good input and every kind of bad input."""
    answers = {}
    for direct in (True, False):
        with client(served, direct=direct) as c:
            answers[direct] = []
            for path, body in DIRECT_CASES:
                r = (c.post(path, content=body) if isinstance(body, bytes) else c.post(path, json=body))
                answers[direct].append((r.status_code, r.headers["content-type"], r.content))
            text = c.get("/metrics").text
        assert 'grukit_requests_total{route="/runs/{name}/classify",status="422"} 4.0' in text
    for (path, _), a, b in zip(DIRECT_CASES, answers[True], answers[False]):
        assert a == b, path
    assert [a[0] for a in answers[True]] == [200, 422, 422, 422, 422, 200, 422, 200, 422, 200, 422, 404, 404]


def test_direct_route_body_limit_without_content_length_and_unexpected_errors(served, monkeypatch):
    app = create_app(list(served.values()), ServeOptions(max_body=2000))
    data = json.dumps({"sequences": seqs(40, T=20)}).encode()

    async def chunks():                                   # chunked: no content-length for Guard to check first
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    async def main(content):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/runs/classify/classify", content=content)
    r = asyncio.run(main(chunks()))
    assert r.status_code == 413 and "over the limit of 2000 bytes" in r.json()["detail"]

    def broken(*a, **k):
        raise AttributeError("a bug in a handler")
    monkeypatch.setattr(A, "parse_sequence", broken)
    r = asyncio.run(main(json.dumps({"sequences": seqs(1)}).encode()))
    assert r.status_code == 500 and r.json() == {"detail": "internal error: AttributeError"}


def test_unknown_run_or_route_404(served):
    with client(served) as c:
        r = c.post("/runs/nope/classify", json={"sequences": [[[0, 0]]]})
        assert r.status_code == 404 and "no run named 'nope'; serving: forecast, classify" in r.json()["detail"]
        r = c.post("/runs/forecast/classify", json={"sequences": [[[0, 0]]]})
        assert r.status_code == 404 and "is a forecast run; its routes are forecast" in r.json()["detail"]


def test_bearer_token_on_every_route_but_health(served, monkeypatch):
    from grukit.serve.server import TOKEN_ENV, build
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    from fastapi.testclient import TestClient
    app = build([served["classify"].run.path])
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        for method, path in (("GET", "/runs"), ("GET", "/metrics"), ("POST", "/runs/classify/classify")):
            r = c.request(method, path, json={"sequences": seqs(1)})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        r = c.get("/runs", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/runs", headers=ok).status_code == 200
        assert c.post("/runs/classify/classify", json={"sequences": seqs(1)}, headers=ok).status_code == 200
        from starlette.websockets import WebSocketDisconnect
        with pytest.raises(WebSocketDisconnect) as e:
            with c.websocket_connect("/runs/classify/stream") as ws:
                ws.receive_json()
        assert e.value.code == 4401
        with c.websocket_connect("/runs/classify/stream?token=s3cret") as ws:
            assert "session" in ws.receive_json()


def test_serving_limits_torch_and_numpy_blas_threads():
    """grukit serve runs torch and numpy's BLAS on --threads threads (BLAS on every core made a speech tick's
    small mel products 9x slower); the limit can be undone."""
    from threadpoolctl import threadpool_info, threadpool_limits
    from grukit.serve.server import limit_threads
    before = torch.get_num_threads()
    wide = threadpool_limits(limits=2, user_api="blas")          # as OpenBLAS starts on a 2-core machine
    limiter = limit_threads(1)
    try:
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and set(blas) == {1} and torch.get_num_threads() == 1
    finally:
        limiter.restore_original_limits()
        wide.restore_original_limits()
        torch.set_num_threads(before)
