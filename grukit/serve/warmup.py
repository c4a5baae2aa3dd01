"""A small call of each route and a streaming tick per run, on the run's own worker thread, before serving."""
from __future__ import annotations

__all__ = ["warm_up"]


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
