"""bench/serve.py's hand-rolled WebSocket load generator speaks the protocol: its masked frames unmask to the
payload, and its streams against a live server get every chunk answered, close cleanly and count latencies
only after the warm-up."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")

from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.app import create_app  # noqa: E402
from test_serve_runs import LiveServer, chirp, tiny_runs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import serve as bench  # noqa: E402


@pytest.mark.parametrize("n", [0, 13, 125, 126, 3200, 70000])
def test_client_frames_are_masked_and_unmask_to_the_payload(n):
    payload = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    f = bench.client_frame(2, payload)
    assert f[0] == 0x82 and f[1] & 0x80                                      # FIN + binary, masked
    size, at = f[1] & 0x7F, 2
    if size == 126:
        size, at = int.from_bytes(f[2:4], "big"), 4
    elif size == 127:
        size, at = int.from_bytes(f[2:10], "big"), 10
    key, body = f[at:at + 4], f[at + 4:]
    assert size == n == len(body)
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def test_bench_streams_are_answered_by_a_live_server(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    app = create_app([A.load_served(runs["speech"], "speech")])
    wave = chirp(1, 0, 2)
    chunk = np.asarray(wave[:800], "<f4").tobytes()
    with LiveServer(app) as url:
        r = asyncio.run(bench.speech_load(url, streams=3, seconds=1.2, chunk=chunk, n_chunks=4, warmup=0.3))
        counted = len(r["lat"])
        # a run with the warm-up as long as the whole load counts nothing
        r0 = asyncio.run(bench.speech_load(url, streams=2, seconds=0.0, chunk=chunk, n_chunks=4, warmup=0.4))
        # one connection per stream, the next utterance's session on it: as many chunks, no errors
        rp = asyncio.run(bench.speech_load(url, streams=3, seconds=1.2, chunk=chunk, n_chunks=4, warmup=0.3,
                                           persistent=True))
    assert rp["errors"] == [] and 3 * 9 <= len(rp["lat"]) <= 3 * 13
    assert r["errors"] == [] and r0["errors"] == []
    # 3 streams counted for 1.2 s at one chunk per 100 ms: 12 each (the end message goes when the next chunk
    # would, and the next utterance's first chunk right after it reconnects), not more (no catching up)
    assert 3 * 9 <= counted <= 3 * 13 and all(0 < x < 1.0 for x in r["lat"])
    assert r0["lat"] == []
    # the real-time share the bench holds a level to: 3 streams for 1.2 s
    stats = bench.speech_stats([r], bench.real_time_chunks(3, 1.2))
    assert stats["real time"] == round(counted / 36, 3) and 0.75 <= stats["real time"] <= 13 / 12
