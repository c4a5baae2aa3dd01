"""The WebSocket streaming session as a plain ASGI handler (``WS /runs/{name}/stream``).

:class:`~grukit.serve.guard.Guard` (auth first) hands it every WebSocket connection to a stream path, below
FastAPI's router and middleware: a session sends a chunk every 100 ms for as long as it lasts, and each
message through Starlette's ``WebSocket``, the exception middleware's ``send`` wrapper and FastAPI's per
connection routing and dependency solving was Python work on the event loop that the stream route does not
use (it has no dependencies, no body and no HTTP exceptions). The protocol is unchanged: binary float32
chunks or JSON ``{"audio"/"frames": ..., "end": true}`` in, ``{"session"}``, ``{"partial"}`` per chunk,
``{"error"}`` for a bad chunk (the session goes on) and ``{"final"}`` out, JSON written as Starlette's
``send_json`` writes it.

After ``{"final"}`` the server closes the connection, unless the end message asked for the next session on
the same connection (``{"end": true, "next": true}``): then the finished session is freed and a new one
begins at once, announced by a new ``{"session"}``. A client that streams one utterance after another saves
a TCP connection, an HTTP upgrade and its trips through the event loop per utterance: on the 2-core machine
with 400 streams, opening a connection took 80-280 ms before its first chunk could go (the event loop runs
the ticks between those trips), against ~15 ms for a chunk's answer.
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
    """One connection: accept, then a session (chunks in, partial outputs out) until ``{"end": true}`` or a
    disconnect, and another on the same connection after each ``{"end": true, "next": true}``."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if name not in runs:
        await send(_text({"error": f"no run named {name!r}"}))
        return await send({"type": "websocket.close", "code": 4404})
    sb = batcher(name)
    served = runs[name]
    session = None
    try:
        while True:                                          # one session, or one after another ("next")
            session = await _open(sb, send, max_sessions, one_line)
            if session is None:
                return
            await send(_text({"session": session.id, "task": served.task}))
            if not await _serve_session(session, receive, send, sb=sb, name=name, served=served,
                                        final_output=final_output, executor_of=executor_of, one_line=one_line):
                break
            sb.close(session)
            session = None
    except OSError:                                          # the client left while we were sending
        pass
    finally:
        if session is not None:
            sb.close(session)                                # a client that left frees its session


async def _open(sb: SessionBatcher, send: Callable, max_sessions: int, one_line: Callable):
    """A new session, or None after telling the client why not and closing."""
    if len(sb.sessions) >= max_sessions:
        await send(_text({"error": f"{len(sb.sessions)} sessions are open (the limit); retry shortly"}))
        await send({"type": "websocket.close", "code": 1013})
        return None
    try:
        return sb.open()
    except GrukitError as e:
        await send(_text({"error": one_line(e)}))
        await send({"type": "websocket.close", "code": 4422})
        return None


async def _serve_session(session, receive: Callable, send: Callable, *, sb: SessionBatcher, name: str, served,
                         final_output: Callable[[Any], dict], executor_of: Callable[[str], Any],
                         one_line: Callable) -> bool:
    """Chunks in, partial outputs out, until the end message (its final output sent) or a disconnect. True
    when the client asked for the next session on this connection."""
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return False
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
            if isinstance(raw, dict) and raw.get("next") is True:
                return True
            await send({"type": "websocket.close", "code": 1000})
            return False
