"""``grukit serve RUN [RUN ...]``: the typer command (registered by one line in :mod:`grukit.cli`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["serve"]

EPILOG = ("Examples:\n\n\b\n  grukit serve runs/forecast runs/lm\n"
          "  grukit serve runs/speech --port 9000 --max-batch 64 --max-wait-ms 2\n"
          "  GRUKIT_SERVE_TOKEN=secret grukit serve runs/classify --host 0.0.0.0\n\n"
          "Then open http://127.0.0.1:8000/ (the page) or /docs (the API). See docs/serving.md.")


def serve(runs: list[Path] = typer.Argument(..., help="run directories written by `grukit train`"),
          host: str = typer.Option("127.0.0.1", "--host", help="address to bind (127.0.0.1: this machine only)"),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port"),
          max_batch: int = typer.Option(32, "--max-batch", min=1, help="most requests per model call (1 turns "
                                        "batching off)"),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, help="longest wait for company, "
                                            "from the oldest request's arrival: only for calls over 10 ms "
                                            "(generation; at most a tenth of the call); others start as soon "
                                            "as the worker is free"),
          max_queue: int = typer.Option(256, "--max-queue", min=1, help="waiting requests per run before 503"),
          session_batch: int = typer.Option(256, "--session-batch", min=1, help="most streaming sessions "
                                            "advanced together by one model call per tick (1 = a call per "
                                            "session)"),
          session_wait_ms: float = typer.Option(5.0, "--session-wait-ms", min=0, help="longest a streaming "
                                                "tick waits for company, from its oldest chunk's arrival (fuller "
                                                "ticks cost less CPU per chunk; streams send one every ~100 ms)"),
          max_body_mb: float = typer.Option(10.0, "--max-body-mb", min=0.001, help="request body limit (413)"),
          token: Optional[str] = typer.Option(None, "--token", help="require 'Authorization: Bearer TOKEN' on "
                                              "every route but /health (default: $GRUKIT_SERVE_TOKEN)"),
          threads: int = typer.Option(1, "--threads", min=1, help="threads per model call (torch and numpy's BLAS)"),
          drain_seconds: float = typer.Option(30.0, "--drain-seconds", help="on SIGTERM: how long in-flight "
                                              "work may take before exit"),
          access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="log one line per "
                                          "request and per WebSocket connection (off: /metrics counts requests, "
                                          "errors, latency and sessions)")) -> None:
    """Serve trained runs over HTTP and WebSocket, batched across requests, with a web page at /."""
    from .serve.app import ServeOptions
    from .serve.server import limit_threads
    from .serve.server import serve as run_server
    limit_threads(threads)                              # torch and numpy's BLAS
    opts = ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                        max_body=int(max_body_mb * 2 ** 20), token=token, session_batch=session_batch,
                        session_wait_ms=session_wait_ms, warm_up=True)
    run_server(runs, host=host, port=port, options=opts, drain_seconds=drain_seconds, access_log=access_log)
