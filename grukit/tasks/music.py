r"""Polyphonic music: a GRU over piano-roll frames, trained with teacher forcing.

The model of Chung et al. 2014: frame :math:`v_t \in \{0,1\}^P` (P = 88 piano keys by default) is predicted
from the state after reading :math:`v_{<t}` (the input at step t is :math:`v_{t-1}`, zeros at t = 0)::

    output=bernoulli   p(v_t | v_<t) = prod_k Bernoulli(v_tk; sigmoid(W h_t + b)_k)             (Chung et al.)
    output=nade        p(v_t | v_<t) = prod_k p(v_tk | v_t,<k, h_t), a NADE whose biases come from h_t
                       (RNN-NADE, Boulanger-Lewandowski et al. 2012, with a GRU)

Metrics (``evaluate``): the negative log-likelihood per time step, :math:`-\frac{1}{\sum_i T_i}\sum_i\sum_t
\log p(v_t | v_{<t})` in nats (for the Bernoulli output: the sum of the P per-pitch Bernoulli NLLs of a frame,
averaged over frames), and the frame-level accuracy of Bay et al. 2009, :math:`\sum_t TP_t / \sum_t (TP_t +
FP_t + FN_t)` with each frame predicted from the true past (notes with probability > 0.5; greedy note by
note for NADE). Letters: B batch, T frames, P pitches, E GRU features, N frames flattened, K NADE units.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batching import Prepared
from ..data.music import (MusicSource, RollSpec, eval_batches, piece_loader, read_rolls, split_indices,
                          write_midi)
from ..errors import ConfigError, DataError
from ..nn import frozen_weights
from ..plots import roll_png
from .base import SequenceTask, infer, write_predictions
from .heads import BernoulliHead, NADEHead, draw_notes, length_mask
from .music_config import MusicConfig

__all__ = ["MusicTask", "NADEHead", "BernoulliHead", "frame_nll", "frame_accuracy", "prepare", "evaluate",
           "predict", "generate", "generate_run", "split_pieces", "PAPER"]

# Chung et al. 2014, Table 2: test NLL per time step (GRU, LSTM), about 20K parameters each
PAPER = {"jsb_chorales": (8.54, 8.67), "nottingham": (3.23, 3.20), "musedata": (5.99, 6.23),
         "piano_midi": (8.82, 9.03)}


# ====================================================================== metrics (pure functions)
def frame_nll(logits: Tensor, v: Tensor) -> Tensor:
    """(B, T) NLL of each frame in nats: the sum over pitches of the Bernoulli NLLs of ``v`` under ``logits``."""
    return F.binary_cross_entropy_with_logits(logits, v, reduction="none").sum(-1)   # (B, T, P) -> (B, T)


def frame_accuracy(pred: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[float, float]:
    """(TP, TP + FP + FN) summed over valid frames (Bay et al. 2009); accuracy = first / second."""
    pred, v = pred.bool(), v.bool()
    if mask is not None:
        m = mask.unsqueeze(-1)                                                      # (B, T, 1)
        pred, v = pred & m, v & m
    tp = (pred & v).sum()
    return float(tp), float(tp + (pred & ~v).sum() + (~pred & v).sum())


# ====================================================================== torchmetrics
def _metrics():
    """NLL per time step over every valid frame seen (not a mean of batch means) and the frame-level accuracy
    of Bay et al. 2009, TP / (TP + FP + FN) summed over frames: each a ratio of two sums."""
    from torchmetrics import Metric, MetricCollection

    class SumRatio(Metric):
        full_state_update = False

        def __init__(self, parts):
            super().__init__()
            self.parts = parts                              # metric_inputs' dict -> (numerator, denominator)
            self.add_state("num", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("den", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

        def update(self, out: dict, target) -> None:
            num, den = self.parts(out)
            self.num += float(num)
            self.den += float(den)

        def compute(self):
            return (self.num / self.den.clamp_min(1)).float()

    return MetricCollection({"nll": SumRatio(lambda o: (o["nll"].sum(), o["frames"])),
                             "acc": SumRatio(lambda o: o["acc"])})


# ====================================================================== the task
class MusicTask(SequenceTask):
    """GRU over frames; the Bernoulli or NADE head gives ``log p(v_t | v_<t)``."""

    task_name = "music"

    def build_head(self):
        c, P = self.config, int(self.meta["input_size"])
        self.input_drop = nn.Dropout(c.input_dropout)
        head = (NADEHead(self.encoder_size, P, c.nade_hidden, c.head_dropout) if c.output == "nade" else
                BernoulliHead(self.encoder_size, P, c.head_dropout))
        freq = self.meta.get("pitch_frequency")
        if freq is not None and len(freq) == P:                                     # start at the marginals
            q = torch.as_tensor(freq, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                (head.b if c.output == "nade" else head.proj).bias.copy_(torch.log(q) - torch.log1p(-q))
        return head

    def build_metrics(self):
        return _metrics()

    @property
    def monitor(self) -> str:
        return "val_nll" if self.meta.get("has_val", True) else "train_loss"

    def encode(self, inputs, state=None):
        x = self.input_drop(inputs["x"])                                            # (B, T, P) previous frames
        return self.encoder(x, state, lengths=inputs.get("lengths"))                # (B, T, E), (L, B, H)

    def readout(self, seq, h_n, inputs):
        return self.head(seq, inputs["y"]), seq                                     # logits (B, T, P), (B, T, E)

    def loss(self, outputs, target, inputs):
        logits, _ = outputs
        nll = frame_nll(logits, target)                                             # (B, T)
        mask = length_mask(inputs.get("lengths"), nll.shape[1], nll.device)
        if mask is None:
            return nll.mean()
        return (nll * mask).sum() / mask.sum()

    def metric_inputs(self, outputs, target, inputs):
        logits, seq = outputs
        nll = frame_nll(logits.detach(), target)
        mask = length_mask(inputs.get("lengths"), nll.shape[1], nll.device)
        if mask is None:
            mask = torch.ones_like(nll, dtype=torch.bool)
        with torch.no_grad():
            pred = self.head.greedy(seq.detach())
        return {"nll": nll * mask, "frames": float(mask.sum()), "acc": frame_accuracy(pred, target, mask)}, target

    def decode(self, outputs, inputs):
        """What :func:`~grukit.tasks.base.infer` combines over an ensemble (mean): ``prob`` p(v_tk | past)
        (B, T, P), ``nll`` per frame (B, T) and ``pred`` the greedy frames (B, T, P) as 0/1 (their mean over
        members > 0.5 is the majority vote)."""
        logits, seq = outputs
        return {"prob": torch.sigmoid(logits), "nll": frame_nll(logits, inputs["y"]),
                "pred": self.head.greedy(seq).float()}

    # ---- sampling
    def sample(self, n_frames: int, primer: np.ndarray | None = None, temperature: float = 1.0,
               seed: int | None = None) -> np.ndarray:
        """Primer frames (if any) then ``n_frames`` sampled frames, as a (T, P) uint8 roll (:func:`generate`)."""
        return generate([self], self.meta, 1, n_frames, temperature, seed, primer=primer)[0]


Task = MusicTask


# ====================================================================== data
def _split(source: MusicSource, cfg: MusicConfig) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    """train/valid/test rolls and piece names: the file's own split, else a seeded split by fraction."""
    idx = split_indices(source, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    own = "train" in source.splits
    rolls = {k: [source.splits[k if own else "all"][i] for i in v] for k, v in idx.items()}
    names = {k: [source.names[k if own else "all"][i] for i in v] for k, v in idx.items()}
    return rolls, names


def split_pieces(source: MusicSource, cfg: MusicConfig) -> dict[str, list[np.ndarray]]:
    """train/valid/test rolls: the file's own split, else a seeded split of the pieces by fraction."""
    return _split(source, cfg)[0]


def _spec(cfg: MusicConfig) -> RollSpec:
    return RollSpec.from_config(cfg)


def prepare(cfg: MusicConfig) -> Prepared:
    source = read_rolls(cfg.data, _spec(cfg), cfg.max_files)
    parts, names = _split(source, cfg)
    if not parts["train"]:
        raise DataError("no training pieces after the validation/test split; add pieces or lower "
                        "--val-fraction/--test-fraction", path=cfg.data)
    tr = piece_loader(parts["train"], cfg.batch_size, cfg.chunk, cfg.num_workers, cfg.seed)
    va = eval_batches(parts["valid"])[0] if parts["valid"] else None
    cat = np.concatenate(parts["train"])
    meta = {"input_size": int(cat.shape[1]), "data_name": source.name, "frame_seconds": source.frame_seconds,
            "frames_per_beat": source.frames_per_beat,
            "low_pitch": cfg.low_pitch, "has_val": va is not None,
            "pieces": {k: len(v) for k, v in parts.items()},
            "frames": {k: int(sum(len(r) for r in v)) for k, v in parts.items()},
            "split": names,                                     # the piece names of each part: baselines can
            "pitch_frequency": cat.mean(0).round(6).tolist(),   # be scored on the same pieces
            "mean_notes_per_frame": float(cat.sum(1).mean())}
    return Prepared(tr, va, meta, extra={"parts": parts})


# ====================================================================== use a trained run
def _score(models, rolls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-piece (NLL sum, frames), (TP, TP+FP+FN) and probabilities p(v_tk=1 | past) (T, P), through
    :func:`~grukit.tasks.base.infer`: an ensemble's frame NLLs and probabilities are averaged and its greedy
    frames decided by majority vote."""
    loader, groups = eval_batches(rolls)
    batches = list(loader)
    nll, acc, probs = np.zeros((len(rolls), 2)), np.zeros((len(rolls), 2)), [None] * len(rolls)
    for idx, out, batch in zip(groups, infer(models, batches), batches):
        for j, i in enumerate(idx):
            T = int(batch["lengths"][j])
            nll[i] = float(out["nll"][j, :T].sum()), T
            acc[i] = frame_accuracy(out["pred"][j, :T] > 0.5, batch["y"][j, :T])
            probs[i] = out["prob"][j, :T].numpy()
    return nll, acc, probs


def _eval_rolls(run, data: str | None) -> tuple[list[np.ndarray], str]:
    cfg = run.config
    if data is None:
        source = read_rolls(cfg.data, _spec(cfg), cfg.max_files)
        return split_pieces(source, cfg)["test"], f"{source.name} (test)"
    source = read_rolls(data, _spec(cfg), cfg.max_files)
    if "test" in source.splits:
        return source.splits["test"], f"{source.name} (test)"
    return source.splits.get("all", []), source.name


def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """NLL per time step (nats) and frame accuracy on the test pieces (an ensemble: averaged), beside a
    per-pitch frequency baseline and, for the four benchmark sets, the numbers of Chung et al. 2014."""
    rolls, name = _eval_rolls(run, data)
    if not rolls:
        raise DataError("no test pieces: raise --test-fraction when training, or pass `grukit evaluate RUN "
                        "--data FILE`", path=data or run.config.data)
    _check_width(rolls, run.meta, name)
    nll, acc, probs = _score(models, rolls)
    frames = nll[:, 1].sum()
    table = {"grukit": {"nll": float(nll[:, 0].sum() / frames), "accuracy": float(acc[:, 0].sum() /
                                                                                  max(acc[:, 1].sum(), 1)),
                        "frames": float(frames), "pieces": float(len(rolls)),
                        "params": float(sum(p.numel() for p in models[0].parameters()))}}
    q = np.clip(np.asarray(run.meta["pitch_frequency"], np.float64), 1e-4, 1 - 1e-4)
    cat = np.concatenate(rolls).astype(np.float64)                                 # (N, P)
    base_nll = -(cat * np.log(q) + (1 - cat) * np.log1p(-q)).sum(1).mean()
    pred = np.broadcast_to(q > 0.5, cat.shape)
    tp = float((pred & (cat > 0)).sum())
    den = tp + float((pred & (cat == 0)).sum()) + float((~pred & (cat > 0)).sum())
    table["pitch_frequency"] = {"nll": float(base_nll), "accuracy": tp / max(den, 1.0), "frames": float(frames),
                                "pieces": float(len(rolls))}
    key = str(run.meta.get("data_name", "")).lower()
    if data is None and key in PAPER:
        table["Chung2014_GRU"] = {"nll": PAPER[key][0], "params": 2.0e4}
        table["Chung2014_LSTM"] = {"nll": PAPER[key][1], "params": 2.0e4}
    i = int(np.argmax([len(r) for r in rolls[:20]]))
    n = min(len(rolls[i]), 400)
    roll_png(run.path / "plots" / "test_piece.png",
             [("test piece (truth)", rolls[i][:n]),
              (f"p(note | past){' (NADE conditionals)' if run.config.output == 'nade' else ''}", probs[i][:n])],
             low_pitch=run.config.low_pitch, frame_seconds=run.meta.get("frame_seconds"))
    return table


def _check_width(rolls, meta, name) -> None:
    P = int(meta["input_size"])
    if rolls and rolls[0].shape[1] != P:
        raise DataError(f"rolls have {rolls[0].shape[1]} pitches but the model was trained on {P}", path=name)


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Per-piece NLL per time step and accuracy as CSV, and the first piece's probabilities as PNG."""
    import pandas as pd
    source = read_rolls(data or run.config.data, _spec(run.config), run.config.max_files)
    split = "test" if "test" in source.splits else "all"
    rolls, names = source.splits[split], source.names[split]
    _check_width(rolls, run.meta, source.name)
    nll, acc, probs = _score(models, rolls)
    frame = pd.DataFrame({"piece": names, "frames": nll[:, 1].astype(int), "nll_per_step": nll[:, 0] / nll[:, 1],
                          "accuracy": acc[:, 0] / np.maximum(acc[:, 1], 1)})
    out = Path(out) if out else run.path / "predictions.csv"
    n = min(len(rolls[0]), 400)
    png = roll_png(out.with_suffix(".png"), [(f"{names[0]} (truth)", rolls[0][:n]),
                                              ("p(note | past)", probs[0][:n])],
                   low_pitch=run.config.low_pitch, frame_seconds=run.meta.get("frame_seconds"))
    return [write_predictions(frame, out), png]


# ====================================================================== generation
def _pick(logits: list[Tensor], temperature: float, generator=None) -> Tensor:
    """0/1 notes from the members' logits: one member draws as :func:`~grukit.tasks.heads.draw_notes`; an ensemble from the mean of
    the members' probabilities ``sigmoid(logits / temperature)`` (temperature 0: mean p > 0.5)."""
    if len(logits) == 1:
        return draw_notes(logits[0], temperature, generator)
    if temperature == 0:
        return (torch.stack([torch.sigmoid(z) for z in logits]).mean(0) > 0.5).to(logits[0].dtype)
    p = torch.stack([torch.sigmoid(z / temperature) for z in logits]).mean(0)
    return torch.bernoulli(p, generator=generator)


def _frame(heads: list[nn.Module], es: list[Tensor], temperature: float, generator) -> Tensor:
    """One sampled frame (N, P) from every member's GRU output (N, E)."""
    if len(heads) == 1:
        return heads[0].sample(es[0], temperature, generator)
    if isinstance(heads[0], BernoulliHead):
        return _pick([h.proj(e) for h, e in zip(heads, es)], temperature, generator)
    bs, acts = [h.b(e) for h, e in zip(heads, es)], [h.c(e) for h, e in zip(heads, es)]    # (N, P), (N, K)
    out = torch.zeros_like(bs[0])
    for k in range(out.shape[-1]):                                              # NADE: pitch by pitch, jointly
        z = [b[:, k] + (torch.sigmoid(a) * h.V[k]).sum(-1) for h, b, a in zip(heads, bs, acts)]   # (N,) each
        out[:, k] = _pick(z, temperature, generator)
        acts = [a + out[:, k:k + 1] * h.W[k] for h, a in zip(heads, acts)]
    return out


def generate(models, meta: dict, n: int = 1, steps: int = 64, temperature: float = 1.0,
             seed: int | None = None, *, primer: np.ndarray | None = None) -> list[np.ndarray]:
    """THE music sampling loop: ``n`` pieces of ``steps`` frames, all advanced together by one batched
    :meth:`grukit.nn.GRU.step` per frame (per ensemble member; an ensemble samples from its members' mean
    probabilities). ``primer`` (T0, P) frames are teacher-forced first and kept at the start of every piece.
    Returns ``n`` rolls (T0 + steps, P) of uint8 0/1; the same ``seed`` gives the same pieces."""
    members = [models] if isinstance(models, SequenceTask) else list(models)
    if not members:
        raise ConfigError("generate() needs at least one model")
    if any(m.config.bidirectional for m in members):
        raise ConfigError("a bidirectional GRU cannot generate; train with --no-bidirectional")
    if temperature is None or temperature < 0:
        raise ConfigError(f"temperature={temperature}: expected a number >= 0 (1 = the model's distribution, "
                          "< 1 more conservative, 0 = every note with probability > 0.5)")
    if n < 1 or steps < 0:
        raise ConfigError(f"n={n}, steps={steps}: expected at least one piece and steps >= 0")
    was = [m.training for m in members]
    try:
        for m in members:
            m.eval()
        with torch.no_grad(), frozen_weights(*members):                   # weights checked once, not per frame
            return _sample(members, int(meta["input_size"]), n, steps, float(temperature), seed, primer)
    finally:
        for m, t in zip(members, was):
            m.train(t)


def _sample(members, P: int, n: int, steps: int, temperature: float, seed, primer) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**31))
    dtype = next(members[0].parameters()).dtype
    prev, hs = torch.zeros(n, P, dtype=dtype), [None] * len(members)            # (n, P)
    out = []
    if primer is not None and len(primer):
        for frame in torch.as_tensor(np.asarray(primer), dtype=dtype):          # teacher-force the primer
            hs = [m.encoder.step(prev, h)[1] for m, h in zip(members, hs)]
            prev = frame.unsqueeze(0).expand(n, P)
            out.append(prev)
    for _ in range(steps):
        es = []
        for i, m in enumerate(members):
            y, hs[i] = m.encoder.step(prev, hs[i])                              # (n, E), (L, n, H)
            es.append(y)
        prev = _frame([m.head for m in members], es, temperature, g)            # (n, P)
        out.append(prev)
    if not out:
        return [np.zeros((0, P), np.uint8) for _ in range(n)]
    rolls = torch.stack(out, 1).numpy().astype(np.uint8)                        # (n, T, P)
    return list(rolls)


def _primer(run, prompt: str | None, primer_frames: int | None) -> np.ndarray | None:
    """The primer roll: none, a MIDI file, or ``data[:N]`` (test piece N of the run's data)."""
    if not prompt:
        return None
    cfg = run.config
    if prompt == "data" or prompt.startswith("data:"):
        idx = int(prompt.partition(":")[2] or 0)
        source = read_rolls(cfg.data, _spec(cfg), cfg.max_files)
        parts = split_pieces(source, cfg)
        pool = parts["test"] or parts["valid"] or parts["train"]
        if not 0 <= idx < len(pool):
            raise ConfigError(f"--prompt {prompt}: the data has {len(pool)} held-out pieces; expected data:0 to "
                              f"data:{len(pool) - 1}")
        roll = pool[idx]
        n = primer_frames if primer_frames else min(len(roll), 4 * max(1, cfg.frames_per_beat) * 4)
    else:
        p = Path(prompt)
        if not p.is_file():
            raise ConfigError(f"--prompt {prompt!r}: expected a MIDI file to continue, 'data' or 'data:N' (a "
                              "held-out piece of the training data)")
        source = read_rolls(str(p), _spec(cfg))
        roll = source.splits["all"][0]
        n = primer_frames or len(roll)
    return roll[:n]


def generate_run(run, models, prompt: str | None = None, length: int | str | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 out: str | Path | None = None, seconds: float | None = None,
                 primer_frames: int | None = None, **_ignored) -> list[Path]:
    """Sample a piece and write it as MIDI, with a piano-roll PNG beside it.

    Args:
        prompt: a MIDI file to continue, ``data`` / ``data:N`` (held-out piece N of the run's data as primer), or
            None to start from silence.
        length: frames to generate, or a string with seconds such as ``"30s"`` (default 16 s).
        temperature: divides the logits before each Bernoulli draw (< 1: more conservative; 0: no sampling,
            every note with probability > 0.5).
        top_k, top_p: token-sampling options; they have no meaning for piano-roll frames and must stay unset.
        seed: makes the sample reproducible.
        seconds, primer_frames: length in seconds instead of frames; how many primer frames to use.
    """
    if (top_k not in (None, 0)) or (top_p not in (None, 0.0, 1.0)):
        raise ConfigError("--top-k/--top-p pick among tokens; a music frame samples each key independently (or "
                          "note by note with NADE): use --temperature instead")
    if temperature is None or temperature < 0:
        raise ConfigError(f"--temperature={temperature}: expected a number >= 0 (1 = the model's distribution, "
                          "< 1 more conservative, 0 = every note with probability > 0.5)")
    fsec = float(run.meta.get("frame_seconds", 0.25))
    if isinstance(length, str) and length.strip().lower().endswith("s"):
        seconds, length = float(length.strip()[:-1]), None
    if length is not None and seconds is not None:
        raise ConfigError("give the length in frames (--length) or in seconds, not both")
    n = int(round(seconds / fsec)) if seconds is not None else int(length) if length is not None else \
        int(round(16.0 / fsec))
    if n < 1:
        raise ConfigError(f"length={length or seconds}: expected at least one frame")
    primer = _primer(run, prompt, primer_frames)
    (roll,) = generate(models, run.meta, 1, n, float(temperature), seed, primer=primer)
    out = Path(out) if out else run.path / "generated.mid"
    if out.suffix.lower() not in (".mid", ".midi"):
        out = out.with_suffix(".mid")
    low = run.config.low_pitch
    mid = write_midi(roll, out, fsec, low, frames_per_beat=int(run.meta.get("frames_per_beat", 4)))
    k = 0 if primer is None else len(primer)
    png = roll_png(out.with_suffix(".png"), [(f"{out.name}: {len(roll) - k} generated frames at temperature "
                                              f"{temperature:g}" + (f" after a {k}-frame primer" if k else ""),
                                              roll)],
                   low_pitch=low, frame_seconds=fsec, split_at=k or None)
    return [mid, png]
