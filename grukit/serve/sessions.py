"""Stateful streaming sessions: the server keeps each stream's GRU state and batches streams, not requests.

Triton's sequence batcher and sherpa-onnx's streaming server, for a GRU: a WebSocket connection opens a
:class:`Session` on a run and sends chunks (audio for a speech run, feature frames for a classify or
autoencoder run with a unidirectional GRU). The connection only turns its chunk into GRU input frames and
enqueues the session; :class:`SessionBatcher` takes every ready session (up to ``max_batch``) as soon as the
previous tick is done (continuous batching) and advances all of them together in one GRU forward call over
the tick's frames (sessions that have just started from a zero state; equal to one batched ``GRU.step`` per
time step), then hands each session its partial output. Sessions whose chunk gave fewer frames end early
(the call's ``lengths``). Short ticks run on the event loop thread, long ones on the run's worker thread
(:class:`SessionBatcher`). Each session's recurrent state is a row of the run's batched state
(:class:`~grukit.serve.slots.Slots`), gathered and written back with one index per tensor.

Outputs equal the offline ones for the same input (tests/test_serve_stream.py): speech keeps the causal front
end's state per session and decodes greedily frame by frame; classify / autoencoder keep the session's
encoder outputs and apply the model's own ``readout`` and ``decode`` to them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConfigError, DataError, ShapeError
from ..nn import frozen_weights
from ..tasks.speech import GreedyStream, beam_search
from .adapters import Served, streamable
from .batcher import average, on_worker, take, worker_idle
from .slots import Slots

__all__ = ["Session", "SessionBatcher", "advance"]

_ids = itertools.count(1)

INLINE_TICK = 0.02      # seconds: ticks shorter than this (moving average) run on the event loop thread


class Session:
    """One stream: its row of the run's batched recurrent state (:class:`~grukit.serve.slots.Slots`: the GRU
    state of each ensemble member, the speech front end's last inputs) and its task state."""

    def __init__(self, served: Served):
        c = served.extra.get("session")
        if c is None:                     # what every session of the run shares, made once (a new session
            c = served.extra["session"] = _shared(served)      # per utterance: its set-up is per connection)
        self.id = next(_ids)
        self.served = served
        self.task = served.task                             # read per chunk: a plain attribute
        self.model = served.models[0]
        self.members = served.models if served.task != "speech" else served.models[:1]
        self.slots: Slots = c["slots"]
        self.slot, self._release = self.slots.alloc(self)       # zero state; freed by release() or GC
        self.pending: Any = None                            # the chunk waiting for the next tick
        self.final = False
        self.future: asyncio.Future | None = None
        self.ready_at = 0.0                                 # when its pending chunk was queued
        self.frames = 0
        self.closed = False
        self.mean, self.std = c["mean"], c["std"]          # shared, never written
        if served.task == "speech":
            from ..data import audio
            self.spec = c["spec"]
            self.feats = audio.StreamingFeatures(self.spec)
            self.best, self.log_probs = GreedyStream(), []
            self.text, self.text_ids = "", 0                 # the transcript of best.ids[:text_ids]
        else:
            self.xs: list[torch.Tensor] = []
            self.ys: list[list[torch.Tensor]] = [[] for _ in self.members]

    # ---- turning a chunk into GRU input frames (on the run's worker thread)
    def features(self, chunk: np.ndarray | None, final: bool = False) -> torch.Tensor:
        """Audio samples (speech: streaming features, normalised) or (n, F) frames (normalised) -> (n, F)."""
        if self.task == "speech":
            feats = self.feats.finish() if final else self.feats.push(chunk)
            x = torch.from_numpy(np.asarray(feats, np.float32))                 # (n, F)
            return (x - self.mean) / self.std if self.served.config.normalize == "global" else x
        if chunk is None or len(chunk) == 0:
            return torch.zeros(0, int(self.served.meta["input_size"]))
        x = (torch.from_numpy(np.asarray(chunk, np.float32)) - self.mean) / self.std
        self.xs.append(x)
        return x

    @property
    def hs(self) -> list[torch.Tensor | None]:
        """Each ensemble member's GRU state (L, 1, H), a view of its row (None before any GRU ran)."""
        return [self.slots.gru_row(k, self.slot) for k in range(len(self.members))]

    @property
    def h(self) -> torch.Tensor | None:
        """The first member's GRU state (L, 1, H)."""
        return self.slots.gru_row(0, self.slot)

    def release(self) -> None:
        """Give the session's row back to the run's slots (once; later calls do nothing)."""
        self._release()

    def take(self, y: torch.Tensor | list, log_probs: torch.Tensor | None = None,
             labels: list[int] | None = None) -> None:
        """The top layer's outputs (n, H) of this tick's frames, one per ensemble member (speech: one, its
        head's log-probs and, when the tick has them, their best labels)."""
        ys = y if isinstance(y, list) else [y]
        y = ys[0]
        n = y.shape[0]
        self.frames += n
        if self.task == "speech":
            if n == 0:
                return
            lp = self.model.head(y) if log_probs is None else log_probs          # (n, S+1)
            self.log_probs.append(lp)
            self.best.feed(lp.argmax(-1).tolist() if labels is None else labels)
        else:
            for k, yk in enumerate(ys):
                self.ys[k].append(yk)

    def output(self, final: bool = False) -> dict:
        """The partial (or final) output for everything received so far (call it without autograd)."""
        s, m = self.served, self.model
        if self.task == "speech":
            if final and m.config.decoder == "beam" and self.log_probs:
                text = m.vocab.text_of(beam_search(torch.cat(self.log_probs), m.config.beam_size))
            else:                                                    # as transcribe() writes it
                if len(self.best.ids) != self.text_ids:              # decoded again only when it grew
                    self.text, self.text_ids = m.vocab.text_of(self.best.ids), len(self.best.ids)
                text = self.text
            return {"text": text, "frames": self.frames}
        if not self.frames:
            return {"frames": 0}
        from ..tasks.base import combine
        x = torch.cat(self.xs)[None]                                            # (1, T, F)
        inputs = {"x": x, "lengths": torch.tensor([x.shape[1]])}
        outs = []
        for member, ys, h in zip(self.members, self.ys, self.hs):               # an ensemble: every member
            seq = torch.cat(ys)[None]                                           # (1, T, H)
            outs.append(member.decode(member.readout(seq, h, inputs), inputs))
        out = combine(outs, m.ensemble_rule)
        if s.task == "classify":
            p = out[0].tolist()
            classes = s.meta["classes"]
            return {"frames": self.frames, "label": classes[int(np.argmax(p))],
                    "probabilities": dict(zip(classes, p))}
        return {"frames": self.frames, "errors": out[0].tolist()}                # autoencoder: per-step error


def _shared(served: Served) -> dict:
    """A run's streaming constants (normalisation, feature spec), or ConfigError when it cannot stream."""
    if not streamable(served):
        why = ("its GRU is bidirectional" if getattr(served.config, "bidirectional", False) else
               "it normalises per utterance" if served.task == "speech" and
               served.config.normalize == "utterance" else
               "it is an ensemble (offline transcripts average the members' posteriors)"
               if served.task == "speech" else
               "its model needs the whole sequence (a convolutional branch, pooling in time or "
               "per-series scaling)" if served.task == "classify" else
               f"{served.task} runs have no frame-by-frame output")
        raise ConfigError(f"run {served.name!r} cannot stream: {why}")
    m = served.meta
    if served.task == "speech":
        from ..data import audio
        return {"slots": Slots(), "spec": audio.FeatureSpec.from_dict(m["features"]),
                "mean": torch.tensor(m["feature_mean"], dtype=torch.float32),
                "std": torch.tensor(m["feature_std"], dtype=torch.float32)}
    key = ("feature_mean", "feature_std") if served.task == "classify" else ("mean", "std")
    mean = torch.tensor(m[key[0]], dtype=torch.float32)
    std = torch.tensor(m[key[1]], dtype=torch.float32)
    if m.get("normalize") == "none":                                   # classify trained on raw features
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    return {"slots": Slots(), "mean": mean, "std": std}


def pad_rows(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rows of ``x`` (total, F), ``counts[i]`` of them for sequence i in order -> (B, N, F) right-padded with
    zeros: a view when every count is the same, else one indexed write."""
    B, N = len(counts), max(counts, default=0)
    if B and min(counts) == N:
        return x.view(B, N, x.shape[1])
    out = x.new_zeros(B, N, x.shape[1])
    c = np.asarray(counts)
    rows = np.repeat(np.arange(B), c)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(c) - c, c)
    out[torch.from_numpy(rows), torch.from_numpy(cols)] = x
    return out


@torch.no_grad()
def batch_features(sessions: list[Session]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every session's pending chunk -> its normalised frames, as ``Session.features`` gives them one by one,
    as one right-padded batch (B, N, F) and each session's frame count (B,); speech: the chunks' frames of all
    sessions (final ones: the end of their signal) in one vectorised FFT + mel call and one normalisation (the
    per-chunk numpy/torch overhead was most of a tick at a few hundred sessions)."""
    s0 = sessions[0]
    if s0.served.task != "speech":
        feats = [s.features(s.pending, s.final) for s in sessions]
        counts = [len(f) for f in feats]
        return pad_rows(torch.cat(feats), counts), torch.tensor(counts)
    from ..data import audio
    none = np.zeros(0, np.float32)                          # a session without a chunk: no new samples
    x, counts = audio.StreamingFeatures.push_many(
        [s.feats for s in sessions], [None if s.final else none if s.pending is None else s.pending
                                      for s in sessions], joined=True)
    x = torch.from_numpy(x.astype(np.float32, copy=False))
    if s0.served.config.normalize == "global":
        x = (x - s0.mean) / s0.std
    return pad_rows(x, counts.tolist()), torch.from_numpy(counts.astype(np.int64))


@torch.no_grad()
def front_end(sessions: list[Session], x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speech: every session's feature frames (``x`` (B, N, F) right-padded, ``lengths`` (B,)) through the
    causal front end -> its outputs (B, N', C) right-padded and their lengths, the state in the sessions' rows
    of the run's :class:`~grukit.serve.slots.Slots` (gathered once per layer, written back once); other
    tasks: the frames unchanged.

    All sessions, whatever their frame counts and stride phases, are one strided convolution per layer
    (``CausalConv.stream_padded``)."""
    m = sessions[0].model
    if sessions[0].served.task != "speech" or m.frontend is None:
        return x, lengths
    fe = m.frontend
    slots = sessions[0].slots
    rows = torch.tensor([s.slot for s in sessions])
    bufs = [slots.conv(k, conv.in_channels, fe.kernel, x) for k, conv in enumerate(fe.convs)]
    state = [(tail.index_select(0, rows), seen.index_select(0, rows)) for tail, seen in bufs]
    y, n, new = fe.stream_padded(x, lengths, state)
    for (tail, seen), (t, sn) in zip(bufs, new):
        tail.index_copy_(0, rows, t)
        seen.index_copy_(0, rows, sn)
    return y, n


@torch.no_grad()
def advance(encoder, sessions: list[Session], inputs, member: int = 0):
    """Advance every session through its input frames, all of them in one ``GRU`` forward call.

    ``inputs``: a list of each session's (n_i, I) frames (returns each one's top-layer outputs (n_i, H)), or
    ``(x, lengths)``, the frames right-padded (B, N, I) and their counts (B,) (returns the outputs (B, N, H),
    rows past a session's count unspecified). Updates the sessions' rows of ensemble member ``member``'s state
    in the run's slots (gathered with one index, written back with one). A session's row is zero until it has
    frames (a new session starts from zeros); sessions with fewer frames end early (the forward's ``lengths``:
    its ``h_n`` is each one's state at its own last frame); sessions with none keep their state.
    One forward over the tick's few frames equals the batched ``GRU.step`` per time step it replaces (the same
    kernels; tested) and costs half as much on a small tick (the per-call overhead, paid once, not per step).
    """
    spec = encoder.spec
    if isinstance(inputs, list):                             # one tensor per session
        counts = [len(v) for v in inputs]
        x = pad_rows(torch.cat(inputs), counts) if inputs else torch.zeros(0, 0, spec.input_size)
        Y = advance(encoder, sessions, (x, torch.tensor(counts)), member)
        return [Y[i, :c] for i, c in enumerate(counts)]
    x, lengths = inputs
    B, T = x.shape[0], x.shape[1]
    rows = torch.tensor([s.slot for s in sessions])
    live = lengths > 0
    if not bool(live.all()):                                 # sessions without frames: no outputs, same state
        out = x.new_zeros(B, T, spec.hidden_size)
        keep = live.nonzero()[:, 0]
        if len(keep):
            out[keep] = advance(encoder, [sessions[i] for i in keep.tolist()],
                                (x[keep], lengths[keep]), member)
        return out
    buf = sessions[0].slots.gru(member, spec.num_layers, spec.hidden_size, encoder.weight_ih_l0)   # (L, S, H)
    X = x if spec.batch_first else x.transpose(0, 1)
    Y, h = encoder(X, buf.index_select(1, rows), lengths=None if int(lengths.min()) == T else lengths)
    buf.index_copy_(1, rows, h)
    return Y if spec.batch_first else Y.transpose(0, 1)                                            # (B, T, H)


class SessionBatcher:
    """The tick loop over a run's ready sessions (see the module docstring).

    A tick runs on the event loop thread itself while the run's worker thread is idle and recent ticks took
    under ``INLINE_TICK`` (20 ms), on the worker otherwise (a long tick, or an HTTP batch of the run computing:
    the run's model is used by one thread at a time). Under the GIL the event loop could not run Python during
    a worker's tick anyway, and every torch / numpy call of the tick released the GIL to the event loop, which
    kept it for up to the interpreter's 5 ms switch interval before the tick went on: at 250 streams the slow
    ticks took ~3x their CPU time (p99 35 ms of wall clock for 12 ms of CPU), with a hand-off between threads per
    tick on top. Inline, the server spent ~10% less CPU per chunk and the chunks' p99 at 280 streams fell from
    53-75 to 21-31 ms (docs/serving.md)."""

    def __init__(self, served: Served, executor: concurrent.futures.Executor, *, max_batch: int = 256,
                 max_wait_ms: float = 2.0, on_batch: Callable[[int], None] | None = None):
        self.served, self.executor = served, executor
        self.max_batch, self.max_wait = max(1, int(max_batch)), max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self.ready: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sessions: dict[int, Session] = {}
        self.tick_time: float | None = None        # moving average of tick durations (seconds)

    def open(self) -> Session:
        s = Session(self.served)
        self.sessions[s.id] = s
        return s

    def close(self, s: Session) -> None:
        """Forget ``s``; its row of state goes back to the slots now, or, while its chunk is queued or in a
        tick, after that tick (a row freed under a running tick could be given to a new session and then
        overwritten by the tick's write-back)."""
        s.closed = True
        self.sessions.pop(s.id, None)
        if s.future is None or s.future.done():
            s.release()

    async def push(self, s: Session, chunk: Any, final: bool = False) -> dict:
        """Queue a chunk of ``s`` and await its partial (``final``: flush and the final) output."""
        if self.ready is None or self.loop is not asyncio.get_running_loop():
            self.loop = asyncio.get_running_loop()           # first use, or the app runs in a new event loop
            self.ready = asyncio.Queue()
            self.task = self.loop.create_task(self._loop())
        loop = asyncio.get_running_loop()
        s.pending, s.final = chunk, final
        s.future = loop.create_future()
        s.ready_at = time.perf_counter()
        self.ready.put_nowait(s)
        return await s.future

    async def _loop(self) -> None:
        q = self.ready
        while True:
            batch = []
            for s in await self._gather(q):
                if s.closed:
                    s.release()
                else:
                    batch.append(s)
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                if self.executor is None or (worker_idle(self.executor) and self.tick_time is not None
                                             and self.tick_time < INLINE_TICK):
                    outs = self._tick(batch)                 # on the event loop thread (class docstring)
                else:
                    outs = await on_worker(self.executor, self._tick, batch)
                for s, o in zip(batch, outs):
                    if not s.future.done():
                        s.future.set_result(o)
            except Exception as e:  # noqa: BLE001 - a failed tick fails its sessions, never the loop
                for s in batch:
                    if not s.future.done():
                        s.future.set_exception(e)
            for s in batch:
                if s.closed:                                 # closed while in the tick (close())
                    s.release()
            self.tick_time = average(self.tick_time, time.perf_counter() - t0)

    async def _gather(self, q: asyncio.Queue) -> list[Session]:
        """The next tick's sessions: every ready one (up to ``max_batch``, in arrival order) once the worker
        is free and the oldest ready chunk has waited ``max_wait`` (counted from its arrival, so chunks that
        queued during the previous tick go at once). Unlike requests, a stream's chunks come at a fixed pace
        with a latency budget far above ``max_wait``: a short wait gathers more sessions into each tick,
        and a tick's fixed cost (~1 ms of Python per tick, ~0.1 ms per session) is paid fewer times."""
        first = await q.get()
        batch = [first] + take(q, self.max_batch - 1)
        if len(batch) < self.max_batch:
            left = first.ready_at + self.max_wait - time.perf_counter()
            if left > 0:
                await asyncio.sleep(left)
                batch += take(q, self.max_batch - len(batch))
        return batch

    @torch.no_grad()
    def _tick(self, batch: list[Session]) -> list[dict]:
        """One tick: every session's chunk to GRU inputs, one batched step per time step, outputs."""
        m = batch[0].model
        x, lengths = batch_features(batch)
        # weights checked once per tick, not per frame; the encoders only (their GRUs are all the tick steps):
        # walking the whole task model (its metrics included) cost ~7% of the server's GIL time per tick
        with batch[0].slots.busy, frozen_weights(*(mk.encoder for mk in batch[0].members)):
            x, lengths = front_end(batch, x, lengths)
            per_member = [advance(mk.encoder, batch, (x, lengths), k) for k, mk in enumerate(batch[0].members)]
        if self.on_batch:
            self.on_batch(len(batch))
        sizes = lengths.tolist()
        lps: list = [None] * len(batch)
        labels: list = [None] * len(batch)
        if self.served.task == "speech" and any(sizes):
            lp = m.head(per_member[0])                                          # one head call for all frames
            best = lp.argmax(-1).tolist()                                       # and one argmax
            lps = [lp[i, :n] for i, n in enumerate(sizes)]
            labels = [b[:n] for b, n in zip(best, sizes)]
        outs = []
        for i, (s, lp, n) in enumerate(zip(batch, lps, sizes)):
            s.take([Y[i, :n] for Y in per_member], lp, labels[i])
            s.pending = None
            outs.append(s.output(final=s.final))
        return outs

    async def drain(self, timeout: float = 10.0) -> None:
        end = time.perf_counter() + timeout
        while self.ready is not None and self.ready.qsize() and time.perf_counter() < end:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()


def parse_chunk(served: Served, message: dict | bytes) -> tuple[Any, bool]:
    """A WebSocket message -> (chunk, final). Binary: float32 little-endian samples (speech) or frames;
    JSON: ``{"audio": [...]}``, ``{"frames": [[...], ...]}`` and/or ``{"end": true}``."""
    F = None if served.task == "speech" else int(served.meta["input_size"])
    if isinstance(message, (bytes, bytearray)):
        if len(message) % 4:
            raise DataError(f"binary chunk of {len(message)} bytes is not float32 samples (a multiple of 4)")
        a = np.frombuffer(bytes(message), dtype="<f4").astype(np.float32)
        if F is not None:
            if a.size % F:
                raise ShapeError(f"binary chunk of {a.size} floats is not whole frames of {F} features")
            a = a.reshape(-1, F)
        return _finite(a), False
    if not isinstance(message, dict):
        raise DataError("a text message must be a JSON object such as {\"frames\": [[...]]} or {\"end\": true}")
    final = bool(message.get("end", False))
    key = "audio" if served.task == "speech" else "frames"
    if key not in message:
        if final:
            return None, True
        raise DataError(f"the message has no {key!r} (a {served.task} stream sends {key}) and no \"end\"")
    try:
        a = np.asarray(message[key], dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{key} must be a list of numbers") from None
    if served.task == "speech":
        if a.ndim != 1:
            raise ShapeError(f"audio must be a 1-D list of samples; got shape {a.shape}")
    else:
        a = a[:, None] if a.ndim == 1 and F == 1 else a
        if a.ndim != 2 or a.shape[1] != F:
            raise ShapeError(f"frames must be (n, {F}) for this run; got shape {a.shape}")
    return _finite(a), final


def _finite(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise DataError(f"the chunk has a non-finite value at index {np.argwhere(~np.isfinite(a))[0].tolist()}")
    return a
