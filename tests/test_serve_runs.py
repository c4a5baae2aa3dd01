"""Tiny trained runs of every task for the serving tests (trained once per test session, seconds each).

Not a test module of its own: ``tiny_runs(base)`` is shared by tests/test_serve*.py through a session fixture.
The one test here checks the fixture itself: every task has a run directory that ``grukit.runs`` opens.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RATE = 8000
TASKS = ("forecast", "classify", "autoencoder", "lm", "music", "speech")


def _series_csv(path: Path, n=60) -> Path:
    t = pd.date_range("2020-01-01", periods=n, freq="D")
    y = 10 + np.sin(np.arange(n) * 2 * np.pi / 7) + 0.01 * np.arange(n)
    pd.DataFrame({"date": t, "sales": y}).to_csv(path, index=False)
    return path


def _classify_npz(path: Path, n=40, T=12, F=2, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    lengths = rng.integers(4, T + 1, n)
    X = rng.normal(size=(n, T, F)).astype(np.float32) + y[:, None, None] * 1.5
    for i in range(n):
        X[i, lengths[i]:] = 0.0
    np.savez(path, X=X, y=np.where(y == 1, "up", "down"), lengths=lengths)
    return path


def _anomaly_csv(path: Path, n=300) -> Path:
    t = np.arange(n)
    x = np.sin(t * 2 * np.pi / 20)
    x[250:258] += 3.0
    pd.DataFrame({"t": t, "value": x}).to_csv(path, index=False)
    return path


def _text(path: Path) -> Path:
    lines = ["the cat sat on the mat .", "the dog sat on the log .", "a cat and a dog ran to the mat ."]
    path.write_text("\n".join(lines[i % 3] for i in range(60)) + "\n", encoding="utf-8")
    return path


def _midi_dir(path: Path) -> Path:
    from grukit.data.music import write_midi
    path.mkdir()
    for i in range(4):
        r = (np.random.default_rng(i).random((40, 88)) < 0.06).astype(np.uint8)
        r[0, 40] = 1
        write_midi(r, path / f"piece{i}.mid", frame_seconds=0.125)
    return path


def chirp(digit: int, speaker: int = 0, i: int = 0) -> np.ndarray:
    t = np.arange(int((0.18 + 0.01 * i) * RATE)) / RATE
    f0 = 300 + 400 * digit + 30 * speaker
    return (0.3 * np.sin(2 * np.pi * (f0 + 500 * t) * t)).astype(np.float32)


def _speech_folder(path: Path) -> Path:
    import soundfile as sf
    path.mkdir()
    for s, spk in enumerate(("ann", "bob")):
        for d in range(3):
            for i in range(7):
                sf.write(str(path / f"{d}_{spk}_{i}.wav"), chirp(d, s, i), RATE, subtype="PCM_16")
    return path


@functools.lru_cache(maxsize=None)
def tiny_runs(base: Path) -> dict[str, Path]:
    """Train one tiny run per task under ``base`` (once per process); returns {task: run directory}."""
    from grukit.train import fit
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    common = dict(progress=False, patience=0, backend="aten", evaluate=False)
    specs = {
        "forecast": dict(data=str(_series_csv(base / "sales.csv")), time_col="date", target="sales",
                         lookback=12, horizon=4, hidden_size=8, batch_size=16, max_epochs=2, lr=1e-2,
                         likelihood="quantile"),
        "classify": dict(data=str(_classify_npz(base / "train.npz")), hidden_size=8, batch_size=8, max_epochs=2,
                         val_fraction=0.25, lr=2e-2, conv_channels=0, gru_steps=0, conv_steps=0,
                         normalize="feature", first_difference="off",    # a plain GRU: it can stream
                         length_stat=True),                               # the head reads the frames so far
        "autoencoder": dict(data=str(_anomaly_csv(base / "values.csv")), window=16, stride=2, hidden_size=8,
                            latent_size=4, batch_size=16, max_epochs=2, train_fraction=0.5),
        "lm": dict(data=str(_text(base / "text.txt")), tokenize="char", hidden_size=16, embedding_size=8,
                   num_layers=1, dropout=0.0, bptt=16, batch_size=4, eval_batch_size=2, max_epochs=1),
        "music": dict(data=str(_midi_dir(base / "midi")), quantize="time", fs=8.0, hidden_size=8, max_epochs=1,
                      batch_size=4, chunk=16, nade_hidden=4),
        "speech": dict(data=str(_speech_folder(base / "rec")), hidden_size=16, num_layers=1, conv_channels=8,
                       n_train_utterances=24, n_test_utterances=4, max_epochs=1, batch_size=8,
                       normalize="global"),
    }
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task, kw in specs.items():
            out[task] = fit(task, out=base / task, **common, **kw).path
    return out


def test_tiny_runs_open(tmp_path_factory):
    from grukit.runs import open_run
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    for task in TASKS:
        assert open_run(runs[task], task).task == task


# ------------------------------------------------------------------ an in-process uvicorn on a free port
class LiveServer:
    """``with LiveServer(app) as url:`` serves ``app`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app):
        import uvicorn
        from grukit.serve.server import ws_implementation
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    ws=ws_implementation(), lifespan="on"))
        self.thread = None

    def __enter__(self) -> str:
        import threading
        import time
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 30 or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
