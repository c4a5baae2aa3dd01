"""Sequence classification: a GRU-FCN hybrid over variable-length multivariate sequences.

Inputs: ``.npz`` with ``X`` (N, T, F) (or (N, T)), optional ``lengths`` (N,) and ``y`` (N,); a long-format CSV
(``id_col``, ``time_col``, feature columns..., ``label_col``); a ``.ts`` file (sktime/aeon); a built-in set; or
audio (a folder of ``label_speaker_index.wav`` files or class sub-folders, or a path,label manifest), read as
log-mel frames by :func:`grukit.data.audio.labelled_features`. The readers live in
:mod:`grukit.data.sequences`.

The model (defaults chosen to hold up on UCR/UEA data it was not tuned on; see :class:`ClassifyConfig`)::

    (mean_series: one-length series nearly alike, such as spectra, become their z-normalised values less the
     training series' mean, so the model reads each one's departure from the typical one; see centred)
    x (B, T, F) z-normalised ──series longer than conv_steps in windows of s steps──> (B, T/s, F')
        │   (downsample=mixed: the FCN branch reads pool_time (F' = F), the GRU branch fold_time (F' = s*F);
        │    fold: fold_time for both; conv: a learned linear strided Conv1d, F' = C; mean: pool_time for both)
        │   (window_phase=random: in training the folded windows start at a random phase 0..s-1 per series)
        ├── FCNBranch: Conv1d 8/5/3 + BatchNorm + ReLU, mean over valid steps ──> (B, C)
        │   (conv_branch=inception: InceptionBranch, InceptionTime modules with kernels 39/19/9;
        │    resnet: ResNetBranch, Wang et al.'s residual blocks; a list such as inception,fcn,resnet
        │    is cycled through by ensemble members, as are lists of downsample and first_difference;
        │    first_difference=on: each feature's first difference enters beside it, F -> 2F;
        │    conv_pool=mean_max: the maximum over valid steps beside the mean, (B, 2C);
        │    ppv: the soft proportion of positive values of the last pre-activation, mean_ppv: both)
        └── PatchEmbed (strided conv to at most gru_steps) ──> GRU ──> Pooling ──> (B, D*H)
    concat (series_stats: + each series' standardised mean and log std, the level and scale that per-series
            z-normalisation removed, (B, 2F) where they vary; length_stat: + its log length, (B, 1))
      ──> ClassificationHead ──> (B, K) logits; trained with label-smoothed cross-entropy
    (mixup > 0: on pairs of training series mixed with their targets, Zhang et al. 2018; dba_augment > 0:
     beside synthetic series of each class by weighted DTW barycentre averaging, grukit.tasks.classify_dba)

Sequences keep their own lengths: padding is zeroed before every convolution and goes to the GRU with
``lengths``, so it never enters a state, and pooling masks it. Metrics: accuracy and macro-F1 (torchmetrics),
confusion-matrix PNG, and MiniRocket / 1-NN DTW / majority-class baselines on the same split.

The one inference entry point is :func:`classify_sequences` (CLI evaluate/predict and serving call it).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import ClassifyConfig
from ..data import audio, builtin
from ..data.augment import augment, mixup
from ..data.batching import DictDataset, Prepared, loader
from ..data.sequences import check_features, normalise_series, read_labelled, stratified_split
from ..errors import DataError, ShapeError
from ..nn import GRU
from .base import SequenceTask, infer
from .conv import (FCNBranch, InceptionBranch, PatchEmbed, ResNetBranch, fold_time, pool_time, start_later,
                   strides, with_difference)
from .heads import ClassificationHead, Pooling

__all__ = ["ClassifyTask", "prepare", "evaluate", "predict", "read_sequences", "classify_sequences",
           "resolve_schedule"]

VAL_MIN_SERIES = 500        # schedule=auto: a validation split from this many training series on
MIN_BATCHES = 40            # schedule=auto: small training sets are repeated so an epoch has this many batches
SMALL_ENSEMBLE = (300, 5)   # schedule=auto with ensemble=0: 5 members below 300 training series ...
LARGE_ENSEMBLE = 3          # ... and 3 from 300 on (a member's budget: train_steps, or train_budget for many classes)


# ====================================================================== data
def names_builtin(data: str) -> bool:
    """``data`` is a built-in set: its name with no file there, or a folder of that name without audio in it
    (``grukit tune classify --data gunpoint --out gunpoint`` makes one)."""
    return builtin.means_builtin(data) and not audio.is_audio_source(data)


def read_sequences(data: str, cfg: ClassifyConfig, split: str = "train", need_labels: bool = True
                   ) -> tuple[list[np.ndarray], np.ndarray | None, str]:
    """(sequences (T_i, F) float32, labels as strings or None, display name) from a file or built-in set."""
    if names_builtin(data):
        seqs, y = builtin.get(data, "classify").loader(split)
        return seqs, y, data
    if audio.is_audio_source(data):              # audio folder or manifest: log-mel features (grukit.data.audio)
        return audio.labelled_features(data, split)
    p = Path(data)
    if not p.exists() and p.suffix == "":
        builtin.get(data, "classify")            # unknown name: the error lists the built-in sets
    seqs, y = read_labelled(p, need_labels, cfg.id_col, cfg.time_col, cfg.label_col)
    return seqs, y, str(p)


def normalisation(cfg: ClassifyConfig, n_feat: int) -> str:
    """The scaling ``normalize`` stands for: auto is per-series for one feature, per-feature for several."""
    if cfg.normalize == "auto":
        return "series" if n_feat == 1 else "feature"
    return cfg.normalize


def _normalise(seqs, meta):
    kind = meta.get("normalize", "feature")
    if kind == "series":
        return [normalise_series(s) for s in seqs]
    if kind == "none":
        return [np.asarray(s, np.float32) for s in seqs]
    mean, std = np.asarray(meta["feature_mean"], np.float32), np.asarray(meta["feature_std"], np.float32)
    return [((s - mean) / std).astype(np.float32) for s in seqs]


MEAN_SERIES_RATIO = 0.05   # mean_series=auto: centre where series depart from their mean by under 5% of their size


def mean_series_plan(cfg: ClassifyConfig, seqs) -> dict:
    """meta entries of ``mean_series`` for the training series (raw, (T, F)): the mean of their z-normalised
    values step by step, ``{"mean_series": [...]}``, or nothing. auto centres one-feature series of one length
    whose mean absolute departure from that mean is under MEAN_SERIES_RATIO of their mean absolute value."""
    if cfg.mean_series == "off":
        return {}
    lengths, n_feat = {len(s) for s in seqs}, seqs[0].shape[1]
    if len(lengths) > 1 or (cfg.mean_series == "auto" and n_feat > 1):
        if cfg.mean_series == "on":
            raise DataError(f"mean_series=on needs training series of one length; they have {min(lengths)} to "
                            f"{max(lengths)} steps (use mean_series=auto or off)", path=cfg.data)
        return {}
    z = np.stack([normalise_series(s) for s in seqs]).astype(np.float64)        # (N, T, F)
    mean = z.mean(0)
    ratio = float(np.abs(z - mean).mean() / max(np.abs(z).mean(), 1e-12))
    if cfg.mean_series == "auto" and ratio >= MEAN_SERIES_RATIO:
        return {}
    return {"mean_series": mean.tolist(), "mean_series_ratio": round(ratio, 4)}


def centred(seqs, meta):
    """The series as the model reads them: with ``mean_series`` in meta, each one's z-normalised values less
    the training mean series (a series of another length is refused); else ``seqs`` unchanged."""
    if "mean_series" not in meta:
        return seqs
    mean = np.asarray(meta["mean_series"], np.float32)                         # (T, F)
    for i, s in enumerate(seqs):
        if len(s) != len(mean):
            raise ShapeError(f"sequence {i} has {len(s)} steps; this model subtracts the training series' mean "
                             f"(mean_series), so every series needs {len(mean)} steps")
    return [normalise_series(s) - mean for s in seqs]


STATS_CLIP = 5.0           # series_stats: standardised statistics are clipped to +-this


def raw_stats(seqs) -> np.ndarray:
    """(N, 2F) float64: each (T, F) series' mean and log standard deviation per feature, in raw units."""
    return np.array([np.concatenate([np.asarray(s, np.float64).mean(0),
                                     np.log(np.asarray(s, np.float64).std(0) + 1e-8)]) for s in seqs])


def stats_scaling(stats: np.ndarray) -> dict:
    """Centre, scale and kept columns of :func:`raw_stats` over the training series (series_stats). A mean is
    kept where the series' means differ by more than 1% of their typical standard deviation, a log standard
    deviation where it varies by more than 0.01 (1%): on z-normalised archives neither varies and the head is
    as without. They reach the model as the dataset's ``stats`` input."""
    F_ = stats.shape[1] // 2
    center, scale = stats.mean(0), stats.std(0)
    typical = np.median(np.exp(stats[:, F_:]), 0)                         # (F,) typical within-series std
    keep = np.concatenate([scale[:F_] > 0.01 * np.maximum(typical, 1e-8), scale[F_:] > 0.01])
    return {"stats_center": center.tolist(), "stats_scale": np.where(keep, scale, 1.0).tolist(),
            "stats_columns": np.flatnonzero(keep).tolist()}


def length_scaling(lengths) -> dict:
    """Centre and scale of the training series' log lengths (length_stat), or nothing where it varies by at
    most 0.01 (one length). The model reads the length from its ``lengths`` input, so a stream has it too."""
    log_n = np.log(np.asarray(lengths, dtype=np.float64))
    return {"length_stat": [float(log_n.mean()), float(log_n.std())]} if log_n.std() > 0.01 else {}


def raw_quantiles(norm, n: int) -> np.ndarray:
    """(N, 2*F*n) float64: ``n`` evenly spaced quantiles (0% to 100%) of each normalised (T, F) series per
    feature, then those of its first difference scaled to unit root-mean-square per feature (one step: zeros):
    the distribution of the values the model reads, whatever their order (value_quantiles)."""
    q = np.linspace(0.0, 1.0, n)
    out = []
    for s in norm:
        a = np.asarray(s, np.float64)                                          # (T, F)
        d = np.diff(a, axis=0) if len(a) > 1 else np.zeros_like(a)
        d = d / np.maximum(np.sqrt((d ** 2).mean(0)), 1e-6)                   # (T-1, F) unit RMS per feature
        out.append(np.concatenate([np.quantile(a, q, axis=0).T.ravel(), np.quantile(d, q, axis=0).T.ravel()]))
    return np.array(out).reshape(len(norm), -1)


def quantile_scaling(quantiles: np.ndarray, n: int) -> dict:
    """Centre and scale of :func:`raw_quantiles` over the training series (value_quantiles)."""
    scale = quantiles.std(0)
    return {"quantiles": n, "quantile_center": quantiles.mean(0).tolist(),
            "quantile_scale": np.where(scale > 1e-8, scale, 1.0).tolist()}


def quantile_dropout(stats: torch.Tensor, width: int, p: float) -> torch.Tensor:
    """(B, S) -> (B, S): the last ``width`` columns (the value quantiles) of each row zeroed with probability
    ``p`` (0 is the training mean: a typical series), kept rows scaled by 1/(1-p)."""
    keep = (torch.rand(stats.shape[0], 1, device=stats.device) >= p).to(stats.dtype) / (1 - p)   # (B, 1)
    return torch.cat([stats[:, :stats.shape[1] - width], stats[:, stats.shape[1] - width:] * keep], dim=1)


def stats_width(meta: dict) -> int:
    """How many standardised statistics the head reads beside the pooled features (the ``stats`` input)."""
    return len(meta.get("stats_columns") or []) + len(meta.get("quantile_center") or [])


def _stats(seqs, meta, raw: np.ndarray | None = None, norm=None) -> np.ndarray | None:
    """(N, S) float32 standardised statistics the head reads, or None (none kept): the series_stats columns,
    then the value_quantiles; ``raw`` is :func:`raw_stats` of ``seqs``, ``norm`` the normalised ``seqs``,
    when the caller has them."""
    parts = []
    cols = meta.get("stats_columns") or []
    if cols:
        raw = raw_stats(seqs) if raw is None else raw
        parts.append(((raw - np.asarray(meta["stats_center"])) / np.asarray(meta["stats_scale"]))[:, cols])
    if meta.get("quantiles"):
        norm = _normalise(seqs, meta) if norm is None else norm
        parts.append((raw_quantiles(norm, int(meta["quantiles"])) - np.asarray(meta["quantile_center"]))
                     / np.asarray(meta["quantile_scale"]))
    if not parts:
        return None
    return np.clip(np.concatenate(parts, axis=1), -STATS_CLIP, STATS_CLIP).astype(np.float32)


def _dataset(seqs, y_idx, stats=None):
    extra = {} if stats is None else {"stats": stats}
    return DictDataset(x=seqs, lengths=np.array([len(s) for s in seqs]), y=np.asarray(y_idx, dtype=np.int64),
                       **extra)


def train_budget(cfg: ClassifyConfig, n_fit: int, classes: int) -> int:
    """Optimiser steps that a set of ``n_fit`` training series in ``classes`` classes asks for (a member trains
    for the larger of this and train_steps): enough to draw train_class_samples series per class, but no more
    than train_passes passes over the series (0 in either: 0)."""
    if not cfg.train_passes or not cfg.train_class_samples:
        return 0
    return math.ceil(min(cfg.train_passes * n_fit, cfg.train_class_samples * classes) / cfg.batch_size)


def resolve_schedule(cfg: ClassifyConfig, n: int, synthetic: int = 0, classes: int = 2) -> dict:
    """Fill in the training schedule for ``n`` labelled series (schedule=auto) and say why; changes ``cfg``
    in place (so the run's config.yaml records the values used) and returns the choices for meta.json.
    ``synthetic`` series (dba_augment) join the training part, so an epoch has more batches, not more steps."""
    if cfg.schedule == "manual":
        cfg.ensemble = cfg.ensemble or 1
        return {"rule": "manual", "val_fraction": cfg.val_fraction, "max_epochs": cfg.max_epochs,
                "patience": cfg.patience, "ensemble": cfg.ensemble}
    validated = cfg.schedule == "validated"
    use_val = (n >= VAL_MIN_SERIES or validated) and cfg.val_fraction > 0
    if not use_val:
        cfg.val_fraction = 0.0
        cfg.patience = 0                        # a fixed budget: nothing to stop early on
    n_fit = n - int(round(cfg.val_fraction * n)) + synthetic
    repeat = max(1, MIN_BATCHES // max(1, math.ceil(n_fit / cfg.batch_size)))   # fewer, longer epochs: less
    batches = max(1, math.ceil(n_fit * repeat / cfg.batch_size))               # per-epoch overhead
    budget = train_budget(cfg, n_fit, classes)
    steps = max(cfg.train_steps, budget)
    cfg.max_epochs = max(1, min(cfg.max_epochs, math.ceil(steps / batches)))
    if cfg.ensemble == 0:
        cfg.ensemble = 1 if validated else SMALL_ENSEMBLE[1] if n < SMALL_ENSEMBLE[0] else LARGE_ENSEMBLE
    why = ("schedule=validated: stratified validation split, early stopping on val_loss" if use_val and validated
           else f"{n} series >= {VAL_MIN_SERIES}: stratified validation split, early stopping on val_loss" if use_val
           else f"{n} series < {VAL_MIN_SERIES}: no validation split, fixed budget, the weights with the "
                "lowest training loss are kept")
    if budget > cfg.train_steps:
        why += (f"; {classes} classes: {budget} steps to draw {cfg.train_class_samples} series per class (at most "
                f"{cfg.train_passes} passes) instead of train_steps={cfg.train_steps}")
    return {"rule": why, "val_fraction": cfg.val_fraction, "max_epochs": cfg.max_epochs, "patience": cfg.patience,
            "ensemble": cfg.ensemble, "batches_per_epoch": batches, "repeat": repeat, "steps": cfg.max_epochs * batches}


def prepare(cfg: ClassifyConfig) -> Prepared:
    seqs, y, name = read_sequences(cfg.data, cfg, "train")
    n_feat = check_features(seqs, None, name)
    classes = sorted(set(y.tolist()), key=lambda c: (len(c), c) if c.isdigit() else (0, c))
    if len(classes) < 2:
        raise DataError(f"only one class ({classes[0]!r}); classification needs at least two", path=name)
    idx = {c: i for i, c in enumerate(classes)}
    y_idx = np.array([idx[c] for c in y])
    schedule = resolve_schedule(cfg, len(seqs), classes=len(classes))
    train, val = stratified_split(y_idx, cfg.val_fraction, cfg.seed)
    centring = mean_series_plan(cfg, [seqs[i] for i in train])          # the training part's mean series
    seqs = centred(seqs, centring)
    kind = normalisation(cfg, n_feat)
    cat = np.concatenate([seqs[i] for i in train])
    std = np.where(cat.std(0) > 1e-8, cat.std(0), 1)
    max_length = int(max(len(s) for s in seqs))
    per_member = [strides(max_length, int(c), cfg.gru_steps) for c in str(cfg.conv_steps).split(",")]
    (s, r), s_all, r_all = per_member[0], [sr[0] for sr in per_member], [sr[1] for sr in per_member]
    meta = {"input_size": n_feat, "classes": classes, "data_name": name, "has_val": bool(len(val)),
            "normalize": kind, "feature_mean": cat.mean(0).tolist(), "feature_std": std.tolist(),
            "n_train": len(train), "n_val": len(val), "max_length": max_length, "pool_stride": s,
            "patch_stride": r, "pool_strides": s_all, "patch_strides": r_all, "downsample": cfg.downsample,
            "conv_branch": cfg.conv_branch, "first_difference": cfg.first_difference, "schedule": schedule,
            "class_counts": np.bincount(y_idx[train], minlength=len(classes)).tolist()}
    meta.update(centring)
    raw = raw_stats(seqs) if kind == "series" and cfg.series_stats else None   # what series scaling removes
    if raw is not None:
        meta.update(stats_scaling(raw[train]))
    if cfg.length_stat:
        meta.update(length_scaling([len(seqs[i]) for i in train]))
    norm = _normalise(seqs, meta)
    if cfg.value_quantiles:
        meta.update(quantile_scaling(raw_quantiles([norm[i] for i in train], cfg.value_quantiles),
                                     cfg.value_quantiles))
    stats = _stats(seqs, meta, raw, norm)
    fit_seqs, fit_y = [norm[i] for i in train], y_idx[train]
    fit_stats = None if stats is None else stats[train]
    if cfg.dba_augment > 0:                                            # synthetic series of the training part
        from .classify_dba import dba_series
        extra, extra_y = dba_series(fit_seqs, fit_y, cfg.dba_augment, cfg.seed)
        if kind == "series":
            extra = [normalise_series(s) for s in extra]                # as the real series reach the model
        if fit_stats is not None:                                       # a blend has its class's mean stats
            class_stats = {k: fit_stats[fit_y == k].mean(0) for k in set(extra_y.tolist())}
            fit_stats = np.concatenate([fit_stats, np.stack([class_stats[k] for k in extra_y])])
        fit_seqs, fit_y = fit_seqs + extra, np.concatenate([fit_y, extra_y])
        meta["schedule"] = schedule = resolve_schedule(cfg, len(seqs), len(extra), len(classes))
        meta["synthetic"] = len(extra)
    fit_idx = np.tile(np.arange(len(fit_seqs)), int(schedule.get("repeat", 1)))   # small sets: r times an epoch
    tr = _dataset([fit_seqs[i] for i in fit_idx], fit_y[fit_idx], None if stats is None else fit_stats[fit_idx])
    va = _dataset([norm[i] for i in val], y_idx[val], None if stats is None else stats[val]) if len(val) else None
    return Prepared(loader(tr, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(va, cfg.batch_size, False, cfg.num_workers) if va else None, meta)


# ====================================================================== model
def member_choice(value: str, member: int) -> str:
    """The entry of a per-member option that ensemble member ``member`` uses: ``value`` is one choice or a
    comma-separated list cycled through (``alternate`` stands for ``inception,fcn``)."""
    parts = [p.strip() for p in str(value).replace("alternate", "inception,fcn").split(",") if p.strip()]
    return parts[member % len(parts)]


class ClassifyTask(SequenceTask):
    """GRU-FCN: a fully convolutional branch beside a GRU over patch embeddings, joined by an MLP head
    (``conv_channels=0, gru_steps=0, conv_steps=0`` gives the plain GRU of earlier versions)."""

    task_name = "classify"
    ensemble_rule = "mean"                     # members' class probabilities are averaged

    def build_encoder(self):
        c, m = self.config, self.meta
        # conv_steps may be a per-member list: member i uses entry i mod len (runs saved before: one stride)
        pool_strides, patch_strides = m.get("pool_strides", [m.get("pool_stride", 1)]), \
            m.get("patch_strides", [m.get("patch_stride", 1)])
        self.pool_stride = int(pool_strides[self.member % len(pool_strides)])
        patch_stride = int(patch_strides[self.member % len(patch_strides)])
        in_size = int(m["input_size"])
        self.difference = member_choice(m.get("first_difference", "off"), self.member) == "on"
        if self.difference:
            in_size *= 2                         # each feature's first difference beside it
        self.stem = None                         # runs from before the stem (no "downsample" in meta) averaged
        kind = member_choice(m.get("downsample", "mean"), self.member) if self.pool_stride > 1 else "none"
        self.fold = kind in ("fold", "mixed")    # windows of s steps become s*F features (GRU branch for mixed)
        self.mixed = kind == "mixed"             # the FCN branch reads window means, the GRU branch folds
        fcn_size = in_size
        if self.fold:
            in_size *= self.pool_stride
            fcn_size = fcn_size if self.mixed else in_size
        if kind == "conv":
            self.stem = PatchEmbed(in_size, c.conv_channels or c.hidden_size, self.pool_stride, activation=False)
            in_size = fcn_size = c.conv_channels or c.hidden_size
        self.fcn = None
        # runs saved before the option have the FCN; alternate: members 0, 2, 4 inception, 1, 3 fcn
        branch = member_choice(m.get("conv_branch", "fcn"), self.member)
        if c.conv_channels > 0 and branch == "inception":
            self.fcn = InceptionBranch(fcn_size, max(1, c.conv_channels // 4), c.conv_depth, c.conv_pool)
        elif c.conv_channels > 0 and branch == "resnet":
            self.fcn = ResNetBranch(fcn_size, c.conv_channels, c.conv_pool)
        elif c.conv_channels > 0:
            self.fcn = FCNBranch(fcn_size, c.conv_channels, c.conv_dilation, c.conv_pool)
        self.patch = None
        if c.gru_steps > 0:
            self.patch = PatchEmbed(in_size, c.conv_channels or c.hidden_size, patch_stride)
            in_size = c.conv_channels or c.hidden_size
        return GRU(in_size, c.hidden_size, c.num_layers, batch_first=True,
                   dropout=c.dropout if c.num_layers > 1 else 0.0, bidirectional=c.bidirectional,
                   reset_after=c.reset_after, layer_norm=c.layer_norm, recurrent_dropout=c.recurrent_dropout,
                   zoneout=c.zoneout, backend=c.backend, deterministic=c.deterministic)

    def build_head(self):
        c = self.config
        self.pool = Pooling(c.pooling, self.encoder_size, c.bidirectional)
        size = self.encoder_size + (self.fcn.out_size if self.fcn is not None else 0)
        size += stats_width(self.meta) + ("length_stat" in self.meta)      # series_stats, value_quantiles
        return ClassificationHead(size, len(self.meta["classes"]), c.head_dropout)

    def build_metrics(self):
        from torchmetrics import Accuracy, F1Score, MetricCollection
        k = len(self.meta["classes"])
        return MetricCollection({"acc": Accuracy("multiclass", num_classes=k),
                                 "f1": F1Score("multiclass", num_classes=k, average="macro")})

    def batch_to_inputs(self, batch):
        """In training: the augmentations, then mixup, whose target is (B, K) class probabilities."""
        if self.training and self.config.augment:
            batch = dict(batch, x=augment(batch["x"], batch.get("lengths"), self.config.augment))
        if self.training and self.meta.get("quantiles") and self.config.quantile_dropout > 0 and "stats" in batch:
            batch = dict(batch, stats=quantile_dropout(batch["stats"], len(self.meta["quantile_center"]),
                                                       self.config.quantile_dropout))
        if self.training and self.config.mixup > 0 and batch.get("y") is not None:
            lam = float(torch.distributions.Beta(self.config.mixup, self.config.mixup).sample())
            perm = torch.randperm(batch["x"].shape[0]).to(batch["x"].device)     # drawn here: stats mix alike
            x, lengths, y = mixup(batch["x"], batch.get("lengths"), batch["y"], len(self.meta["classes"]),
                                  self.config.mixup, lam=lam, perm=perm)  # (B, T, F), (B,), (B, K)
            batch = dict(batch, x=x, y=y) if lengths is None else dict(batch, x=x, lengths=lengths, y=y)
            if "stats" in batch:
                batch["stats"] = lam * batch["stats"] + (1 - lam) * batch["stats"][perm]    # (B, S)
        return batch, batch.get("y")

    def phase_shifted(self, inputs):
        """``inputs`` read from a later step so the shortening windows fall at another phase: a random 0..s-1
        steps per series, never past a series' last step."""
        x, lengths = inputs["x"], inputs.get("lengths")
        B, T = x.shape[:2]
        n = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths.long()
        o = torch.minimum(torch.randint(0, self.pool_stride, (B,), device=x.device), (n - 1).clamp_min(0))
        x, lengths = start_later(x, lengths, o)
        return dict(inputs, x=x, lengths=lengths)

    @property
    def random_phase(self) -> bool:
        """window_phase=random in training on a shortened series whose windows are read step by step (folded,
        or the learned stem): each series then starts at a random phase of its windows."""
        return (self.training and self.pool_stride > 1 and (self.fold or self.stem is not None)
                and getattr(self.config, "window_phase", "fixed") == "random")

    def encode(self, inputs, state=None):
        means = inputs                             # the window means (mixed: the convolutional branch) keep phase 0
        if self.random_phase:
            inputs = self.phase_shifted(inputs)                                        # (B, T, F), lengths - o
        if self.difference:
            shifted = inputs is not means
            inputs = dict(inputs, x=with_difference(inputs["x"], inputs.get("lengths")))   # (B, T, 2F)
            means = dict(means, x=with_difference(means["x"], means.get("lengths"))) if shifted else inputs
        if self.stem is not None:
            x, lengths = self.stem(inputs["x"], inputs.get("lengths"))                # (B, T/s, C)
        elif self.fold:
            x, lengths = fold_time(inputs["x"], inputs.get("lengths"), self.pool_stride)  # (B, T/s, s*F)
        else:
            x, lengths = pool_time(inputs["x"], inputs.get("lengths"), self.pool_stride)   # (B, T/s, F)
        if self.fcn is None:
            fcn = None
        elif self.mixed:                                                               # window means (B, T/s, F)
            fcn = self.fcn(*pool_time(means["x"], means.get("lengths"), self.pool_stride))
        else:
            fcn = self.fcn(x, lengths)                                                 # (B, C)
        if self.patch is not None:
            x, lengths = self.patch(x, lengths)                                        # (B, T'/r, C)
        seq, h_n = self.encoder(x, state, lengths=lengths)                             # (B, T'', D*H)
        return seq, (h_n, lengths, fcn)

    def readout(self, seq, encoded, inputs):
        """``encoded`` is encode()'s (h_n, GRU-step lengths, FCN features); a bare h_n (a streaming session's
        state) is accepted for a model without front end (conv_channels=0, gru_steps=0)."""
        if isinstance(encoded, torch.Tensor):
            encoded = (encoded, inputs.get("lengths"), None)
        h_n, lengths, fcn = encoded
        feats = self.pool(seq, h_n, lengths)                                           # (B, D*H)
        if fcn is not None:
            feats = torch.cat([feats, fcn], dim=-1)                                    # (B, D*H + C)
        if stats_width(self.meta):
            feats = torch.cat([feats, inputs["stats"].to(feats.dtype)], dim=-1)        # (B, E + S)
        if "length_stat" in self.meta:                                                 # steps read so far
            x, n = inputs["x"], inputs.get("lengths")
            n = torch.full(x.shape[:1], x.shape[1], device=x.device) if n is None else n
            c, s = self.meta["length_stat"]
            z = ((n.to(feats.dtype).clamp_min(1).log() - c) / s).clamp(-STATS_CLIP, STATS_CLIP)
            feats = torch.cat([feats, z[:, None]], dim=-1)                             # (B, E + S + 1)
        return self.head(feats)                                                        # (B, K) logits

    def forward(self, inputs, state=None):
        seq, encoded = self.encode(inputs, state)
        return self.readout(seq, encoded, inputs), encoded[0]

    @property
    def streamable(self) -> bool:
        """Whether frames can be fed one at a time (a serving session): only a unidirectional plain GRU on
        training-set feature scaling; the convolutional parts and per-series scaling need the whole series."""
        c = self.config
        return (self.fcn is None and self.patch is None and self.pool_stride == 1 and not c.bidirectional
                and not self.difference and not self.meta.get("quantiles") and "mean_series" not in self.meta
                and self.meta.get("normalize", "feature") in ("feature", "none"))

    def loss(self, logits, y, inputs):
        """Label-smoothed cross-entropy; ``y`` is (B,) class indices or, with mixup, (B, K) probabilities."""
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def decode(self, logits, inputs=None):
        return torch.softmax(logits, -1)                                   # (B, K) probabilities


Task = ClassifyTask


# ====================================================================== use a trained run
def classify_sequences(models, meta: dict, sequences, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, K), columns in ``meta["classes"]`` order, for ``sequences``: (T_i, F) float
    arrays in raw units, any lengths. The one inference entry point (CLI evaluate/predict, estimators,
    serving); normalises as in training and runs :func:`grukit.tasks.base.infer` (ensembles averaged)."""
    F_ = int(meta["input_size"])
    seqs = []
    for i, s in enumerate(sequences):
        a = np.asarray(s, dtype=np.float32)
        if a.ndim == 1 and F_ == 1:
            a = a[:, None]                                                     # (T,) -> (T, 1)
        if a.ndim != 2 or a.shape[1] != F_ or a.shape[0] < 1:
            raise ShapeError(f"sequence {i} has shape {a.shape}; expected (T, {F_}) with T >= 1")
        if not np.isfinite(a).all():
            t, f = np.argwhere(~np.isfinite(a))[0]
            raise ShapeError(f"sequence {i} has a non-finite value at step {t}, feature {f}; expected finite "
                             "numbers")
        seqs.append(a)
    K = len(meta["classes"])
    if not seqs:
        return np.zeros((0, K), dtype=np.float32)
    seqs = centred(seqs, meta)
    norm = _normalise(seqs, meta)
    batches = loader(_dataset(norm, np.zeros(len(seqs)), _stats(seqs, meta, norm=norm)), batch_size, False)
    return torch.cat(infer(models, batches)).numpy()                           # (N, K)


def _eval_data(run, data):
    cfg = run.config
    if data is not None:
        return read_sequences(data, cfg, "test")
    if names_builtin(cfg.data) or audio.has_split(cfg.data):
        return read_sequences(cfg.data, cfg, "test")
    if cfg.test_data:
        return read_sequences(cfg.test_data, cfg, "test")
    raise DataError("no test data: train with --test-data FILE or pass `grukit evaluate RUN --data FILE`",
                    path=cfg.data)


def _row(yi, pred, seconds):
    from sklearn.metrics import accuracy_score, f1_score
    return {"accuracy": float(accuracy_score(yi, pred)),
            "macro_F1": float(f1_score(yi, pred, average="macro", zero_division=0)),
            "n": float(len(yi)), "seconds": round(float(seconds), 2)}


def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 on the test data, beside the majority class, MiniRocket and 1-NN DTW fitted on
    the same training data (``baselines``); seconds = training plus prediction; confusion-matrix PNG."""
    from sklearn.metrics import confusion_matrix

    from .classify_baselines import fit_predict
    meta = run.meta
    seqs, y, name = _eval_data(run, data)
    check_features(seqs, meta["input_size"], name)
    classes = meta["classes"]
    unknown = sorted(set(y.tolist()) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown[:5]} were not seen in training; expected one of {classes}", path=name)
    yi = np.array([classes.index(c) for c in y])
    t0 = time.perf_counter()
    pred = classify_sequences(models, meta, seqs).argmax(1)
    grukit_s = float(run.info.get("train_seconds", 0.0) or 0.0) + time.perf_counter() - t0
    table = {"grukit": _row(yi, pred, grukit_s)}
    train_seqs, train_y, _ = read_sequences(run.config.data, run.config, "train")
    for row, (p, sec) in fit_predict(tuple(run.config.baselines), train_seqs, np.asarray(train_y), seqs,
                                     run.config.seed).items():
        p_idx = np.array([classes.index(c) if c in classes else -1 for c in np.asarray(p).astype(str)])
        table[row] = _row(yi, p_idx, sec)
    from ..plots import confusion_matrix_plot
    confusion_matrix_plot(confusion_matrix(yi, pred, labels=range(len(classes))), classes,
                          run.path / "plots" / "confusion_matrix.png", title=f"{Path(name).name}: "
                          f"accuracy {table['grukit']['accuracy']:.3f}")
    return table


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Predicted label and class probabilities per sequence, as CSV."""
    from ..runs import atomic_write
    seqs, y, name = read_sequences(data or run.config.data, run.config, "test", need_labels=False)
    check_features(seqs, run.meta["input_size"], name)
    probs = classify_sequences(models, run.meta, seqs)
    classes = run.meta["classes"]
    frame = pd.DataFrame({"sequence": np.arange(len(seqs)), "length": [len(s) for s in seqs],
                          "predicted": [classes[i] for i in probs.argmax(1)]})
    for k, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, k]
    if y is not None:
        frame.insert(3, "label", y)
    out = Path(out) if out else run.path / "predictions.csv"
    return [atomic_write(out, frame.to_csv(index=False))]
