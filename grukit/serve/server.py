"""Running the app on uvicorn: runs loaded once, 127.0.0.1 by default, SIGTERM drains and exits 0."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .app import ServeOptions, create_app

__all__ = ["serve", "build", "limit_threads", "TOKEN_ENV"]

TOKEN_ENV = "GRUKIT_SERVE_TOKEN"


def limit_threads(threads: int):
    """Run every model call, and numpy's BLAS, on ``threads`` threads for the life of the server process.

    ``torch.set_num_threads`` covers torch; numpy's BLAS (OpenBLAS: one thread per core unless
    ``OMP_NUM_THREADS`` says otherwise) is limited through threadpoolctl. A streaming speech tick's mel
    filterbank products are small matrices, and with BLAS on both cores of the 2-core machine they took 9x
    the CPU (a 400-session tick 146 ms instead of 16 ms; 150 streams: p99 64 ms instead of 17 ms, 91% of real
    time instead of 99%). Returns the threadpoolctl limiter (``restore_original_limits()`` undoes it)."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads, user_api="blas")


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
    opts = options or ServeOptions(warm_up=True)
    if opts.token is None and os.environ.get(TOKEN_ENV):
        opts.token = os.environ[TOKEN_ENV]
    return create_app(served, opts)


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 8000,
          options: ServeOptions | None = None, drain_seconds: float = 30.0, log_level: str = "info",
          access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM: uvicorn stops accepting, finishes in-flight requests (at most
    ``drain_seconds``), the batchers drain, and the process exits 0.

    This process only serves, so its start-up heap is frozen out of the cyclic GC after warm-up
    (``ServeOptions.freeze_gc``). ``access_log``: uvicorn's line per request (off by default: it cost ~5% of
    the event loop under load, and ``/metrics`` counts requests, errors and latency per route)."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:          # a drained SIGTERM is a clean stop: exit 0, not re-raised
                self._captured_signals.remove(sig)

    app = build(run_dirs, options)
    app.state.options.freeze_gc = True
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=drain_seconds,
                            ws=ws_implementation(), lifespan="on",
                            ws_per_message_deflate=False)       # float audio frames do not compress
    if not access_log:                                          # after uvicorn.Config set up its logging
        quiet_websocket_log()
    Server(config).run()


WS_LINES = frozenset({'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"})


def quiet_websocket_log():
    """Drop uvicorn's (and its websockets protocol's) three lines per WebSocket connection, the WebSocket
    counterpart of the access log: a stream reconnecting every utterance made them ~3% of the event loop's
    time, and ``/metrics`` counts sessions. Other lines (start-up, errors) are kept. Returns the filter."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return record.msg not in WS_LINES
    logging.getLogger("uvicorn.error").addFilter(keep)
    return keep


def ws_implementation() -> str:
    """uvicorn's sans-I/O websockets protocol where this uvicorn has it (the legacy one is deprecated)."""
    from uvicorn.config import WS_PROTOCOLS
    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"
