"""A small Python client for ``grukit serve`` (httpx for HTTP, websockets for streaming sessions).

    from grukit.client import Client
    c = Client("http://127.0.0.1:8000", token=None)
    c.runs()                                             # what the server serves
    c.forecast("forecast", [[112, 118, 132, ...]])       # [{"point": [[...]], "lo": ..., "hi": ...}]
    c.classify("classify", [seq])                        # [{"label": ..., "probabilities": {...}}]
    for piece in c.generate("lm", "ROMEO:", length=200, stream=True):
        print(piece, end="")
    c.transcribe("speech", "clip.wav")                   # {"text": ..., "seconds": ...}
    with c.stream("speech") as s:                        # a streaming session
        for chunk in chunks:
            print(s.send(chunk)["text"])                 # partial transcript
        print(s.end()["text"])                           # final transcript

Errors the server answers (4xx/5xx) raise :class:`ServerError` with its status and one-line message.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import GrukitError

__all__ = ["Client", "ServerError", "StreamSession"]


class ServerError(GrukitError):
    """The server answered an error status; ``status`` and the server's one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class Client:
    """Talks to one ``grukit serve`` at ``url`` (``token``: its bearer token, if it has one)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0):
        import httpx
        self.url = url.rstrip("/")
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, r):
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServerError(r.status_code, str(detail))
        return r

    def _post(self, path: str, **kw) -> Any:
        return self._check(self.http.post(path, **kw)).json()

    # ---- status
    def health(self) -> dict:
        return self._check(self.http.get("/health")).json()

    def runs(self) -> list[dict]:
        return self._check(self.http.get("/runs")).json()

    def metrics(self) -> str:
        return self._check(self.http.get("/metrics")).text

    # ---- tasks
    def forecast(self, run: str, series: list, ids: list[str] | None = None) -> list[dict]:
        body = {"series": [np.asarray(s).tolist() for s in series]}
        if ids is not None:
            body["ids"] = list(ids)
        return self._post(f"/runs/{run}/forecast", json=body)["forecasts"]

    def classify(self, run: str, sequences: list) -> list[dict]:
        return self._post(f"/runs/{run}/classify",
                          json={"sequences": [np.asarray(s).tolist() for s in sequences]})["predictions"]

    def anomalies(self, run: str, values) -> dict:
        return self._post(f"/runs/{run}/anomalies", json={"values": np.asarray(values).tolist()})

    def score(self, run: str, texts: list[str]) -> list[dict]:
        return self._post(f"/runs/{run}/score", json={"texts": list(texts)})["scores"]

    def transcribe(self, run: str, audio: str | Path | bytes, filename: str = "audio.wav") -> dict:
        if not isinstance(audio, (bytes, bytearray)):
            filename, audio = Path(audio).name, Path(audio).read_bytes()
        return self._post(f"/runs/{run}/transcribe", files={"file": (filename, bytes(audio))})

    def music(self, run: str, steps: int = 64, temperature: float = 1.0, seed: int | None = None,
              n: int = 1) -> list[dict]:
        """``n`` pieces: each ``notes`` [[frame, key], ...], ``frames``, ``keys`` and ``midi_base64``."""
        return self._post(f"/runs/{run}/generate", json={"steps": steps, "temperature": temperature,
                                                          "seed": seed, "n": n})["pieces"]

    def generate(self, run: str, prompt: str = "", length: int = 200, temperature: float = 1.0,
                 seed: int | None = None, top_k: int = 0, top_p: float = 1.0, stream: bool = False):
        """Text continuing ``prompt``: the whole string, or (``stream=True``) an iterator of pieces as the
        server produces them (Server-Sent Events)."""
        body = {"prompt": prompt, "length": length, "temperature": temperature, "seed": seed, "top_k": top_k,
                "top_p": top_p, "stream": stream}
        if not stream:
            return self._post(f"/runs/{run}/generate", json=body)["text"]
        return self._pieces(run, body)

    def _pieces(self, run: str, body: dict) -> Iterator[str]:
        with self.http.stream("POST", f"/runs/{run}/generate", json=body) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "error":
                        raise ServerError(500, data["detail"])
                    if event is None:
                        yield data["text"]
                elif not line:
                    event = None

    def stream(self, run: str) -> "StreamSession":
        """A streaming session on ``run`` (speech: audio chunks; classify/autoencoder: feature frames)."""
        return StreamSession(self, run)


class StreamSession:
    """A WebSocket session: ``send(chunk)`` returns the partial output, ``end()`` the final one."""

    def __init__(self, client: Client, run: str):
        import contextlib

        from websockets.sync.client import connect
        url = client.url.replace("http", "ws", 1) + f"/runs/{run}/stream"
        # entered as a context manager (websockets 17 deprecates a bare connect()), left in close()
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, additional_headers=client.headers,
                                                    compression=None))          # audio: no deflate
        hello = json.loads(self.ws.recv())
        if "error" in hello:
            self.close()
            raise ServerError(422, hello["error"])
        self.id = hello["session"]

    def send(self, chunk) -> dict:
        """Audio samples (1-D, the run's sample rate) or frames (n, F); returns the partial output."""
        self.ws.send(np.asarray(chunk, dtype="<f4").tobytes())
        reply = json.loads(self.ws.recv())
        if "error" in reply:
            raise ServerError(422, reply["error"])
        return reply["partial"]

    def end(self, next: bool = False) -> dict:
        """The final output. ``next=True``: the connection stays open and a new session starts on it (a fresh
        state, a new ``id``) for the next utterance, without a new connection."""
        self.ws.send(json.dumps({"end": True, "next": True} if next else {"end": True}))
        reply = json.loads(self.ws.recv())
        if next and "error" not in reply:
            self.id = json.loads(self.ws.recv())["session"]                    # the next session's hello
        elif not next:
            self.close()
        if "error" in reply:
            raise ServerError(422, reply["error"])
        return reply["final"]

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
