"""Running the app on uvicorn: runs loaded once, 127.0.0.1 by default, SIGTERM drains and exits 0."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .app import ServeOptions, create_app

__all__ = ["serve", "build", "warm_up", "TOKEN_ENV"]

TOKEN_ENV = "GRUKIT_SERVE_TOKEN"


def build(run_dirs: list[str | Path], options: ServeOptions | None = None):
    """Load every run (names: directory names, numbered on clashes) and make the app."""
    from .adapters import load_served
    if not run_dirs:
        raise ConfigError("give at least one run directory to serve")
    served, names = [], set()
    for d in run_dirs:
        base = Path(d).resolve().name
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.add(name)
        served.append(load_served(d, name))
        warm_up(served[-1])
    opts = options or ServeOptions()
    if opts.token is None and os.environ.get(TOKEN_ENV):
        opts.token = os.environ[TOKEN_ENV]
    return create_app(served, opts)


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 8000,
          options: ServeOptions | None = None, drain_seconds: float = 30.0, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM: uvicorn stops accepting, finishes in-flight requests (at most
    ``drain_seconds``), the batchers drain, and the process exits 0."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:          # a drained SIGTERM is a clean stop: exit 0, not re-raised
                self._captured_signals.remove(sig)

    app = build(run_dirs, options)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_seconds,
                            ws=ws_implementation(), lifespan="on")
    Server(config).run()


def ws_implementation() -> str:
    """uvicorn's sans-I/O websockets protocol where this uvicorn has it (the legacy one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS
    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


def warm_up(s) -> None:
    """One small call of each route (and a streaming tick) at start, so the first request does not pay for
    kernel compilation and first-use set-up. Inputs the run cannot take (e.g. covariates) are skipped."""
    import numpy as np
    import torch

    from ..errors import GrukitError
    from .adapters import (anomaly_batch, classify_batch, forecast_batch, generate_batch, music_batch, streamable,
                           transcribe_batch)
    F = int(s.meta.get("input_size", 1))
    calls = {"forecast": lambda: forecast_batch(s, [{"series": np.ones((s.config.lookback, int(s.meta["n_targets"]))),
                                                     "id": None}]),
             "classify": lambda: classify_batch(s, [np.zeros((4, F), np.float32)]),
             "autoencoder": lambda: anomaly_batch(s, [np.zeros((s.config.window, F), np.float32)]),
             "lm": lambda: list(generate_batch(s, [{"prompt": "", "length": 2, "temperature": 1.0, "seed": 0}])),
             "music": lambda: music_batch(s, [{"steps": 2, "temperature": 1.0, "seed": 0}]),
             "speech": lambda: transcribe_batch(s, [np.zeros(int(s.meta["features"]["rate"]) // 5, np.float32)])}
    try:
        calls[s.task]()
        if streamable(s):
            from .sessions import Session, SessionBatcher
            tick = SessionBatcher(s, None)._tick
            for n in (1, 2):
                sessions = [Session(s) for _ in range(n)]
                for q in sessions:
                    q.pending = (np.zeros(int(s.meta["features"]["rate"]) // 10, np.float32) if s.task == "speech"
                                 else np.zeros((3, F), np.float32))
                with torch.no_grad():
                    tick(sessions)
    except GrukitError:
        pass
