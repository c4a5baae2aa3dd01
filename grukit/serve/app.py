"""The FastAPI application of ``grukit serve``: routes, error answers, auth, body limit and metrics.

Every run is loaded once (:func:`grukit.serve.adapters.load_served`) and gets one worker thread; its request
kinds each get a :class:`~grukit.serve.batcher.Batcher` and, when its GRU can stream, a
:class:`~grukit.serve.sessions.SessionBatcher`. Handlers only check input, enqueue and await.

Answers: 200 with JSON (or ``text/event-stream`` for ``"stream": true`` generation); 401 without the bearer
token (when one is set; ``/health`` and the static page are open, the page sends the token itself); 404 for an
unknown run or a route the run's task does not have; 413 for a body over the limit; 422 with grukit's one-line
message for bad input; 503 with ``Retry-After`` when the run's queue is full.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError

from ..errors import GrukitError
from . import adapters as A
from .batcher import Batcher, QueueFull
from .guard import Guard
from .metrics import Metrics
from .sessions import SessionBatcher
from .streaming import stream_session

__all__ = ["ServeOptions", "create_app"]

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeOptions:
    max_batch: int = 32              # most requests (or streaming sessions) per model call; 1 = no batching
    max_wait_ms: float = 5.0         # longest wait for company, from the oldest item's arrival (see batcher)
    max_queue: int = 256             # waiting requests per run and kind before 503
    max_body: int = 10 * 2 ** 20     # bytes per request body before 413
    token: Optional[str] = None      # bearer token required on every route but /health and the page
    session_batch: int = 256         # most sessions advanced per GRU step (1 = one step call per session)
    session_wait_ms: float = 5.0     # longest a streaming tick waits for company, from its oldest chunk's arrival
    max_sessions: int = 1024         # open streaming sessions per run
    retry_after: int = 1             # seconds, in the 503 answer
    warm_up: bool = False            # one small call per route on each run's worker thread before serving
    freeze_gc: bool = False          # after start-up, move every live object out of the cyclic GC's reach
    direct: bool = True              # answer the JSON task routes below FastAPI's stack (guard.py; same answers)


# ---------------------------------------------------------------- request bodies (shown in /docs)
class ForecastBody(BaseModel):
    series: list[Any] = Field(..., description="histories: each a list of numbers (T,) or rows (T, C)")
    ids: Optional[list[Optional[str]]] = Field(None, description="per series, its id in the training data "
                                               "(its scaler is used); unknown ids use their own history")


class ClassifyBody(BaseModel):
    sequences: list[Any] = Field(..., description="each a list of time steps, each a list of F features")


class AnomalyBody(BaseModel):
    values: list[Any] = Field(..., description="rows (n, F) of one series, original units")


class GenerateBody(BaseModel):
    prompt: str = Field("", description="lm: text that primes the state")
    length: int = Field(200, description="lm: tokens to generate")
    steps: int = Field(64, description="music: frames to generate")
    n: int = Field(1, description="music: pieces to generate together")
    temperature: float = Field(1.0, description="0 = most likely; 1 = the model's distribution")
    top_k: int = Field(0, description="lm: sample among the k most likely tokens (0 = all)")
    top_p: float = Field(1.0, description="lm: nucleus sampling mass (1 = all)")
    seed: Optional[int] = Field(None, description="same seed, same output (alone; see the docs for batches)")
    stream: bool = Field(False, description="lm: stream text as Server-Sent Events")


class ScoreBody(BaseModel):
    texts: list[str]


def parse_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """A request's JSON body as ``model``, parsed and validated in one pass by pydantic-core (Rust).

    FastAPI's own body parameter decodes with the standard ``json`` module and validates the Python objects
    afterwards: for a (64, 8) sequence that was ~a fifth of the event loop's time per /classify request.
    Errors are answered like FastAPI's (``RequestValidationError``: 422, one line naming the field)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def body_doc(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting ``model`` as the JSON body of a route that reads it with :func:`parse_body`."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


def one_line(e: BaseException) -> str:
    msg = str(e).replace("\n  - ", "; ").strip()
    return msg.splitlines()[0] if msg else type(e).__name__


# ---------------------------------------------------------------- the app
def create_app(served: list[A.Served], options: ServeOptions | None = None) -> FastAPI:
    """The app serving ``served`` runs (names must be unique)."""
    opts = options or ServeOptions()
    runs = {s.name: s for s in served}
    if len(runs) != len(served):
        from ..errors import ConfigError
        names = [s.name for s in served]
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"two runs are named {dup[0]!r}; give them different directory names")
    metrics = Metrics()
    executors = {n: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"grukit-{n}") for n in runs}
    batchers: dict[tuple[str, str], Batcher] = {}
    streams: dict[str, SessionBatcher] = {}
    state = {"draining": False}

    def batcher(name: str, kind: str) -> Batcher:
        key = (name, kind)
        if key not in batchers:
            s = runs[name]
            fn = {"forecast": A.forecast_batch, "classify": A.classify_batch, "anomalies": A.anomaly_batch,
                  "transcribe": A.transcribe_batch, "score": A.score_batch,
                  "generate": _lm_generate if s.task == "lm" else A.music_batch}[kind]
            hist = metrics.batch.labels(name, kind)
            b = Batcher(lambda items, s=s, fn=fn: fn(s, items), executors[name], max_batch=opts.max_batch,
                        max_wait_ms=opts.max_wait_ms, max_queue=opts.max_queue, on_batch=hist.observe)
            metrics.queue.labels(name, kind).set_function(lambda b=b: b.depth)
            batchers[key] = b
        return batchers[key]

    def session_batcher(name: str) -> SessionBatcher:
        if name not in streams:
            hist = metrics.batch.labels(name, "stream")
            sb = SessionBatcher(runs[name], executors[name], max_batch=opts.session_batch,
                                max_wait_ms=opts.session_wait_ms, on_batch=hist.observe)
            metrics.sessions.labels(name).set_function(lambda sb=sb: len(sb.sessions))
            streams[name] = sb
        return streams[name]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if opts.warm_up:                                 # on the worker threads: kernels set up per thread
            from .warmup import warm_up
            loop = asyncio.get_running_loop()
            for name, s in runs.items():
                await loop.run_in_executor(executors[name], warm_up, s)
                if A.streamable(s):
                    warm_up(s)                           # short streaming ticks run on this thread too
        if opts.freeze_gc:
            freeze_heap()
        yield
        state["draining"] = True                         # uvicorn stopped accepting and finished requests
        for b in list(batchers.values()):
            await b.drain()
        for sb in list(streams.values()):
            await sb.drain()
        for ex in executors.values():
            ex.shutdown(wait=True)

    app = FastAPI(title="grukit serve", version=_version(), lifespan=lifespan,
                  description="Trained grukit runs behind one API: batched across requests, streaming sessions "
                              "over WebSocket, Prometheus metrics. The page at / uses every route.")
    app.state.runs, app.state.options, app.state.metrics = runs, opts, metrics

    async def stream(scope, receive, send, name: str) -> None:
        """``WS /runs/{name}/stream``: a streaming session (``streaming.stream_session``)."""
        await stream_session(scope, receive, send, name=name, runs=runs, batcher=session_batcher,
                             final_output=_final_output, executor_of=executors.__getitem__,
                             max_sessions=opts.max_sessions, one_line=one_line)

    def answer(e: BaseException) -> tuple[int, dict, dict] | None:
        """The status, JSON body and headers that answer ``e``, or None for an unexpected error (a 500): the
        one mapping behind FastAPI's exception handlers and the direct JSON routes (``guard.Guard``)."""
        if isinstance(e, GrukitError):
            return 422, {"detail": one_line(e)}, {}
        if isinstance(e, RequestValidationError):
            first = e.errors()[0] if e.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            return 422, {"detail": f"{where or 'body'}: {first.get('msg', 'invalid')}"}, {}
        if isinstance(e, QueueFull):
            return 503, {"detail": f"busy: {e}; retry shortly"}, {"Retry-After": str(opts.retry_after)}
        if isinstance(e, HTTPException):
            return e.status_code, {"detail": e.detail}, dict(e.headers or {})
        return None

    async def answered(request: Request, e: Exception):
        status, body, headers = answer(e)
        return JSONResponse(body, status_code=status, headers=headers or None)

    for kind in (GrukitError, RequestValidationError, QueueFull):
        app.add_exception_handler(kind, answered)

    def get(name: str, kind: str | None = None) -> A.Served:
        if name not in runs:
            raise HTTPException(404, f"no run named {name!r}; serving: {', '.join(runs)}")
        s = runs[name]
        if kind is not None and kind not in A.ROUTES[s.task]:
            raise HTTPException(404, f"run {name!r} is a {s.task} run; its routes are "
                                     f"{', '.join(A.ROUTES[s.task])}")
        if state["draining"]:
            raise HTTPException(503, "shutting down")
        return s

    # ---- pages and status
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", tags=["status"])
    async def health():
        """Liveness: 200 while serving (no token needed)."""
        if state["draining"]:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok", "runs": len(runs)}

    @app.get("/runs", tags=["status"])
    async def list_runs():
        """Every served run: task, routes, config, metrics and input shape."""
        return [s.describe() for s in runs.values()]

    @app.get("/runs/{name}", tags=["status"])
    async def one_run(name: str):
        return get(name).describe()

    @app.get("/metrics", tags=["status"])
    async def prometheus():
        """Prometheus text: requests, errors, latency, batch sizes, queue depth, active sessions."""
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- batched routes
    async def submit_all(name: str, kind: str, items: list) -> list:
        b = batcher(name, kind)
        try:
            if len(items) == 1:                              # the common case: no gather task per request
                return [await b.submit(items[0])]
            return list(await asyncio.gather(*(b.submit(i) for i in items)))
        except (GrukitError, QueueFull, HTTPException):
            raise
        except Exception as e:  # noqa: BLE001 - a model call that raised: this request's 500, nobody else's
            raise HTTPException(500, f"the {kind} call failed: {type(e).__name__}: {one_line(e)}") from None

    # the JSON task routes: one handler each, (run name, raw body) -> the answer's JSON, called by
    # guard.Guard below FastAPI's stack (ServeOptions.direct) and by the FastAPI routes that declare them
    async def forecast_json(name: str, raw: bytes) -> dict:
        s = get(name, "forecast")
        body = parse_body(raw, ForecastBody)
        series = _nonempty(body.series, "series")
        ids = body.ids or [None] * len(series)
        if len(ids) != len(series):
            raise HTTPException(422, f"ids has {len(ids)} entries for {len(series)} series")
        items = [{"series": A.parse_series(s, v), "id": i} for v, i in zip(series, ids)]
        return {"forecasts": await submit_all(name, "forecast", items)}

    async def classify_json(name: str, raw: bytes) -> dict:
        s = get(name, "classify")
        body = parse_body(raw, ClassifyBody)
        items = [A.parse_sequence(s, v, f"sequences[{i}]") for i, v in
                 enumerate(_nonempty(body.sequences, "sequences"))]
        return {"predictions": await submit_all(name, "classify", items)}

    async def anomalies_json(name: str, raw: bytes) -> dict:
        s = get(name, "anomalies")
        body = parse_body(raw, AnomalyBody)
        [out] = await submit_all(name, "anomalies", [A.parse_values(s, body.values)])
        return out

    async def score_json(name: str, raw: bytes) -> dict:
        get(name, "score")
        body = parse_body(raw, ScoreBody)
        return {"scores": await submit_all(name, "score", list(_nonempty(body.texts, "texts")))}

    json_routes = {"forecast": forecast_json, "classify": classify_json, "anomalies": anomalies_json,
                   "score": score_json}
    app.add_middleware(Guard, options=opts, metrics=metrics, stream=stream,
                       json_routes=json_routes if opts.direct else None, answer=answer)

    @app.post("/runs/{name}/forecast", tags=["forecast"], openapi_extra=body_doc(ForecastBody))
    async def forecast(name: str, request: Request):
        """Forecast ``horizon`` steps after each series: point and interval bounds (original units)."""
        return JSONResponse(await forecast_json(name, await request.body()))

    @app.post("/runs/{name}/classify", tags=["classify"], openapi_extra=body_doc(ClassifyBody))
    async def classify(name: str, request: Request):
        """Label and class probabilities of each sequence."""
        return JSONResponse(await classify_json(name, await request.body()))

    @app.post("/runs/{name}/anomalies", tags=["autoencoder"], openapi_extra=body_doc(AnomalyBody))
    async def anomalies(name: str, request: Request):
        """Per-step anomaly scores and flags of one series."""
        return JSONResponse(await anomalies_json(name, await request.body()))

    @app.post("/runs/{name}/score", tags=["lm"], openapi_extra=body_doc(ScoreBody))
    async def score(name: str, request: Request):
        """Mean next-token negative log-likelihood (nats per token) of each text."""
        return JSONResponse(await score_json(name, await request.body()))

    @app.post("/runs/{name}/transcribe", tags=["speech"])
    async def transcribe(name: str, file: UploadFile = File(..., description="audio: wav, flac or ogg")):
        """Transcript of an uploaded audio file."""
        s = get(name, "transcribe")
        wave = A.read_wave(s, await file.read(), file.filename or "upload")
        [out] = await submit_all(name, "transcribe", [wave])
        return out

    @app.post("/runs/{name}/generate", tags=["lm", "music"], openapi_extra=body_doc(GenerateBody))
    async def generate(name: str, request: Request):
        """lm: text continuing ``prompt`` (SSE when ``stream``); music: a piano roll and its MIDI file."""
        s = get(name, "generate")
        body = parse_body(await request.body(), GenerateBody)
        if s.task == "music":
            if not 1 <= body.steps <= 10000 or not 1 <= body.n <= 64:
                raise HTTPException(422, f"steps={body.steps}, n={body.n}: expected 1 to 10000 frames and 1 to "
                                         "64 pieces")
            [pieces] = await submit_all(name, "generate", [body.model_dump()])
            return {"pieces": pieces}
        A.check_generation(body.length, body.temperature, body.top_k, body.top_p)
        item = {"prompt": body.prompt, "length": body.length, "temperature": body.temperature,
                "top_k": body.top_k, "top_p": body.top_p, "seed": body.seed, "emit": None, "cancelled": False}
        if not body.stream:
            [text] = await submit_all(name, "generate", [item])
            return {"text": text}
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        item["emit"] = lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p)
        b = batcher(name, "generate")
        done = asyncio.ensure_future(b.submit(item))

        async def events():
            try:
                while True:
                    getter = asyncio.ensure_future(pieces.get())
                    await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield f"data: {json.dumps({'text': getter.result()})}\n\n"
                        continue
                    getter.cancel()
                    while not pieces.empty():
                        yield f"data: {json.dumps({'text': pieces.get_nowait()})}\n\n"
                    try:
                        yield f"event: done\ndata: {json.dumps({'text': done.result()})}\n\n"
                    except Exception as e:  # noqa: BLE001
                        yield f"event: error\ndata: {json.dumps({'detail': one_line(e)})}\n\n"
                    return
            finally:
                item["cancelled"] = True                     # a client that left stops receiving pieces

        # a full queue must answer 503 before the stream starts
        await asyncio.sleep(0)
        if done.done() and done.exception() is not None:
            raise done.exception()
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    def _lm_generate(s: A.Served, items: list[dict]) -> list[str]:
        texts = ["" for _ in items]
        for pieces in A.generate_batch(s, items):
            for i, p in enumerate(pieces):
                if p:
                    texts[i] += p
                    if items[i]["emit"] is not None and not items[i]["cancelled"]:
                        items[i]["emit"](p)
        return texts

    return app


def freeze_heap() -> None:
    """Collect, then freeze every live object (the loaded runs, torch, FastAPI...) out of the cyclic GC.

    Without it each full collection walks the whole start-up heap: 240-480 ms pauses of the whole server every
    few seconds under load (measured: they were all of /classify's p99 tail and every request in flight at
    that moment waited for them). Objects made while serving are still collected as before; the frozen ones
    are freed by reference counting as usual, only never scanned for cycles (Instagram's recipe, gc.freeze).
    """
    import gc
    gc.collect()
    gc.freeze()


def _final_output(session) -> dict:
    import torch
    with torch.no_grad():
        return session.output(final=True)


def _nonempty(items: list, what: str) -> list:
    if not items:
        raise HTTPException(422, f"{what} is empty; send at least one")
    return items


def _version() -> str:
    from .. import __version__
    return __version__
