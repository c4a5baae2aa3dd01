r"""Speech recognition: causal conv front end, (bi)GRU stack, per-frame CTC outputs; greedy and beam decoding.

Letters: B batch, T feature frames, T' frames after the front end (``ceil(T / stride)``), F features,
C front-end channels, E encoder features (D*H), S+1 output symbols (index 0 is the CTC blank).

::

    audio ──grukit.data.audio──> (T, F) log-mel/MFCC, normalised ──CausalConv──> (T', C) ──GRU──> (T', E)
          ──CTCHead──> (T', S+1) log-probs ──greedy / prefix beam search──> "seven three nine"

Data: a CSV/TSV manifest (path, transcript; ``test_data`` another manifest) or a folder of single-word FSDD-style
files, from which :func:`grukit.data.audio.concat_utterances` builds multi-word utterances (training ones from
the training recordings, test ones only from test recordings). Features are computed once per run.

Streaming (:class:`Streamer`): a unidirectional model runs frame by frame. Samples arrive in chunks, frames come
out of :class:`~grukit.data.audio.StreamingFeatures`, the causal front end keeps its last ``k-1`` inputs and the
GRU advances with :meth:`grukit.nn.GRU.step`; the transcript equals the whole-utterance one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import audio
from ..data.batching import DictDataset, Prepared, loader
from ..data.speech import (audio_inputs, ctc_dataset, feature_spec, featurise, read_kw, run_features, source_options,
                           utterances)
from ..data.text import Vocab
from ..errors import ConfigError, DataError
from .base import SequenceTask, infer, write_predictions
from .heads import CTCHead
from .speech_config import SpeechConfig

__all__ = ["SpeechTask", "Task", "prepare", "evaluate", "predict", "transcribe", "transcribe_files", "Streamer",
           "CausalConv", "greedy_decode", "GreedyStream", "beam_search", "error_rates"]


# ====================================================================== decoding
def greedy_decode(log_probs: Tensor | np.ndarray, blank: int = 0) -> list[int]:
    """Best path of one utterance (T, S+1): argmax per frame, merge repeats, drop blanks."""
    best = torch.as_tensor(log_probs).argmax(-1)
    return [int(i) for i in torch.unique_consecutive(best) if int(i) != blank]


class GreedyStream:
    """:func:`greedy_decode` fed frame by frame (streaming): a frame's best label is kept when it is not blank and
    differs from the previous frame's; ``ids`` is the transcript so far."""
    __slots__ = ("prev", "ids", "blank")

    def __init__(self, blank: int = 0) -> None:
        self.prev, self.ids, self.blank = blank, [], blank

    def feed(self, labels) -> None:
        """Take the best labels (ints) of the next frames."""
        for k in labels:
            if k != self.blank and k != self.prev:
                self.ids.append(k)
            self.prev = k


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def beam_search(log_probs: Tensor | np.ndarray, beam: int = 8, blank: int = 0, prune: float = -12.0
                ) -> list[int]:
    """CTC prefix beam search (Hannun et al. 2014) over one utterance's (T, S+1) log-probabilities.

    Each prefix keeps two scores, ending in blank (``pb``) and in its last symbol (``pnb``); a repeated symbol
    extends the prefix only after a blank. Symbols below ``prune`` (log-prob) at a frame are skipped.
    Returns the most probable label sequence (summed over its alignments), not the best single path.
    """
    lp = np.asarray(torch.as_tensor(log_probs).detach().cpu(), dtype=np.float64)    # (T, S+1)
    ninf = -math.inf
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, ninf)}
    for t in range(lp.shape[0]):
        row = lp[t]
        cands = [int(s) for s in np.flatnonzero(row >= min(prune, row.max())) if s != blank]
        nxt: dict[tuple, list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            e = nxt.setdefault(prefix, [ninf, ninf])
            e[0] = _lse(e[0], total + row[blank])                   # prefix + blank
            last = prefix[-1] if prefix else None
            for s in cands:
                p = row[s]
                if s == last:
                    e[1] = _lse(e[1], pnb + p)                      # repeat collapses into the prefix
                    n = nxt.setdefault(prefix + (s,), [ninf, ninf])
                    n[1] = _lse(n[1], pb + p)                       # a new symbol only after a blank
                else:
                    n = nxt.setdefault(prefix + (s,), [ninf, ninf])
                    n[1] = _lse(n[1], total + p)
        beams = dict(sorted(((k, (v[0], v[1])) for k, v in nxt.items()),
                            key=lambda kv: -_lse(*kv[1]))[:beam])
    return list(max(beams.items(), key=lambda kv: _lse(*kv[1]))[0])


def error_rates(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Corpus WER and CER (jiwer), as fractions."""
    import jiwer
    refs = [r if r.strip() else "<empty>" for r in refs]
    return {"WER": float(jiwer.wer(refs, hyps)), "CER": float(jiwer.cer(refs, hyps)), "n": float(len(refs))}


# ====================================================================== front end
class CausalConv(nn.Module):
    """Causal 1-D convolutions over time (the first one strided), GELU after each; streams chunk by chunk.

    Output frame j of a layer with kernel k and stride s reads input frames ``j*s-k+1 .. j*s`` (zeros before
    the start), so it never looks ahead: ``T' = ceil(T / s)``.
    """

    def __init__(self, in_size: int, channels: int, layers: int = 2, stride: int = 2, kernel: int = 5):
        super().__init__()
        self.kernel = kernel
        self.strides = [stride] + [1] * (layers - 1)
        self.convs = nn.ModuleList(nn.Conv1d(in_size if i == 0 else channels, channels, kernel, stride=s)
                                   for i, s in enumerate(self.strides))

    def out_lengths(self, lengths: Tensor) -> Tensor:
        for s in self.strides:
            lengths = torch.div(lengths + s - 1, s, rounding_mode="floor")
        return lengths

    def forward(self, x: Tensor) -> Tensor:
        y = x.transpose(1, 2)                                                   # (B, T, F) -> (B, F, T)
        for conv in self.convs:
            y = F.gelu(conv(F.pad(y, (self.kernel - 1, 0))))                    # (B, C, ceil(T/s))
        return y.transpose(1, 2)                                                # (B, T', C)

    def initial_state(self, batch: int, like: Tensor) -> list[tuple[Tensor, int]]:
        """Per layer: the last k-1 inputs (zeros at the start) and how many inputs it has seen."""
        return [(like.new_zeros(batch, conv.in_channels, self.kernel - 1), 0) for conv in self.convs]

    def stream(self, x: Tensor, state: list[tuple[Tensor, int]]) -> tuple[Tensor, list[tuple[Tensor, int]]]:
        """Frames ``x`` (B, n, F) -> the outputs they complete (B, n', C) and the new state."""
        y, new = x.transpose(1, 2), []                                          # (B, F, n)
        for conv, s, (tail, seen) in zip(self.convs, self.strides, state):
            n = y.shape[2]
            full = torch.cat([tail, y], dim=2)                                  # (B, F, k-1+n): inputs seen-k+1..
            first = -(-seen // s) * s - seen                                    # offset of the next output's end
            avail = full.shape[2] - first - self.kernel
            out = (F.gelu(conv(full[:, :, first:])) if avail >= 0
                   else full.new_zeros(full.shape[0], conv.out_channels, 0))    # (B, C, n')
            new.append((full[:, :, full.shape[2] - (self.kernel - 1):], seen + n))
            y = out
        return y.transpose(1, 2), new                                           # (B, n', C)

    def batch_state(self, batch: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """:meth:`stream_padded`'s state for ``batch`` streams at their start: per layer the last k-1 inputs
        ``(B, C, k-1)`` (zeros) and the inputs each stream has seen ``(B,)`` (int64)."""
        return [(like.new_zeros(batch, conv.in_channels, self.kernel - 1), torch.zeros(batch, dtype=torch.long))
                for conv in self.convs]

    def stream_padded(self, x: Tensor, lengths: Tensor, state: list[tuple[Tensor, Tensor]]
                      ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """:meth:`stream` for many streams at once, each with its own frame count and stride phase: ``x``
        (B, N, F) right-padded, ``lengths`` (B,) int64 and the batched ``state`` (:meth:`batch_state`) -> the
        outputs (B, N', C) right-padded, their lengths, and the new state; row i as ``stream(x[i, :n_i][None],
        its state)`` gives them. A serving tick keeps every session's state as a row of one tensor
        (:class:`grukit.serve.slots.Slots`) and calls this once for all its sessions.

        One strided convolution per layer: each stream's inputs are first shifted left by its phase (the
        offset of its next output's first input: one gather, only when the phases differ: a stream whose
        first chunk gave an odd frame count is in the other phase of a stride-2 layer from then on), so that
        every stream's outputs start at 0. The outputs a stream keeps end within its own frames (padding
        changes nothing); its new state is gathered at its own length."""
        k = self.kernel
        y, n, new = x.transpose(1, 2), lengths, []                              # (B, F, N)
        for conv, s, (tail, seen) in zip(self.convs, self.strides, state):
            full = torch.cat([tail, y], dim=2)                                  # (B, F, k-1+N)
            W = full.shape[2]
            if int(n.min()) == W - (k - 1):                                     # no padding: a slice
                new.append((full[:, :, W - (k - 1):], seen + n))
            else:
                at = (n[:, None] + torch.arange(k - 1)[None])[:, None].expand(-1, full.shape[1], -1)
                new.append((full.gather(2, at), seen + n))
            first = -torch.div(-seen, s, rounding_mode="floor") * s - seen      # each stream's phase
            f0 = int(first.min()) if len(first) else 0
            if bool((first == f0).all()):
                z = full[:, :, f0:]
            else:                                                               # each row from its own phase
                at = (first[:, None] + torch.arange(W - f0)[None]).clamp(max=W - 1)
                z = full.gather(2, at[:, None].expand(-1, full.shape[1], -1))
            y = (F.gelu(conv(z)) if z.shape[2] >= k else full.new_zeros(full.shape[0], conv.out_channels, 0))
            n = torch.clamp(torch.div(n - first - 1, s, rounding_mode="floor") + 1, min=0)   # outputs kept
        return y.transpose(1, 2), n, new


# ====================================================================== model
class SpeechTask(SequenceTask):
    """Front end + GRU + :class:`~grukit.tasks.heads.CTCHead`; WER and CER on validation."""

    task_name = "speech"

    def build_encoder(self):
        c, n_in = self.config, int(self.meta["input_size"])
        self.frontend = (CausalConv(n_in, c.conv_channels, c.conv_layers, c.conv_stride)
                         if c.conv_channels > 0 else None)
        return super().build_encoder(c.conv_channels if self.frontend is not None else n_in)

    def build_head(self):
        self.vocab = Vocab.from_symbols(self.meta["symbols"], self.meta["units"])
        return CTCHead(self.encoder_size, len(self.vocab.symbols), blank=0, dropout=self.config.head_dropout)

    def build_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.text import CharErrorRate, WordErrorRate
        return MetricCollection({"wer": WordErrorRate(), "cer": CharErrorRate()})

    def batch_to_inputs(self, batch):
        c = self.config
        if self.training and c.specaugment:
            batch = dict(batch, x=audio.spec_augment(batch["x"], batch.get("lengths"), freq_width=c.freq_mask,
                                                     time_width=c.time_mask))
        return batch, batch.get("y")

    def out_lengths(self, lengths: Tensor) -> Tensor:
        return self.frontend.out_lengths(lengths) if self.frontend is not None else lengths

    def encode(self, inputs, state=None):
        x, lengths = inputs["x"], inputs.get("lengths")                         # (B, T, F), (B,)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        if self.frontend is not None:
            x = self.frontend(x)                                                # (B, T', C)
        inputs["out_lengths"] = self.out_lengths(lengths)
        return self.encoder(x, state, lengths=inputs["out_lengths"])            # (B, T', E), (L*D, B, H)

    def loss(self, log_probs, target, inputs):
        return F.ctc_loss(log_probs.transpose(0, 1), target, inputs["out_lengths"],  # (T', B, S+1)
                          inputs["target_lengths"], blank=0, reduction="mean", zero_infinity=True)

    def transcripts(self, log_probs: Tensor, lengths: Tensor, decoder: str = "greedy") -> list[str]:
        out = []
        for b in range(log_probs.shape[0]):
            lp = log_probs[b, : int(lengths[b])]                                # (T'_b, S+1)
            ids = greedy_decode(lp) if decoder == "greedy" else beam_search(lp, self.config.beam_size)
            out.append(self.vocab.text_of(ids))
        return out

    def metric_inputs(self, log_probs, target, inputs):
        hyps = self.transcripts(log_probs, inputs["out_lengths"])
        refs = [self.vocab.text_of(target[b, : int(inputs["target_lengths"][b])].tolist())
                for b in range(target.shape[0])]
        return hyps, refs

    def decode(self, log_probs, inputs):
        """What :func:`~grukit.tasks.base.infer` combines over an ensemble (mean): the posteriors (B, T', S+1)
        in float64 (so their mean is the ensemble's posterior, ``log`` of it exact to float32) and the valid
        output frames per utterance (B,)."""
        return {"probs": log_probs.double().exp(), "lengths": inputs["out_lengths"].double()}


Task = SpeechTask


# ====================================================================== data
def prepare(cfg: SpeechConfig) -> Prepared:
    utts, name, rate = utterances(cfg, "train")
    spec = feature_spec(cfg, rate)
    feats = featurise(utts, spec, cfg)
    texts = [Vocab.clean(u.text) for u in utts]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(utts))
    n_val = int(round(cfg.val_fraction * len(utts)))
    val, train = order[:n_val].tolist(), order[n_val:].tolist()
    vocab = Vocab.of_labels([texts[i] for i in train], cfg.units)
    _check_alignable(utts, feats, texts, vocab, cfg, name)
    cat = np.concatenate([feats[i] for i in train])                         # (sum T, F)
    mean, std = cat.mean(0), np.maximum(cat.std(0), 1e-5)
    norm = audio.normalise(feats, cfg.normalize, mean, std)
    meta = {"input_size": spec.size, "features": spec.to_dict(), "feature_mean": mean.tolist(),
            "feature_std": std.tolist(), "symbols": vocab.symbols, "units": cfg.units, "data_name": name,
            "has_val": bool(val), "n_train": len(train), "n_val": len(val),
            "max_frames": int(max(len(f) for f in feats))}
    tr = ctc_dataset([norm[i] for i in train], [texts[i] for i in train], vocab)
    va = ctc_dataset([norm[i] for i in val], [texts[i] for i in val], vocab) if val else None
    return Prepared(loader(tr, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(va, cfg.batch_size, False, cfg.num_workers) if va else None, meta)


def _check_alignable(utts, feats, texts, vocab, cfg, name) -> None:
    """CTC needs at least as many output frames as symbols (plus one blank between repeats)."""
    stride = cfg.conv_stride if cfg.conv_channels > 0 else 1
    short = []
    for u, f, t in zip(utts, feats, texts):
        ids = vocab.labels(t)
        need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if -(-len(f) // stride) < need:
            short.append(u.path)
    if len(short) > 0.02 * len(utts):
        raise DataError(f"{len(short)} of {len(utts)} utterances are too short for their transcripts after "
                        f"the front end's stride {stride} (CTC needs a frame per symbol), e.g. {short[0]}; "
                        "lower --conv-stride or --hop-ms, or use --units word", path=name)


def _log_probs(models, feats: list[np.ndarray], batch_size: int = 32) -> list[Tensor]:
    """Per utterance (T'_i, S+1) log-probabilities, batched in length order through
    :func:`~grukit.tasks.base.infer` (an ensemble: the log of the members' mean posterior)."""
    order = np.argsort([len(f) for f in feats])
    out: list[Tensor | None] = [None] * len(feats)
    ds = DictDataset(x=[feats[i] for i in order], lengths=np.array([len(feats[i]) for i in order]))
    k = 0
    for res in infer(models, loader(ds, batch_size, False)):
        for b in range(res["probs"].shape[0]):
            out[int(order[k])] = res["probs"][b, : int(res["lengths"][b])].log().float()   # (T'_b, S+1)
            k += 1
    return out  # type: ignore[return-value]


def _transcribe_all(models, feats, decoder: str) -> list[str]:
    m = models[0] if not isinstance(models, SequenceTask) else models
    dec = (lambda lp: greedy_decode(lp)) if decoder == "greedy" else (
        lambda lp: beam_search(lp, m.config.beam_size))
    return [m.vocab.text_of(dec(lp)) for lp in _log_probs(models, feats)]


def transcribe(models, meta: dict, waves: list[np.ndarray], sample_rate: int, *,
               decoder: str | None = None) -> list[str]:
    """THE speech inference entry point: the transcript of each wave (float samples in [-1, 1] at
    ``sample_rate`` Hz, resampled to the model's rate when they differ), decoded greedily or by beam search
    (``decoder``, default the run's). Waves are featurised and normalised as in training and run in length-
    sorted batches through :func:`~grukit.tasks.base.infer` (an ensemble averages its posteriors)."""
    members = [models] if isinstance(models, SequenceTask) else list(models)
    if not members:
        raise ConfigError("transcribe() needs at least one model")
    cfg = members[0].config
    decoder = decoder or cfg.decoder
    if decoder not in ("greedy", "beam"):
        raise ConfigError(f"decoder={decoder!r}: expected greedy or beam")
    spec = audio.FeatureSpec.from_dict(meta["features"])
    feats = []
    for i, w in enumerate(waves):
        x = np.asarray(w, dtype=np.float32)
        if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
            raise DataError(f"wave {i}: expected a non-empty 1-D array of finite samples, got shape "
                            f"{tuple(x.shape)}")
        feats.append(audio.features(audio.resample_to(x, int(sample_rate), spec.rate), spec))
    norm = audio.normalise(feats, cfg.normalize, meta["feature_mean"], meta["feature_std"])
    return _transcribe_all(members, norm, decoder)


# ====================================================================== use a trained run
def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """WER and CER of greedy and beam decoding on the held-out utterances."""
    cfg = run.config
    if data is None and not cfg.test_data and not audio.has_split(cfg.data, source_options(cfg)):
        raise DataError("no test data: train with --test-data MANIFEST or pass `grukit evaluate RUN --data "
                        "MANIFEST`", path=cfg.data)
    utts, name, _ = utterances(cfg, "test", data, rate=run.meta["features"]["rate"])
    feats = run_features(run.meta, cfg, utts)
    refs = [Vocab.clean(u.text) for u in utts]
    table, hyps = {}, {}
    for decoder in ("greedy", "beam"):
        t0 = time.perf_counter()
        hyps[decoder] = _transcribe_all(models, feats, decoder)
        table[f"grukit_{decoder}"] = dict(error_rates(hyps[decoder], refs),
                                          seconds=round(time.perf_counter() - t0, 2))
    import pandas as pd
    write_predictions(pd.DataFrame({"utterance": [u.path for u in utts], "reference": refs,
                                    "greedy": hyps["greedy"]}), run.path / "test_transcripts.csv")
    return table


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Transcripts of an audio file, folder or manifest, as CSV (with the reference when it is known)."""
    import pandas as pd
    if not data:
        raise DataError("pass --data AUDIO_FILE, FOLDER or MANIFEST to transcribe", path=run.path)
    utts = audio_inputs(data, run.config)
    hyps = _transcribe_all(models, run_features(run.meta, run.config, utts), run.config.decoder)
    frame = pd.DataFrame({"path": [u.path for u in utts], "transcript": hyps})
    if any(u.text for u in utts):
        frame["reference"] = [u.text for u in utts]
    return [write_predictions(frame, Path(out) if out else run.path / "predictions.csv")]


# ====================================================================== streaming
class Streamer:
    """Frame-by-frame transcription of one utterance with a unidirectional model.

    ``push(samples)`` feeds a chunk of audio (at the model's rate) and returns the partial transcript;
    ``finish()`` flushes the last frames and returns the final one (beam search over the stored posteriors
    when ``decoder="beam"``). ``log_probs()`` gives every frame's output so far, (T', S+1).
    """

    def __init__(self, model: SpeechTask, decoder: str | None = None):
        if model.config.bidirectional:
            raise ConfigError("streaming needs a unidirectional model; this run was trained with "
                              "--bidirectional (transcribe without --stream, or retrain with "
                              "--no-bidirectional)")
        if model.config.normalize == "utterance":
            raise ConfigError("streaming needs normalize=global or none; this run normalises per utterance, "
                              "which needs the whole utterance (transcribe without --stream)")
        self.model = model.eval()
        self.spec = audio.FeatureSpec.from_dict(model.meta["features"])
        self.feats = audio.StreamingFeatures(self.spec)
        self.mean = torch.tensor(model.meta["feature_mean"], dtype=torch.float32)
        self.std = torch.tensor(model.meta["feature_std"], dtype=torch.float32)
        self.decoder = decoder or model.config.decoder
        self.h: Tensor | None = None
        self.conv = None
        self.best, self.outputs = GreedyStream(), []

    def _frames(self, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)                # one frame's tiny ops: thread start-up would dominate
        try:
            self._run(frames)
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _run(self, frames: np.ndarray) -> None:
        x = torch.from_numpy(frames).float()                                    # (n, F)
        if self.model.config.normalize == "global":
            x = (x - self.mean) / self.std
        x = x.unsqueeze(0)                                                      # (1, n, F)
        m = self.model
        if m.frontend is not None:
            if self.conv is None:
                self.conv = m.frontend.initial_state(1, x)
            x, self.conv = m.frontend.stream(x, self.conv)                      # (1, n', C)
        for t in range(x.shape[1]):
            y, self.h = m.encoder.step(x[:, t], self.h)                         # (1, H), (L, 1, H)
            lp = m.head(y)[0]                                                   # (S+1,)
            self.outputs.append(lp)
            self.best.feed((int(lp.argmax()),))

    def push(self, samples: np.ndarray) -> str:
        self._frames(self.feats.push(samples))
        return self.model.vocab.text_of(self.best.ids)

    def finish(self) -> str:
        self._frames(self.feats.finish())
        if self.decoder == "beam" and self.outputs:
            return self.model.vocab.text_of(beam_search(self.log_probs(), self.model.config.beam_size))
        return self.model.vocab.text_of(self.best.ids)

    def log_probs(self) -> Tensor:
        return torch.stack(self.outputs) if self.outputs else torch.zeros(0, len(self.model.vocab.symbols) + 1)


def transcribe_files(run, files: list[str | Path], *, stream: bool = False, chunk_ms: float = 100.0,
                     decoder: str | None = None, on_partial=None) -> list[dict[str, Any]]:
    """Transcribe audio files with a trained run: ``[{path, text, seconds, audio_seconds, rtf}, ...]``.

    ``stream=True`` reads each file in ``chunk_ms`` chunks through :class:`Streamer` and calls
    ``on_partial(path, text)`` whenever the partial transcript changes. The real-time factor ``rtf`` is
    processing time over audio duration (below 1 is faster than real time).
    """
    from ..runs import Run
    run = run if not isinstance(run, (str, Path)) else Run(run)
    if run.task != "speech":
        raise ConfigError(f"{run.path} is a {run.task!r} run; transcribe needs a speech run")
    model = run.models()[0]
    spec = audio.FeatureSpec.from_dict(run.meta["features"])
    kw = read_kw(run.config)
    warm = np.zeros(spec.rate // 5, np.float32)                 # 0.2 s of silence: kernels compile/load before
    if stream:                                                  # the clock starts, so rtf is the steady state
        Streamer(model, "greedy").push(warm)
    else:
        _transcribe_all([model], [audio.features(warm, spec)], "greedy")
    results = []
    for f in files:
        samples, rate = audio.read_audio(f, spec.rate, **kw)
        dur = len(samples) / rate
        t0 = time.perf_counter()
        if stream:
            s = Streamer(model, decoder)
            step, last = max(1, int(rate * chunk_ms / 1000)), ""
            for i in range(0, len(samples), step):
                part = s.push(samples[i: i + step])
                if on_partial is not None and part != last:
                    on_partial(str(f), part)
                last = part
            text = s.finish()
        else:
            text = transcribe([model], run.meta, [samples], rate, decoder=decoder)[0]
        sec = time.perf_counter() - t0
        results.append({"path": str(f), "text": text, "seconds": sec, "audio_seconds": dur, "rtf": sec / dur})
    return results
