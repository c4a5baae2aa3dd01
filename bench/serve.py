"""Load generator for ``grukit serve`` on loopback: batching across requests, streaming sessions, generation.

Starts ``grukit serve`` as a separate process on 127.0.0.1 (a free port) for each configuration, drives it
from this process with asyncio clients, and prints one table per section:

* requests/s and p50/p99 latency of /classify for 1 vs 32 concurrent clients, batching on (--max-batch 32)
  vs off (--max-batch 1);
* concurrent real-time speech streams (100 ms chunks sent every 100 ms) held with p99 chunk latency under
  100 ms and at least 90% of their real-time chunks answered ("real time"), sequence batching on (--session-batch 256) vs one GRU step call per session (--session-batch 1);
* generation tokens/s of 1 vs 16 concurrent prompts (same sampling options: one batched step per token).

Everything is bounded: each load phase runs at most ``--seconds`` and ``--max-requests``. Runs are trained
tiny (seconds) into a temporary folder unless ``--runs DIR`` holds ``classify``, ``speech`` and ``lm`` runs.

    python bench/serve.py                       # all sections, ~3-5 minutes on 2 cores
    python bench/serve.py --sections http --seconds 5
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ runs
def train_runs(base: Path, hidden: int) -> dict[str, Path]:
    """A classify, a speech (unidirectional, streaming) and an lm run, trained for one short epoch."""
    import warnings

    import torch
    sys.path.insert(0, str(ROOT / "tests"))
    from test_serve_runs import _classify_npz, _speech_folder, _text  # the tests' tiny data sets

    from grukit.train import fit
    torch.set_num_threads(1)
    base.mkdir(parents=True, exist_ok=True)
    common = dict(progress=False, patience=0, evaluate=False, max_epochs=1)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = str(_classify_npz(base / "c.npz", n=64, T=64, F=8))
        out["classify"] = fit("classify", out=base / "classify", data=data,
                              hidden_size=hidden, batch_size=16, conv_channels=0, gru_steps=0, conv_steps=0,
                              **common).path
        out["speech"] = fit("speech", out=base / "speech", data=str(_speech_folder(base / "rec")), hidden_size=hidden,
                            num_layers=2, conv_channels=32, n_train_utterances=16, n_test_utterances=2, batch_size=8,
                            normalize="global", **common).path
        out["lm"] = fit("lm", out=base / "lm", data=str(_text(base / "t.txt")), tokenize="char", hidden_size=hidden,
                        embedding_size=32, num_layers=1, bptt=32, batch_size=4, **common).path
    return out


# ------------------------------------------------------------------ server process
class Server:
    def __init__(self, runs: list[Path], *args: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1")
        # the server's log goes to a file: a pipe nobody reads fills up (64 KiB: uvicorn logs two lines per
        # WebSocket connection, the speech streams reconnect every 1.6 s) and then blocks the server's event
        # loop in write(), which looked like "handshakes timed out" at a few hundred streams
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "grukit.cli", "serve", *map(str, runs), "--port",
                                      str(self.port), "--max-queue", "4096", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log, text=True)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def __enter__(self) -> "Server":
        import httpx
        t0 = time.time()
        while time.time() - t0 < 120:
            if self.proc.poll() is not None:
                raise RuntimeError("grukit serve exited: " + self.log_tail())
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("grukit serve did not start in 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def run(coro):
    """Run a load generator coroutine on uvloop where it is installed (the serve extra has it): the load
    generator shares the cores with the server, so its cost per message is kept as low as it can be. The
    same loop drives every configuration of a section."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) * 1000 if len(xs) else float("nan")


# ------------------------------------------------------------------ sections
class RawClient:
    """A minimal HTTP/1.1 keep-alive client (one connection): the load generator must cost the server's CPU
    (shared on a small machine) as little as it can, so requests are pre-encoded bytes and responses are read
    by Content-Length, no more."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def post_bytes(path: str, body: dict, port: int) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def http_load(url: str, clients: int, seconds: float, max_requests: int, body: dict) -> dict:
    port = int(url.rsplit(":", 1)[1])
    request = post_bytes("/runs/classify/classify", body, port)
    lat: list[float] = []
    errors = 0
    conns = [RawClient("127.0.0.1", port) for _ in range(clients)]
    for c in conns:                                                      # warm up (and connect)
        await c.post(request)
    stop = time.perf_counter() + seconds

    async def worker(c):
        nonlocal errors
        while time.perf_counter() < stop and len(lat) + errors < max_requests:
            t = time.perf_counter()
            status, _ = await c.post(request)
            if status == 200:
                lat.append(time.perf_counter() - t)
            else:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"req/s": len(lat) / wall, "p50 ms": pct(lat, 50), "p99 ms": pct(lat, 99), "n": len(lat),
            "errors": errors}


def section_http(runs, args) -> list[dict]:
    rng = np.random.default_rng(0)
    body = {"sequences": [rng.normal(size=(64, 8)).round(3).tolist()]}
    rows = []
    for k in range(args.rounds):                       # off, on, off, on...: the machine may be shared
        for label, flags in (("off (--max-batch 1)", ["--max-batch", "1"]),
                             ("on (--max-batch 32 --max-wait-ms 2)", ["--max-batch", "32", "--max-wait-ms", "2"])):
            with Server([runs["classify"]], *flags) as srv:
                for clients in (1, 32):
                    r = run(http_load(srv.url, clients, args.seconds, args.max_requests, body))
                    rows.append({"round": k + 1, "batching": label, "clients": clients, **r,
                                 "load avg": os.getloadavg()[0]})
                    print(rows[-1], flush=True)
    return rows


class StreamClient(asyncio.Protocol):
    """One speech stream on a hand-rolled RFC 6455 client: the load generator shares the 2 cores with the
    server, so a chunk costs it one pre-encoded ``transport.write`` and one frame header parse, with no task,
    future or coroutine per chunk (the ``websockets`` client cost ~0.1-0.15 ms of CPU per chunk, the server
    ~0.35-0.55 ms). Sends ``n_chunks`` chunks, one every 100 ms (the next at ``max(previous + 0.1, now)``:
    real time, never catching up in bursts), each after the previous one's answer, then ``{"end": true}``;
    ``done`` is set when the final answer came (or the stream failed or ran out of time).

    Client frames must be masked; the masking key is drawn once per process and the frames pre-encoded with
    it (a load generator on loopback has no proxy cache to poison, which is what per-frame keys are for)."""

    def __init__(self, loop, host: str, port: int, frame: bytes, end_frame: bytes, n_chunks: int, start: float,
                 stop: float, lat: list, errors: list, persistent: bool = False):
        self.loop, self.frame, self.end_frame, self.n_chunks = loop, frame, end_frame, n_chunks
        self.persistent = persistent      # the next utterance on this connection ({"end": true, "next": true})
        self.start, self.stop, self.lat, self.errors = start, stop, lat, errors
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET /runs/speech/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.buf = bytearray()
        self.open = False                 # handshake answered
        self.sent = 0                     # chunks sent
        self.t = self.nxt = 0.0
        self.transport = None
        self.failed = False
        self.done = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.finish(None if self.done.done() else f"connection lost after {self.sent} chunks: {exc}")

    def finish(self, error: str | None = None) -> None:
        if error is not None and not self.done.done():
            self.errors.append(error[:120])
            self.failed = True
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            head = buf.find(b"\r\n\r\n")
            if head < 0:
                return
            status = bytes(buf[:head]).split(b"\r\n", 1)[0]
            accept = base64.b64encode(hashlib.sha1((self.key + WS_GUID).encode()).digest())
            if b" 101 " not in status + b" " or accept not in buf[:head]:
                return self.finish(f"handshake refused: {status.decode('latin-1')}")
            del buf[:head + 4]
            self.open = True
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[at:at + n])
            del buf[:at + n]
            if opcode == 1:
                self.message(payload)
            elif opcode == 8:
                return self.finish(None if self.done.done() else f"closed by the server: {payload[2:]!r}")
            elif opcode == 9:                                              # ping: answer with a masked pong
                self.transport.write(bytes([0x8A, 0x80 | n]) + bytes(4) + payload)

    def message(self, payload: bytes) -> None:
        now = time.perf_counter()
        if payload.startswith(b'{"final"'):
            if self.persistent and now < self.stop:
                self.sent = 0                                              # the next session's hello is next
                return
            return self.finish()
        if not payload.startswith(b'{"partial"') and not payload.startswith(b'{"session"'):
            return self.finish(f"unexpected answer: {payload[:100]!r}")
        if self.sent:                                                      # the answer to chunk self.sent
            if self.t >= self.start:
                self.lat.append(now - self.t)
            self.nxt = max(self.nxt + 0.1, now)                            # real time: one chunk per 100 ms
        else:
            self.nxt = now
        self.loop.call_later(max(0.0, self.nxt - now), self.send)

    def send(self) -> None:
        """The next chunk, or after the last one (at the time the next chunk would go) the end message."""
        if self.transport.is_closing():
            return
        if self.sent == self.n_chunks:
            self.transport.write(self.end_frame)
            return
        self.t = time.perf_counter()
        if self.t >= self.stop:
            return self.finish()
        self.sent += 1
        self.transport.write(self.frame)


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_FRAME = bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big")     # masked with a zero key


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2), its masking key drawn once per call."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
                                     if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    mask = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


async def speech_load(url: str, streams: int, seconds: float, chunk: bytes, n_chunks: int,
                      warmup: float = 1.0, begin: float | None = None, persistent: bool = False) -> dict:
    """``streams`` clients (:class:`StreamClient`), each sending a 100 ms chunk every 100 ms (real time) for
    ``warmup + seconds``, ending its utterance and opening a new session every ``n_chunks`` chunks: on a new
    connection, or with ``persistent`` on the same one (``{"end": true, "next": true}``).

    Latencies of the first ``warmup`` seconds are not counted: all streams connect within the first 100 ms
    (a burst of handshakes no steady state has); the reconnects every ``n_chunks`` chunks are counted.
    No permessage-deflate (float32 audio does not compress; it cost both sides CPU per chunk).
    ``begin`` (a ``time.time()``): wait until then, so that load-generator processes started together all
    start streaming together, after every one of them has imported its modules."""
    if begin is not None:
        await asyncio.sleep(max(0.0, begin - time.time()))
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: list[str] = []
    host, port = url.split("://", 1)[1].split(":")
    end = b'{"end": true, "next": true}' if persistent else b'{"end": true}'
    frame, end_frame = client_frame(2, chunk), client_frame(1, end)
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def one(k: int):
        await asyncio.sleep(0.1 * k / streams)                           # spread the streams over a period
        while time.perf_counter() < stop:
            c = StreamClient(loop, host, int(port), frame, end_frame, n_chunks, start, stop, lat, errors,
                             persistent)
            try:
                await loop.create_connection(lambda: c, host, int(port))
            except OSError as e:                                         # a refused stream counts as failed
                errors.append(f"{type(e).__name__}: {e}"[:120])
                return
            await c.done
            if c.failed:                                                 # this stream stops; the others go on
                return

    await asyncio.gather(*(one(k) for k in range(streams)))
    return {"lat": lat, "errors": errors}


REAL_TIME = 0.9     # a level is held only if the streams got at least this share of their real-time chunks


def real_time_chunks(streams: int, seconds: float) -> float:
    """Chunks ``streams`` real-time streams have answered in ``seconds``: one per 100 ms (the end message of an
    utterance goes when the next chunk would, and the next utterance's first chunk right after it reconnects)."""
    return streams * seconds * 10


def speech_stats(parts: list[dict], expected: float | None = None) -> dict:
    """Pooled latencies; with ``expected`` (:func:`real_time_chunks`), the share of it answered ("real time":
    below ~90% the streams fell behind, and a p99 over the chunks that did get through flatters the level)."""
    lat = [x for p in parts for x in p["lat"]]
    errors = [e for p in parts for e in p["errors"]]
    share = {"real time": round(len(lat) / expected, 3)} if expected else {}
    return {"p50 ms": pct(lat, 50), "p99 ms": pct(lat, 99), "chunks": len(lat), **share, "failed": len(errors),
            **({"first error": errors[0]} if errors else {})}


def speech_clients(url: str, streams: int, seconds: float, chunk: bytes, n_chunks: int, clients: int,
                   persistent: bool = False) -> dict:
    """The streams split over ``clients`` load-generator processes, latencies pooled. (With the ``websockets``
    client one process could not drive a few hundred streams in real time on 2 cores; :class:`StreamClient`
    costs ~0.06 ms of CPU per chunk, so 2 processes leave it headroom without more processes contending.)"""
    expected = real_time_chunks(streams, seconds)
    if clients <= 1:
        return speech_stats([run(speech_load(url, streams, seconds, chunk, n_chunks, persistent=persistent))],
                            expected)
    # The chunk travels in argv, so every process starts its streams at once. (It used to be sent on stdin
    # with one communicate() per process in turn: each process waited for its stdin before starting, so the
    # processes ran one after another and a level of N streams had N / clients of them open at a time.)
    # Each process writes its latencies to a file (a pipe truncated a few hundred streams' JSON at 64 KiB).
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import serve as B; "
            "r = B.run(B.speech_load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), bytes.fromhex(sys.argv[6]), "
            "int(sys.argv[5]), begin=float(sys.argv[7]), persistent=sys.argv[9] == '1')); "
            "open(sys.argv[8], 'w').write(json.dumps(r))")
    begin = time.time() + 3.0                                    # python + numpy imported by then
    sizes = [streams // clients + (k < streams % clients) for k in range(clients)]
    with tempfile.TemporaryDirectory(prefix="grukit-bench-streams-") as tmp:
        outs = [str(Path(tmp) / f"{k}.json") for k in range(len(sizes))]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(ROOT / "bench"), url, str(n), str(seconds),
                                   str(n_chunks), chunk.hex(), str(begin), out, "1" if persistent else "0"])
                 for n, out in zip(sizes, outs) if n]
        for p in procs:
            if p.wait(timeout=seconds + 120):
                raise RuntimeError(f"a load-generator process exited with {p.returncode}")
        parts = [json.loads(Path(out).read_text()) for n, out in zip(sizes, outs) if n]
    return speech_stats(parts, expected)


def section_speech(runs, args) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_serve_runs import chirp
    wave = np.concatenate([chirp(d % 3, d % 2, d % 7) for d in range(8)])        # ~1.6 s utterance
    chunks = [wave[i:i + 800] for i in range(0, len(wave) - 799, 800)]           # 100 ms at 8 kHz
    chunk = np.asarray(chunks[3], "<f4").tobytes()
    rows = []
    modes = [("one step per session (--session-batch 1)", ["--session-batch", "1"])]
    modes += [(f"sequence batching (--session-batch 256 --session-wait-ms {w:g})",
               ["--session-batch", "256", "--session-wait-ms", f"{w:g}"]) for w in args.session_wait_ms]
    for label, flags in modes:
        with Server([runs["speech"]], *flags) as srv:
            held = 0
            for n in args.streams:
                r = speech_clients(srv.url, n, args.seconds, chunk, len(chunks), args.clients, args.persistent)
                ok = r["p99 ms"] < 100 and not r["failed"] and r["real time"] >= REAL_TIME
                rows.append({"mode": label, "streams": n, **r, "held": ok, "load avg": os.getloadavg()[0]})
                print(rows[-1], flush=True)
                if not ok:
                    break
                held = n
            rows.append({"mode": label, "streams held": held})
    return rows


async def gen_load(url: str, prompts: int, length: int) -> dict:
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        await c.post("/runs/lm/generate", json={"prompt": "the", "length": 8, "temperature": 0.8, "seed": 1})
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(c.post("/runs/lm/generate", json={"prompt": f"the {k}", "length": length,
                                                                       "temperature": 0.8, "seed": 1})
                                    for k in range(prompts)))
        wall = time.perf_counter() - t0
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200][:1]
    return {"tokens/s": prompts * length / wall, "seconds": wall}


def section_generate(runs, args) -> list[dict]:
    rows = []
    with Server([runs["lm"]], "--max-batch", "32", "--max-wait-ms", "20") as srv:
        for prompts in (1, 16, 1, 16):                                    # alternated: the machine is shared
            r = run(gen_load(srv.url, prompts, args.length))
            rows.append({"prompts": prompts, **r})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)          # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=["http", "speech", "generate"],
                    choices=["http", "speech", "generate"])
    ap.add_argument("--runs", type=Path, help="folder with classify/, speech/ and lm/ runs (trained there when "
                    "missing; default: a temporary folder)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the runs trained here")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each load phase")
    ap.add_argument("--max-requests", type=int, default=20000, help="most requests of each HTTP load phase")
    ap.add_argument("--rounds", type=int, default=2, help="HTTP section: rounds of batching off then on")
    ap.add_argument("--streams", type=int, nargs="+", default=[25, 50, 100, 200, 300, 400],
                    help="concurrent speech streams tried, in order, until p99 >= 100 ms")
    ap.add_argument("--clients", type=int, default=2,
                    help="load-generator processes the speech streams are split over (they share the cores)")
    ap.add_argument("--session-wait-ms", type=float, nargs="+", default=[2.0],
                    help="speech: the server's --session-wait-ms with sequence batching, one row set per value "
                    "(a tick waits for company up to this long from its oldest chunk's arrival)")
    ap.add_argument("--persistent", action="store_true",
                    help="speech: each stream keeps one connection and starts its next utterance's session on it "
                    "({\"end\": true, \"next\": true}) instead of reconnecting every utterance")
    ap.add_argument("--length", type=int, default=200, help="tokens per generation")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grukit-bench-serve-") as tmp:
        base = args.runs or Path(tmp)
        have = all((base / k / "run.json").is_file() for k in ("classify", "speech", "lm"))
        runs = {k: base / k for k in ("classify", "speech", "lm")} if have else train_runs(base, args.hidden)
        out = {}
        for sec in args.sections:
            out[sec] = {"http": section_http, "speech": section_speech, "generate": section_generate}[sec](runs, args)
    for sec, rows in out.items():
        print(f"\n## {sec}\n\n{table(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
