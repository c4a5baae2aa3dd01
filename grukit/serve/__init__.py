"""``grukit serve``: trained runs behind an HTTP/WebSocket API with batching across requests and streams.

    from grukit.serve import create_app, load_served, ServeOptions
    app = create_app([load_served("runs/forecast")], ServeOptions(max_batch=32, max_wait_ms=5))

Modules: :mod:`~grukit.serve.adapters` (input checks, one batched call into each task),
:mod:`~grukit.serve.batcher` (per-run request queue and batching loop), :mod:`~grukit.serve.sessions`
(stateful streaming sessions advanced together), :mod:`~grukit.serve.app` (routes), :mod:`~grukit.serve.server`
(uvicorn, signals), ``static/`` (the web page).
"""
from __future__ import annotations

__all__ = ["create_app", "load_served", "ServeOptions", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "ServeOptions"):
        from . import app
        return getattr(app, name)
    if name == "load_served":
        from .adapters import load_served
        return load_served
    if name == "serve":
        from .server import serve
        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
