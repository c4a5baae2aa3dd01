"""The WebSocket streaming session as a plain ASGI handler (``WS /runs/{name}/stream``).

:class:`~grukit.serve.app.Guard` (auth first) hands it every WebSocket connection to a stream path, below
FastAPI's router and middleware: a session sends a chunk every 100 ms for as long as it lasts, and each
message through Starlette's ``WebSocket``, the exception middleware's ``send`` wrapper and FastAPI's per
connection routing and dependency solving was Python work on the event loop that the stream route does not
use (it has no dependencies, no body and no HTTP exceptions). The protocol is unchanged: binary float32
chunks or JSON ``{"audio"/"frames": ..., "end": true}`` in, ``{"session"}``, ``{"partial"}`` per chunk,
``{"error"}`` for a bad chunk (the session goes on) and ``{"final"}`` out, JSON written as Starlette's
``send_json`` writes it.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from ..errors import GrukitError
from .batcher import on_worker
from .sessions import SessionBatcher, parse_chunk

__all__ = ["stream_run", "stream_session"]


def stream_run(path: str) -> str | None:
    """The run name of a stream path ``/runs/{name}/stream``, else None."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "" and parts[1] == "runs" and parts[3] == "stream" and parts[2]:
        return parts[2]
    return None


def _text(body: dict) -> dict:
    return {"type": "websocket.send", "text": json.dumps(body, separators=(",", ":"), ensure_ascii=False)}


async def stream_session(scope: dict, receive: Callable, send: Callable, *, name: str, runs: dict,
                         batcher: Callable[[str], SessionBatcher], final_output: Callable[[Any], dict],
                         executor_of: Callable[[str], Any], max_sessions: int, one_line: Callable) -> None:
    """One session: accept, then chunks in and partial outputs out until ``{"end": true}`` or disconnect."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if name not in runs:
        await send(_text({"error": f"no run named {name!r}"}))
        return await send({"type": "websocket.close", "code": 4404})
    sb = batcher(name)
    if len(sb.sessions) >= max_sessions:
        await send(_text({"error": f"{len(sb.sessions)} sessions are open (the limit); retry shortly"}))
        return await send({"type": "websocket.close", "code": 1013})
    try:
        session = sb.open()
    except GrukitError as e:
        await send(_text({"error": one_line(e)}))
        return await send({"type": "websocket.close", "code": 4422})
    served = runs[name]
    try:
        await send(_text({"session": session.id, "task": served.task}))
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                break
            try:
                raw = msg.get("bytes")
                if raw is None:
                    raw = json.loads(msg.get("text") or "null")
                chunk, final = parse_chunk(served, raw)
            except (GrukitError, json.JSONDecodeError) as e:
                await send(_text({"error": one_line(e)}))
                continue
            if chunk is not None and len(chunk):
                out = await sb.push(session, chunk)
                if not final:
                    await send(_text({"partial": out}))
            if final:
                if served.task == "speech":
                    out = await sb.push(session, None, final=True)
                else:
                    out = await on_worker(executor_of(name), final_output, session)
                await send(_text({"final": out}))
                await send({"type": "websocket.close", "code": 1000})
                break
    except OSError:                                          # the client left while we were sending
        pass
    finally:
        sb.close(session)                                    # a client that left frees its session
