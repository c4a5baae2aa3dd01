"""grukit.client against a live server: every call returns what the HTTP API answers, streaming generation
joins to the whole text, a streaming session's final transcript equals /transcribe, errors raise ServerError
with the server's one-line message, and the bearer token is sent."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.client import Client, ServerError  # noqa: E402
from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.app import ServeOptions, create_app  # noqa: E402
from test_serve_runs import TASKS, LiveServer, chirp, tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    served = {t: A.load_served(runs[t], t) for t in TASKS}
    with LiveServer(create_app(list(served.values()), ServeOptions(token="tok"))) as url:
        yield url, served


def test_client_calls_every_route(live):
    import soundfile as sf
    url, served = live
    with Client(url, token="tok") as c:
        assert c.health()["status"] == "ok"
        assert sorted(r["name"] for r in c.runs()) == sorted(TASKS)
        y = 10 + np.sin(np.arange(30) / 2)
        [fc] = c.forecast("forecast", [y])
        ref = served["forecast"].module.forecast_series(served["forecast"].models, served["forecast"].meta,
                                                        served["forecast"].config, [y])[0]
        np.testing.assert_allclose(fc["point"], ref["point"], rtol=1e-6)
        [p] = c.classify("classify", [np.ones((5, 2))])
        assert set(p["probabilities"]) == {"down", "up"}
        out = c.anomalies("autoencoder", np.c_[np.arange(40.0), np.zeros(40)])
        assert len(out["scores"]) == 40
        text = c.generate("lm", "the", length=40, temperature=0.7, seed=2)
        assert "".join(c.generate("lm", "the", length=40, temperature=0.7, seed=2, stream=True)) == text
        [piece] = c.music("music", steps=8, seed=1)
        assert piece["frames"] == 8
        wave = np.concatenate([chirp(0), chirp(2, 1)])
        buf = io.BytesIO()
        sf.write(buf, wave, 8000, format="WAV", subtype="FLOAT")
        whole = c.transcribe("speech", buf.getvalue())
        with c.stream("speech") as s:
            for i in range(0, len(wave), 800):
                s.send(wave[i:i + 800])
            assert s.end()["text"] == whole["text"]
        with c.stream("speech") as s:                        # two utterances on one connection
            first = s.id
            for k in range(2):
                for i in range(0, len(wave), 800):
                    s.send(wave[i:i + 800])
                assert s.end(next=k == 0)["text"] == whole["text"]
            assert s.id != first
        assert "grukit_requests_total" in c.metrics()
        with pytest.raises(ServerError, match="422: sequences\\[0\\] has 3 feature"):
            c.classify("classify", [np.ones((4, 3))])
    with Client(url) as c:                                   # no token
        with pytest.raises(ServerError) as e:
            c.runs()
        assert e.value.status == 401
