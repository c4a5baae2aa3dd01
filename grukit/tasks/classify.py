"""Sequence classification: a (bi)GRU over variable-length sequences, pooled, then a small MLP.

Inputs: ``.npz`` with ``X`` (N, T, F) (or (N, T)), optional ``lengths`` (N,) and ``y`` (N,); a long-format CSV
(``id_col``, ``time_col``, feature columns..., ``label_col``); a ``.ts`` file (sktime/aeon); a built-in set; or
audio (a folder of ``label_speaker_index.wav`` files or class sub-folders, or a path,label manifest), read as
log-mel frames by :func:`grukit.data.audio.labelled_features`.
Sequences keep their own lengths: padding goes to the GRU with ``lengths``, so it never enters a state, and
pooling masks it. Metrics: accuracy and macro-F1 (torchmetrics), confusion-matrix PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import ClassifyConfig
from ..data import audio, builtin
from ..data.batching import DictDataset, Prepared, loader
from ..data.timeseries import numeric, read_table, require_columns
from ..errors import DataError
from .base import SequenceTask
from .heads import ClassificationHead, Pooling

__all__ = ["ClassifyTask", "prepare", "evaluate", "predict", "read_sequences"]


# ====================================================================== data
def read_sequences(data: str, cfg: ClassifyConfig, split: str = "train", need_labels: bool = True
                   ) -> tuple[list[np.ndarray], np.ndarray | None, str]:
    """(sequences (T_i, F) float32, labels as strings or None, display name) from a file or built-in set."""
    if audio.is_audio_source(data):              # audio folder or manifest: log-mel features (grukit.data.audio)
        return audio.labelled_features(data, split)
    p = Path(data)
    if not p.exists() and builtin.is_builtin(data):
        seqs, y = builtin.get(data, "classify").loader(split)
        return seqs, y, data
    if not p.exists():
        if p.suffix == "":
            builtin.get(data, "classify")
        raise DataError("file not found", path=p)
    if p.stat().st_size == 0:
        raise DataError("the file is empty", path=p)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        seqs, y = _read_npz(p, need_labels)
    elif suffix == ".ts":
        seqs, y = _read_ts(p)
    elif suffix in (".csv", ".parquet", ".pq"):
        seqs, y = _read_long(p, cfg, need_labels)
    else:
        raise DataError(f"unknown file type {suffix!r}; expected .npz, .csv, .parquet or .ts", path=p)
    if need_labels and y is None:
        raise DataError("no labels; expected y (npz) or the label column (CSV)", path=p)
    return seqs, y, str(p)


def _read_npz(p: Path, need_labels: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    try:
        z = np.load(p, allow_pickle=False)
        files = set(z.files)
    except ValueError as e:
        raise DataError(f"cannot be read without unpickling ({e}); store X as a padded float array "
                        "(N, T, F) with a lengths array", path=p) from None
    except Exception as e:  # noqa: BLE001 - zip/format errors
        raise DataError(f"not a readable .npz file: {e}", path=p) from None
    if "X" not in files:
        from ..errors import nearest
        raise DataError(f"no array 'X'{nearest('X', files)}; expected X (N, T, F), y (N,) and optionally "
                        f"lengths (N,); found {', '.join(sorted(files)) or 'nothing'}", path=p)
    try:
        X = np.asarray(z["X"])
    except ValueError as e:
        raise DataError(f"array X cannot be loaded without unpickling ({e}); store it padded (N, T, F) with "
                        "lengths", path=p) from None
    if X.ndim == 2:
        X = X[:, :, None]                                                   # (N, T) -> (N, T, 1)
    if X.ndim != 3 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X has shape {X.shape}; expected (N, T, F) with N, T >= 1", path=p, column="X")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"X has dtype {X.dtype}; expected numbers", path=p, column="X")
    N, T, _ = X.shape
    if "lengths" in files:
        lengths = np.asarray(z["lengths"])
        if lengths.shape != (N,):
            raise DataError(f"inconsistent sequence lengths: lengths has shape {lengths.shape} but X holds {N} "
                            f"sequences; expected shape ({N},)", path=p, column="lengths")
        if not np.issubdtype(lengths.dtype, np.integer) or lengths.min() < 1 or lengths.max() > T:
            bad = int(np.flatnonzero((lengths < 1) | (lengths > T))[0]) if np.issubdtype(
                lengths.dtype, np.number) and ((lengths < 1) | (lengths > T)).any() else 0
            raise DataError(f"inconsistent sequence lengths: lengths[{bad}] = {lengths[bad]}; expected integers "
                            f"in [1, {T}] (the padded length of X)", path=p, column="lengths")
    else:
        lengths = np.full(N, T)
    seqs = []
    for i in range(N):
        s = X[i, : int(lengths[i])].astype(np.float32)
        bad = ~np.isfinite(s)
        if bad.any():
            t, f = np.argwhere(bad)[0]
            raise DataError(f"non-finite value in X[{i}, {t}, {f}] (sequence {i}, step {t}, feature {f}); "
                            "expected finite numbers (impute or shorten via lengths)", path=p, column="X")
        seqs.append(s)
    y = None
    if "y" in files:
        y = np.asarray(z["y"]).astype(str).reshape(-1)
        if len(y) != N:
            raise DataError(f"y has {len(y)} labels but X holds {N} sequences; expected one label per sequence",
                            path=p, column="y")
    elif need_labels:
        raise DataError("no array 'y' (labels); expected y (N,)", path=p)
    return seqs, y


def _read_ts(p: Path) -> tuple[list[np.ndarray], np.ndarray]:
    from aeon.datasets import load_from_ts_file
    try:
        X, y = load_from_ts_file(str(p))
    except Exception as e:  # noqa: BLE001 - the .ts parser's many errors
        raise DataError(f"cannot be read as a .ts file: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                        path=p) from None
    seqs = [np.asarray(x, dtype=np.float32).T for x in X]                   # (F, T) -> (T, F)
    for i, s in enumerate(seqs):
        if not np.isfinite(s).all():
            raise DataError(f"missing or non-finite value in case {i + 1}; expected finite numbers", path=p)
    return seqs, np.asarray(y).astype(str)


def _read_long(p: Path, cfg: ClassifyConfig, need_labels: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    df = read_table(p)
    has_label = cfg.label_col in df.columns
    require_columns(df, [cfg.id_col, cfg.time_col] + ([cfg.label_col] if need_labels else []), p)
    feats = [c for c in df.columns if c not in (cfg.id_col, cfg.time_col, cfg.label_col)]
    if not feats:
        raise DataError(f"no feature columns besides {cfg.id_col!r}, {cfg.time_col!r} and {cfg.label_col!r}",
                        path=p)
    values = np.stack([numeric(df, c, p) for c in feats], 1)                 # (rows, F)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError("missing or infinite feature value; expected finite numbers", path=p, line=int(r) + 2,
                        column=feats[c])
    t = numeric(df, cfg.time_col, p)
    seqs, labels = [], []
    for sid, idx in df.groupby(cfg.id_col, sort=False).indices.items():
        idx = idx[np.argsort(t[idx], kind="stable")]
        seqs.append(values[idx].astype(np.float32))
        if has_label:
            lab = df[cfg.label_col].iloc[idx].astype(str)
            if lab.nunique() > 1:
                r = int(idx[np.flatnonzero(lab.to_numpy() != lab.iloc[0])[0]])
                raise DataError(f"sequence {sid!r} has more than one label ({', '.join(lab.unique()[:3])}); "
                                "expected one label per sequence", path=p, line=r + 2, column=cfg.label_col)
            labels.append(lab.iloc[0])
    return seqs, (np.asarray(labels) if has_label else None)


def _check_features(seqs: list[np.ndarray], F_: int | None, name: str) -> int:
    widths = {s.shape[1] for s in seqs}
    if len(widths) > 1 or (F_ is not None and widths != {F_}):
        want = F_ if F_ is not None else min(widths)
        bad = next(i for i, s in enumerate(seqs) if s.shape[1] != want)
        raise DataError(f"sequence {bad} has {seqs[bad].shape[1]} features; expected {want} like the "
                        f"{'training data' if F_ is not None else 'others'}", path=name)
    return widths.pop()


def _normalise(seqs, meta):
    mean, std = np.asarray(meta["feature_mean"], np.float32), np.asarray(meta["feature_std"], np.float32)
    return [(s - mean) / std for s in seqs]


def _dataset(seqs, y_idx):
    return DictDataset(x=seqs, lengths=np.array([len(s) for s in seqs]), y=np.asarray(y_idx, dtype=np.int64))


def prepare(cfg: ClassifyConfig) -> Prepared:
    seqs, y, name = read_sequences(cfg.data, cfg, "train")
    n_feat = _check_features(seqs, None, name)
    classes = sorted(set(y.tolist()), key=lambda c: (len(c), c) if c.isdigit() else (0, c))
    if len(classes) < 2:
        raise DataError(f"only one class ({classes[0]!r}); classification needs at least two", path=name)
    idx = {c: i for i, c in enumerate(classes)}
    y_idx = np.array([idx[c] for c in y])
    rng = np.random.default_rng(cfg.seed)
    val = []
    if cfg.val_fraction > 0:                                              # stratified hold-out
        for k in range(len(classes)):
            members = rng.permutation(np.flatnonzero(y_idx == k))
            val += members[: int(round(cfg.val_fraction * len(members)))].tolist()
    val_set = set(val)
    train = [i for i in range(len(seqs)) if i not in val_set]
    cat = np.concatenate([seqs[i] for i in train])
    meta = {"input_size": n_feat, "classes": classes, "data_name": name, "has_val": bool(val),
            "feature_mean": (cat.mean(0) if cfg.normalize else np.zeros(n_feat)).tolist(),
            "feature_std": (np.where(cat.std(0) > 1e-8, cat.std(0), 1) if cfg.normalize else np.ones(n_feat)).tolist(),
            "n_train": len(train), "n_val": len(val), "max_length": int(max(len(s) for s in seqs))}
    norm = _normalise(seqs, meta)
    tr = _dataset([norm[i] for i in train], y_idx[train])
    va = _dataset([norm[i] for i in val], y_idx[val]) if val else None
    return Prepared(loader(tr, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(va, cfg.batch_size, False, cfg.num_workers) if va else None, meta)


# ====================================================================== model
class ClassifyTask(SequenceTask):
    """GRU encoder, :class:`~grukit.tasks.heads.Pooling` over valid steps, MLP classifier."""

    task_name = "classify"

    def build_head(self):
        c = self.config
        self.pool = Pooling(c.pooling, self.encoder_size, c.bidirectional)
        return ClassificationHead(self.encoder_size, len(self.meta["classes"]), c.head_dropout)

    def build_metrics(self):
        from torchmetrics import Accuracy, F1Score, MetricCollection
        k = len(self.meta["classes"])
        return MetricCollection({"acc": Accuracy("multiclass", num_classes=k),
                                 "f1": F1Score("multiclass", num_classes=k, average="macro")})

    def readout(self, seq, h_n, inputs):
        return self.head(self.pool(seq, h_n, inputs.get("lengths")))       # (B, K) logits

    def loss(self, logits, y, inputs):
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def decode(self, logits, inputs=None):
        return torch.softmax(logits, -1)                                   # (B, K) probabilities


Task = ClassifyTask


# ====================================================================== use a trained run
def _probs(models, seqs, meta, batch_size=256) -> np.ndarray:
    norm = _normalise(seqs, meta)
    ds = _dataset(norm, np.zeros(len(norm)))
    out = []
    with torch.no_grad():
        for batch in loader(ds, batch_size, False):
            out.append(np.mean([m.decode(m(batch)[0]).numpy() for m in models], axis=0))
    return np.concatenate(out)


def _eval_data(run, data):
    cfg = run.config
    if data is not None:
        return read_sequences(data, cfg, "test")
    if (builtin.is_builtin(cfg.data) and not Path(cfg.data).exists()) or audio.has_split(cfg.data):
        return read_sequences(cfg.data, cfg, "test")
    if cfg.test_data:
        return read_sequences(cfg.test_data, cfg, "test")
    raise DataError("no test data: train with --test-data FILE or pass `grukit evaluate RUN --data FILE`",
                    path=cfg.data)


def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 on the test data, beside the majority class; confusion-matrix PNG."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    meta = run.meta
    seqs, y, name = _eval_data(run, data)
    _check_features(seqs, meta["input_size"], name)
    classes = meta["classes"]
    unknown = sorted(set(y.tolist()) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown[:5]} were not seen in training; expected one of {classes}", path=name)
    yi = np.array([classes.index(c) for c in y])
    pred = _probs(models, seqs, meta).argmax(1)
    major = np.full_like(yi, int(np.argmax(np.bincount(yi, minlength=len(classes)))))
    table = {"grukit": {"accuracy": float(accuracy_score(yi, pred)),
                        "macro_F1": float(f1_score(yi, pred, average="macro")), "n": float(len(yi))},
             "majority_class": {"accuracy": float(accuracy_score(yi, major)),
                                "macro_F1": float(f1_score(yi, major, average="macro", zero_division=0)),
                                "n": float(len(yi))}}
    from ..plots import confusion_matrix_plot
    confusion_matrix_plot(confusion_matrix(yi, pred, labels=range(len(classes))), classes,
                          run.path / "plots" / "confusion_matrix.png", title=f"{Path(name).name}: "
                          f"accuracy {table['grukit']['accuracy']:.3f}")
    return table


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Predicted label and class probabilities per sequence, as CSV."""
    from ..runs import atomic_write
    seqs, y, name = read_sequences(data or run.config.data, run.config, "test", need_labels=False)
    _check_features(seqs, run.meta["input_size"], name)
    probs = _probs(models, seqs, run.meta)
    classes = run.meta["classes"]
    frame = pd.DataFrame({"sequence": np.arange(len(seqs)), "length": [len(s) for s in seqs],
                          "predicted": [classes[i] for i in probs.argmax(1)]})
    for k, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, k]
    if y is not None:
        frame.insert(3, "label", y)
    out = Path(out) if out else run.path / "predictions.csv"
    return [atomic_write(out, frame.to_csv(index=False))]
