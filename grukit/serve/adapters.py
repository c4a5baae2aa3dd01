"""What the server calls for each task: input checking and one batched call into the task's inference code.

The server never holds a copy of a task's inference code: each adapter turns request bodies into the arguments
of the task's one inference entry point and its answer back into JSON. Where a task module does not have its
entry point yet (``forecast_series``, ``classify_sequences``, ``language.generate(models, meta, prompts, ...)``,
``music.generate(models, meta, n, ...)``, ``speech.transcribe(models, meta, waves, rate)``,
``autoencoder.anomaly_scores``), the adapter calls what the module offers today (its public helpers and
:func:`grukit.tasks.base.infer`); these stop-gaps are marked ``STOPGAP`` and switch to the entry point as
soon as the module has it (checked with ``hasattr`` at call time, so nothing here changes when it lands).

Every ``parse_*`` raises :class:`grukit.errors.DataError` / :class:`~grukit.errors.ShapeError` with one line
naming the problem; the app answers those with 422.
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
    """A forecast history: (T,) or (T, C) in original units, at least ``lookback`` long."""
    a = _array(value, "series", (1, 2))
    a = a[:, None] if a.ndim == 1 else a
    C, L = int(s.meta["n_targets"]), s.config.lookback
    if a.shape[1] != C:
        raise ShapeError(f"series has {a.shape[1]} target column(s); this run forecasts {C} "
                         f"({', '.join(s.meta['roles']['target'])})")
    if len(a) < L:
        raise DataError(f"series has {len(a)} points; the model reads lookback = {L}")
    if s.meta["transform"] == "log" and (a <= 0).any():
        raise DataError("series has values <= 0; this run models log values (trained on positive data)")
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
def forecast_batch(s: Served, series: list[np.ndarray]) -> list[dict]:
    mod = s.module
    if hasattr(mod, "forecast_series"):
        out = mod.forecast_series(s.models, s.meta, s.config, series)
    else:
        out = _forecast_stopgap(s, series)
    return [{k: np.asarray(v).tolist() for k, v in o.items()} for o in out]


def _forecast_stopgap(s: Served, series: list[np.ndarray]) -> list[dict]:
    """STOPGAP until ``forecast.forecast_series``: runs without covariates, each series scaled by its own
    history (as ``predict`` does for a series the run has not seen), one :func:`infer` call for all."""
    import torch
    from ..tasks.base import infer
    meta, cfg = s.meta, s.config
    if meta["n_known"] or meta["roles"].get("past"):
        raise DataError("this run uses covariates; serving them waits for forecast.forecast_series")
    L, tr = cfg.lookback, meta["transform"]
    fwd = {"log": np.log, "sqrt": np.sqrt}.get(tr, lambda v: v)
    inv = {"log": lambda v: np.exp(np.clip(v, -50, 50)), "sqrt": lambda v: np.square(np.clip(v, 0, None))
           }.get(tr, lambda v: v)
    zs, scales = [], []
    for y in series:
        t = fwd(y)
        mean, std = t.mean(0), t.std(0)
        std = np.where(std > 1e-8, std, 1.0)
        zs.append(((t[-L:] - mean) / std).astype(np.float32))
        scales.append((mean, std))
    z = torch.from_numpy(np.stack(zs))                                              # (N, L, C)
    batch = {"x": z, "window": z, "known_future": torch.zeros(len(zs), cfg.horizon, 0), "y": None}
    [dec] = infer(s.models, [batch])
    out = []
    for i, (mean, std) in enumerate(scales):
        out.append({k: inv(v[i].numpy() * std + mean) for k, v in dec.items()})
    return out


def classify_batch(s: Served, seqs: list[np.ndarray]) -> list[dict]:
    mod = s.module
    if hasattr(mod, "classify_sequences"):
        probs = np.asarray(mod.classify_sequences(s.models, s.meta, seqs))
    else:
        probs = _classify_stopgap(s, seqs)
    classes = s.meta["classes"]
    return [{"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p)))}
            for p in probs]


def _classify_stopgap(s: Served, seqs: list[np.ndarray]) -> np.ndarray:
    """STOPGAP until ``classify.classify_sequences``: normalise, pad, one :func:`infer` call."""
    from ..data.batching import DictDataset, loader
    from ..tasks.base import infer
    mean = np.asarray(s.meta["feature_mean"], np.float32)
    std = np.asarray(s.meta["feature_std"], np.float32)
    norm = [((q - mean) / std).astype(np.float32) for q in seqs]
    ds = DictDataset(x=norm, lengths=np.array([len(q) for q in norm]), y=np.zeros(len(norm), np.int64))
    return np.concatenate([p.numpy() for p in infer(s.models, loader(ds, 256, False))])


def anomaly_batch(s: Served, values: list[np.ndarray]) -> list[dict]:
    mod = s.module
    out = []
    for v in values:
        if hasattr(mod, "anomaly_scores"):
            scores, flags = mod.anomaly_scores(s.models, s.meta, s.config, v)
            thr = None
        else:                                                            # STOPGAP until anomaly_scores
            scores, _ = mod.step_scores(s.models, v, s.meta, s.config)
            thr = threshold(s, scores)
            flags = scores > thr
        out.append({"scores": np.asarray(scores).tolist(), "flags": np.asarray(flags).astype(bool).tolist(),
                    "threshold": thr})
    return out


def threshold(s: Served, scores: np.ndarray) -> float:
    """The run's flag threshold: run.json, else metrics.json, else the configured percentile of ``scores``."""
    thr = s.run.info.get("threshold")
    if thr is None:
        m = s.run.path / "metrics.json"
        if m.is_file():
            thr = json.loads(m.read_text()).get("grukit", {}).get("threshold")
    return float(thr) if thr is not None else float(np.percentile(scores, s.config.percentile))


def transcribe_batch(s: Served, waves: list[np.ndarray]) -> list[dict]:
    mod, rate = s.module, int(s.meta["features"]["rate"])
    if hasattr(mod, "transcribe") and "meta" in _params(mod.transcribe):
        texts = mod.transcribe(s.models, s.meta, waves, rate)
    else:                                                                # STOPGAP: features + infer
        from ..data import audio
        from ..data.batching import DictDataset, loader
        from ..tasks.base import infer
        spec = audio.FeatureSpec.from_dict(s.meta["features"])
        feats = audio.normalise([audio.features(w, spec) for w in waves], s.config.normalize,
                                s.meta["feature_mean"], s.meta["feature_std"])
        ds = DictDataset(x=feats, lengths=np.array([len(f) for f in feats]))
        texts = [t for batch in infer(s.models[:1], loader(ds, 32, False)) for t in batch]
    return [{"text": t, "seconds": len(w) / rate} for t, w in zip(texts, waves)]


def music_batch(s: Served, requests: list[dict]) -> list[dict]:
    """Each request ``{"steps", "temperature", "seed"}`` -> a piano roll, its MIDI bytes (base64)."""
    mod = s.module
    out = []
    for r in requests:
        if hasattr(mod, "generate") and "meta" in _params(mod.generate):
            [roll] = mod.generate(s.models, s.meta, 1, r["steps"], r["temperature"], r["seed"])
        else:                                                            # STOPGAP: the model's own sampler
            roll = s.models[0].sample(r["steps"], None, r["temperature"], r["seed"])
        out.append(roll_answer(s, np.asarray(roll)))
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
    mod = s.module
    if not hasattr(mod, "score"):
        raise ConfigError("scoring text waits for grukit.tasks.language.score; this grukit has none yet")
    out = mod.score(s.models, s.meta, texts)
    return [o if isinstance(o, dict) else {"score": float(o)} for o in out]


def _params(fn) -> list[str]:
    import inspect
    return list(inspect.signature(fn).parameters)


# ====================================================================== generation (LM)
def check_generation(length, temperature, seed) -> tuple[int, float, int]:
    if not isinstance(length, int) or not 1 <= length <= 10000:
        raise DataError(f"length={length!r}: expected a whole number of tokens from 1 to 10000")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise DataError(f"temperature={temperature!r}: expected a number >= 0 (0 = the most likely token)")
    if not isinstance(seed, int):
        raise DataError(f"seed={seed!r}: expected a whole number")
    return length, float(temperature), seed


def generate_batch(s: Served, requests: list[dict]) -> Iterator[list[str | None]]:
    """Decode every request together: per step a list with each request's new text (None once it is done).

    Each request ``{"prompt", "length", "temperature", "seed"}`` draws from its own generator, so its text is
    the same whichever requests share its batch. STOPGAP until ``language.generate(models, meta, prompts,
    ...)``: primes each prompt with the model's own ``encode`` and then advances all rows with one batched
    ``GRU.step`` per token.
    """
    import torch
    from ..data.text import Vocab
    m = s.models[0]
    vocab = Vocab.from_dict(s.meta["vocab"])
    with torch.no_grad():
        hs, logits = [], []
        for r in requests:
            ids = torch.tensor([prompt_ids(r["prompt"], vocab)], dtype=torch.int64)
            seq, h = m.encode({"x": ids})                                   # (1, P, H), (L, 1, H)
            hs.append(h)
            logits.append(m.logits(seq[:, -1]))
        h, lg = torch.cat(hs, 1), torch.cat(logits, 0)                       # (L, B, H), (B, V)
        gens = [torch.Generator().manual_seed(int(r["seed"])) for r in requests]
        decoders = [vocab.decoder() for _ in requests]
        longest = max(r["length"] for r in requests)
        for step in range(longest):
            toks, pieces = [], []
            for b, r in enumerate(requests):
                t = r["temperature"]
                if t == 0:
                    tok = int(lg[b].argmax())
                else:
                    tok = int(torch.multinomial(torch.softmax(lg[b].double() / t, -1), 1, generator=gens[b]))
                toks.append(tok)
                if step < r["length"]:
                    piece = decoders[b]([tok])
                    if step == r["length"] - 1:
                        piece += decoders[b]([], True)
                    pieces.append(piece)
                else:
                    pieces.append(None)
            yield pieces
            if step + 1 < longest:
                y, h = m.encoder.step(m.embedding(torch.tensor(toks)), h)    # (B, H), (L, B, H): one step
                lg = m.logits(y)                                             # (B, V)


def prompt_ids(prompt: str, vocab) -> list[int]:
    """Token ids of a prompt (what ``grukit generate`` primes with): bytes, words after a boundary, chars."""
    from ..data.text import EOS, tokenize
    if vocab.kind == "byte":
        return list(prompt.encode("utf-8")) or [10]
    if vocab.kind == "word":
        ids = vocab.encode(tokenize(prompt, "word")[:-1] if prompt.strip() else []).tolist()
        return ([vocab.stoi[EOS]] if EOS in vocab.stoi else [0]) + ids
    return vocab.encode(list(prompt)).tolist() or [vocab.stoi.get("\n", 0)]
