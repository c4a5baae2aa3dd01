"""The plain ASGI layer in front of FastAPI: bearer auth (401), request body limit (413), per-route metrics, and
the JSON task routes answered directly.

Everything ``grukit serve`` receives passes through :class:`Guard` first. Three kinds of request stop here,
below FastAPI's stack:

* WebSocket streams (``/runs/{name}/stream``), handed to :func:`grukit.serve.streaming.stream_session`;
* ``POST /runs/{name}/{kind}`` for the JSON task routes (forecast, classify, anomalies, score): the body is read
  here and given, as bytes, to the same handler the FastAPI route calls (``json_routes[kind](name, raw)``),
  whose result is sent as JSON; an exception it raises is answered through ``answer`` (the same mapping the
  FastAPI exception handlers use: 422 for bad input with grukit's one-line message, 404, 503 with
  ``Retry-After``...). Measured with ``bench/serve.py``'s load (2026-12-06, 32 clients on ``/classify``):
  FastAPI's routing, dependency and exception layers cost the event loop ~0.15 ms of CPU per request, 40% of
  its ~0.37 ms, and the event loop is what limits batched serving; answering here raised batched requests/s
  by 20-30% with every answer unchanged (tested against the FastAPI route, good and bad input alike);
* the answers to auth and size failures.

Everything else (the page, ``/docs``, status routes, uploads, generation with Server-Sent Events) goes on to
FastAPI, which still declares the JSON routes for ``/docs`` (and answers them when ``direct`` is off).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Awaitable, Callable, Optional

from .streaming import stream_run

__all__ = ["Guard"]

log = logging.getLogger("grukit.serve")

OPEN_PATHS = ("/health",)
OPEN_PREFIXES = ("/static/",)

JsonHandler = Callable[[str, bytes], Awaitable[dict]]
Answer = Callable[[BaseException], Optional[tuple[int, dict, dict]]]


def _response_json(content) -> bytes:
    """``content`` encoded exactly as FastAPI's ``JSONResponse`` encodes it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


class Guard:
    """Bearer auth (401), request body limit (413), per-route metrics, streams and the direct JSON routes."""

    def __init__(self, app, options, metrics, stream=None, json_routes: dict[str, JsonHandler] | None = None,
                 answer: Answer | None = None):
        self.app, self.options, self.metrics = app, options, metrics
        self.stream = stream                 # the WebSocket session handler, called below FastAPI's stack
        self.json_routes = json_routes or {}
        self.answer = answer

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = _route_of(path)
        token = self.options.token
        if token and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES) and path != "/":
            if not _authorised(scope, token):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4401, "reason": "unauthorised"})
                    return
                self.metrics.observe(route, 401, 0.0)
                return await _send_json(send, 401, {"detail": "missing or wrong bearer token: send "
                                                    "'Authorization: Bearer TOKEN'"},
                                        [(b"www-authenticate", b"Bearer")])
        if scope["type"] == "websocket":
            name = stream_run(path) if self.stream is not None else None
            if name is not None:
                return await self.stream(scope, receive, send, name)
            return await self.app(scope, receive, send)
        limit = self.options.max_body
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.metrics.observe(route, 413, 0.0)
            return await _send_json(send, 413, {"detail": f"request body of {int(length)} bytes is over the "
                                                f"limit of {limit} bytes"})
        t0 = time.perf_counter()
        direct = self._direct(scope, path)
        if direct is not None:
            status = await self._answer_json(direct, receive, send, limit)
            if status is not None:
                self.metrics.observe(route, status, time.perf_counter() - t0)
            return
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg

        status = [500]

        async def sending(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, limited, sending)
        except _TooLarge:
            status[0] = 413
            await _over_limit(send, limit)
        finally:
            if route != "/metrics":
                self.metrics.observe(route, status[0], time.perf_counter() - t0)

    def _direct(self, scope, path: str) -> tuple[JsonHandler, str] | None:
        """``(handler, run name)`` when ``path`` is ``POST /runs/{name}/{kind}`` of a direct JSON route."""
        if not self.json_routes or scope["method"] != "POST":
            return None
        parts = path.split("/")
        if len(parts) != 4 or parts[0] or parts[1] != "runs" or not parts[2]:
            return None
        handler = self.json_routes.get(parts[3])
        return None if handler is None else (handler, parts[2])

    async def _answer_json(self, direct, receive, send, limit: int) -> int | None:
        """Read the body, run the handler, send its JSON (or the error's answer); the status, or None when the
        client left before its body arrived."""
        handler, name = direct
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body = msg.get("body", b"")
            seen += len(body)
            if seen > limit:
                await _over_limit(send, limit)
                return 413
            chunks.append(body)
            if not msg.get("more_body"):
                break
        try:
            content = await handler(name, b"".join(chunks))
        except Exception as e:  # noqa: BLE001 - answered like FastAPI's handlers, a 500 otherwise
            known = self.answer(e) if self.answer is not None else None
            if known is None:
                log.exception("POST /runs/%s: unexpected error", name)
                known = (500, {"detail": f"internal error: {type(e).__name__}"}, {})
            status, detail, headers = known
            await _send_json(send, status, detail, [(k.lower().encode(), str(v).encode())
                                                    for k, v in headers.items()])
            return status
        await _send_json(send, 200, content)
        return 200


class _TooLarge(Exception):
    pass


def _authorised(scope, token: str) -> bool:
    headers = dict(scope.get("headers") or [])
    if headers.get(b"authorization", b"").decode("latin-1") == f"Bearer {token}":
        return True
    if scope["type"] == "websocket":                                 # browsers cannot set WS headers
        from urllib.parse import parse_qs
        q = parse_qs(scope.get("query_string", b"").decode())
        return q.get("token", [""])[0] == token
    return False


async def _send_json(send, status: int, body, headers: list | None = None) -> None:
    data = _response_json(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def _over_limit(send, limit: int) -> None:
    """The 413 for a body found over the limit while it was read (no content-length to check first)."""
    await _send_json(send, 413, {"detail": f"request body is over the limit of {limit} bytes"})


def _route_of(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[0] == "runs" and len(parts) >= 2:
        return "/runs/{name}" + ("/" + "/".join(parts[2:]) if len(parts) > 2 else "")
    if parts[0] == "static":
        return "/static"
    return path
