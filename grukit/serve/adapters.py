"""What the server calls for each task: input checks and one batched call into the task's entry point.

The server holds no copy of a task's inference code: each adapter turns request bodies into the arguments of
the task's one inference entry point (``forecast.forecast_series``, ``classify.classify_sequences``,
``autoencoder.anomaly_scores``, ``language.generate`` / ``score``, ``music.generate``,
``speech.transcribe``) and its answer back into JSON. Streaming sessions (:mod:`grukit.serve.sessions`)
drive the model's own modules (front end, ``GRU.step``, head, ``readout``/``decode``) frame by frame.

Every ``parse_*`` raises :class:`grukit.errors.DataError` / :class:`~grukit.errors.ShapeError` with one line
naming the problem; the app answers those (and the entry points' own) with 422.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from ..tasks.language import check_sampling

__all__ = ["Served", "load_served", "parse_series", "parse_sequence", "parse_values", "ROUTES"]

# task -> the batched request kinds it serves (path /runs/{name}/{kind})
ROUTES = {"forecast": ["forecast"], "classify": ["classify"], "autoencoder": ["anomalies"],
          "lm": ["generate", "score"], "music": ["generate"], "speech": ["transcribe"]}


@dataclass
class Served:
    """A run loaded once at start: its name, :class:`grukit.runs.Run`, models and task module."""
    name: str
    run: Any
    models: list
    module: Any
    extra: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.run.task

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def config(self):
        return self.run.config

    def describe(self) -> dict:
        metrics_file = self.run.path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        return {"name": self.name, "task": self.task, "path": str(self.run.path), "routes": ROUTES[self.task],
                "streaming": streamable(self), "ensemble": len(self.models), "config": self.config.to_dict(),
                "metrics": metrics, "inputs": input_info(self)}


def load_served(path: str | Path, name: str | None = None) -> Served:
    """Open a run directory (safetensors + JSON only, through :mod:`grukit.runs`) and load its models once."""
    from ..runs import open_run
    run = open_run(path)
    if run.task not in ROUTES:
        raise ConfigError(f"{run.path}: task {run.task!r} cannot be served; grukit serve serves "
                          f"{', '.join(ROUTES)}")
    models = run.models()
    return Served(name or Path(path).resolve().name, run, models, run.module())


def streamable(s: Served) -> bool:
    """A run can stream frames when its GRU is unidirectional and its readout works on a growing sequence."""
    if s.task not in ("speech", "classify", "autoencoder"):
        return False
    if not all(getattr(m, "streamable", True) for m in s.models):   # each member says (classify: no conv
        return False                                                 # front end, no first difference...)
    if s.task == "speech" and len(s.models) > 1:              # its offline posteriors average the members
        return False
    return not s.config.bidirectional and (s.task != "speech" or s.config.normalize != "utterance")


def input_info(s: Served) -> dict:
    m, c = s.meta, s.config
    if s.task == "forecast":
        return {"targets": m["roles"]["target"], "lookback": c.lookback, "horizon": c.horizon}
    if s.task in ("classify", "autoencoder"):
        info = {"features": int(m["input_size"])}
        if s.task == "classify":
            info["classes"] = m["classes"]
        else:
            info["window"] = c.window
        return info
    if s.task == "speech":
        return {"sample_rate": int(m["features"]["rate"])}
    if s.task == "music":
        return {"keys": int(m["input_size"]), "frame_seconds": float(m.get("frame_seconds", 0.25)),
                "low_pitch": int(c.low_pitch)}
    return {"tokenize": m.get("tokenize"), "vocab_size": int(m["vocab_size"])}


# ====================================================================== input checks (422 on failure)
def _array(value, what: str, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be numbers (a list{' of lists' if 2 in ndim else ''}); got "
                        f"{type(value).__name__}") from None
    if a.ndim not in ndim:
        raise ShapeError(f"{what} must be {' or '.join(f'{d}-D' for d in ndim)}; got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0].tolist()
        raise DataError(f"{what} has a missing or non-finite value at index {bad}")
    return a


def parse_series(s: Served, value) -> np.ndarray:
    """A forecast history: (T,) or (T, C) in original units (``forecast_series`` checks the rest)."""
    a = _array(value, "series", (1, 2))
    a = a[:, None] if a.ndim == 1 else a
    C = int(s.meta["n_targets"])
    if a.shape[1] != C:
        raise ShapeError(f"series has {a.shape[1]} target column(s); this run forecasts {C} "
                         f"({', '.join(s.meta['roles']['target'])})")
    if len(a) == 0:
        raise DataError("series is empty; send at least one value")
    return a


def parse_sequence(s: Served, value, what: str = "sequence") -> np.ndarray:
    """A (T, F) feature sequence (a 1-D list is (T, 1)) with the run's F features."""
    a = _array(value, what, (1, 2))
    a = a[:, None] if a.ndim == 1 else a
    F = int(s.meta["input_size"])
    if a.shape[1] != F:
        raise ShapeError(f"{what} has {a.shape[1]} feature(s) per step; this run reads {F}")
    if len(a) == 0:
        raise DataError(f"{what} is empty")
    return a.astype(np.float32)


def parse_values(s: Served, value) -> np.ndarray:
    a = parse_sequence(s, value, "values")
    if len(a) < s.config.window:
        raise DataError(f"values has {len(a)} rows; the model reads windows of {s.config.window}")
    return a


def read_wave(s: Served, data: bytes, filename: str = "upload") -> np.ndarray:
    """Decode uploaded audio bytes (wav, flac, ogg) at the run's sample rate."""
    import tempfile
    from ..data import audio
    rate = int(s.meta["features"]["rate"])
    suffix = Path(filename).suffix or ".wav"
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        try:
            samples, _ = audio.read_audio(f.name, rate, resample=True, clip_fraction=1.0)
        except DataError as e:                                           # name the upload, not the temp file
            raise DataError(str(e).replace(f.name, filename)) from None
        except Exception as e:  # noqa: BLE001 - soundfile/librosa raise many kinds on foreign bytes
            raise DataError(f"{filename}: not readable audio ({type(e).__name__}: {str(e)[:120]})") from None
    if len(samples) == 0:
        raise DataError(f"{filename}: no audio samples")
    return samples


# ====================================================================== batched calls (one per batch)
def forecast_batch(s: Served, items: list[dict]) -> list[dict]:
    """Items ``{"series": (T, C), "id": str | None}`` -> ``forecast.forecast_series`` in one call."""
    ids = [i["id"] for i in items]
    out = s.module.forecast_series(s.models, s.meta, s.config, [i["series"] for i in items],
                                   ids=ids if any(x is not None for x in ids) else None)
    return [{k: np.asarray(v).tolist() for k, v in o.items()} for o in out]


def classify_batch(s: Served, seqs: list[np.ndarray]) -> list[dict]:
    """``classify.classify_sequences`` of every sequence in one call."""
    probs = np.asarray(s.module.classify_sequences(s.models, s.meta, seqs))
    classes = s.meta["classes"]
    return [{"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p)))}
            for p in probs]


def anomaly_batch(s: Served, values: list[np.ndarray]) -> list[dict]:
    """``autoencoder.anomaly_scores`` per series, with the run's threshold (run.json, as ``grukit predict``)."""
    out = []
    thr = s.run.info.get("threshold", s.meta.get("threshold"))
    for v in values:
        scores, flags = s.module.anomaly_scores(s.models, s.meta, s.config, v, threshold=thr)
        used = float(thr) if thr is not None else float(np.percentile(scores, s.config.percentile))
        out.append({"scores": np.asarray(scores).tolist(), "flags": np.asarray(flags).astype(bool).tolist(),
                    "threshold": used})
    return out


def transcribe_batch(s: Served, waves: list[np.ndarray]) -> list[dict]:
    """``speech.transcribe`` of every wave in one call."""
    rate = int(s.meta["features"]["rate"])
    texts = s.module.transcribe(s.models, s.meta, waves, rate)
    return [{"text": t, "seconds": len(w) / rate} for t, w in zip(texts, waves)]


def music_batch(s: Served, requests: list[dict]) -> list[dict]:
    """Each request ``{"steps", "temperature", "seed", "n"}`` -> ``music.generate`` (its ``n`` pieces advanced
    together), each piece a piano roll and its MIDI bytes (base64)."""
    out = []
    for r in requests:
        rolls = s.module.generate(s.models, s.meta, r.get("n", 1), r["steps"], r["temperature"], r["seed"])
        out.append([roll_answer(s, np.asarray(roll)) for roll in rolls])
    return out


def roll_answer(s: Served, roll: np.ndarray) -> dict:
    from ..data.music import roll_to_midi
    fsec = float(s.meta.get("frame_seconds", 0.25))
    buf = io.BytesIO()
    roll_to_midi(roll, fsec, int(s.config.low_pitch), frames_per_beat=int(s.meta.get("frames_per_beat", 4))
                 ).write(buf)
    notes = [[int(t), int(p)] for t, p in zip(*np.nonzero(roll))]
    return {"frames": int(roll.shape[0]), "keys": int(roll.shape[1]), "low_pitch": int(s.config.low_pitch),
            "frame_seconds": fsec, "notes": notes, "midi_base64": base64.b64encode(buf.getvalue()).decode()}


def score_batch(s: Served, texts: list[str]) -> list[dict]:
    out = s.module.score(s.models, s.meta, texts)
    return [o if isinstance(o, dict) else {"score": float(o)} for o in out]


# ====================================================================== generation (LM)
MAX_GENERATION = 10000                    # tokens one request may ask for (a serving limit, not the model's)


def check_generation(length, temperature, top_k, top_p) -> None:
    """The generation options of one request: a length the server grants, then the task's own checks."""
    if not isinstance(length, int) or not 1 <= length <= MAX_GENERATION:
        raise DataError(f"length={length!r}: expected a whole number of tokens from 1 to {MAX_GENERATION}")
    check_sampling(length, temperature, top_k, top_p)


def generate_batch(s: Served, requests: list[dict]) -> Iterator[list[str | None]]:
    """Decode requests together with ``language.generate``: per step a list with each request's new text
    (None once it has its ``length``).

    Requests that share sampling options (temperature, top_k, top_p, seed) are one ``generate`` call, so one
    batched ``GRU.step`` per token advances all of them; the call's length is the longest request's. The
    entry point draws every prompt's tokens from one generator seeded with ``seed``: a seeded request alone
    gives exactly ``grukit generate``'s text, in company its draws depend on the batch (greedy decoding,
    temperature 0, never does).
    """
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r["temperature"], r.get("top_k", 0), r.get("top_p", 1.0), r["seed"]), []).append(i)
    for (temperature, top_k, top_p, seed), idx in groups.items():
        length = max(requests[i]["length"] for i in idx)
        steps = s.module.generate(s.models, s.meta, [requests[i]["prompt"] for i in idx], length, temperature,
                                  seed, top_k=top_k, top_p=top_p)
        for step, pieces in enumerate(steps):
            row: list[str | None] = [None] * len(requests)
            for i, p in zip(idx, pieces):
                if step < requests[i]["length"]:
                    row[i] = p
            yield row
