r"""Unsupervised anomaly detection: a GRU seq2seq autoencoder on unlabelled windows.

The encoder GRU reads a window of ``window`` steps; its final state becomes a ``latent_size`` code; a decoder
GRU, started from the code and fed the code at every step, reconstructs the window. Anomaly scores are
reconstruction errors: per window (mean squared error) and per time step (the squared error of that step,
averaged over every window that covers it, lightly smoothed). The threshold is a percentile of the training
scores (default 99.9), or the best-F1 threshold on a separate labelled validation series (``threshold=f1`` with
``valid_data``; the test labels never choose it). With labels, evaluation reports per-time-step precision,
recall, F1 and ROC-AUC, the point-adjusted F1 of Xu et al. 2018 (a labelled segment counts as found when any of
its steps is flagged) and the UCR-archive hit (Wu & Keogh 2021: the highest score lies within 100 steps of a
labelled segment), beside a z-score baseline (largest |x - mean| / std over the features, same threshold rule).
"""
from __future__ import annotations

from pathlib import Path

import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import AutoencoderConfig
from ..data.anomaly import read_values, windows
from ..data.batching import DictDataset, Prepared, loader
from ..errors import DataError
from ..nn import GRU
from .base import SequenceTask, infer, write_predictions

__all__ = ["AutoencoderTask", "prepare", "evaluate", "predict", "anomaly_scores", "step_scores", "read_values"]


# ====================================================================== data
def prepare(cfg: AutoencoderConfig) -> Prepared:
    values, labels, times, train_end, roles, path = read_values(cfg, cfg.data)
    if train_end < cfg.window + 2:
        raise DataError(f"too short: the training part has {train_end} rows but window = {cfg.window} needs at "
                        f"least {cfg.window + 2}; lower --window or raise --train-fraction", path=path)
    train = values[:train_end]
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    z = (train - mean) / std
    wins = windows(z, cfg.window, cfg.stride)
    n_val = int(round(cfg.val_fraction * len(wins))) if len(wins) > 4 else 0       # the last windows validate
    meta = {"input_size": len(roles["columns"]), "roles": roles, "mean": mean.tolist(), "std": std.tolist(),
            "train_end": train_end, "data_name": path, "has_val": n_val > 0}
    tr = DictDataset(x=wins[: len(wins) - n_val])
    va = DictDataset(x=wins[len(wins) - n_val:]) if n_val else None
    return Prepared(loader(tr, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(va, cfg.batch_size, False, cfg.num_workers) if va else None, meta)


# ====================================================================== model
class _Decoder(nn.Module):
    """Code (B, Z) -> reconstruction (B, T, F): a GRU started from and fed with the code."""

    def __init__(self, latent: int, hidden: int, out: int, num_layers: int):
        super().__init__()
        self.init = nn.Linear(latent, hidden * num_layers)
        self.gru = GRU(latent, hidden, num_layers, batch_first=True)
        self.out = nn.Linear(hidden, out)
        self.num_layers, self.hidden = num_layers, hidden

    def forward(self, code, T: int):
        B = code.shape[0]
        h0 = torch.tanh(self.init(code)).view(B, self.num_layers, self.hidden).transpose(0, 1).contiguous()
        inp = code.unsqueeze(1).expand(B, T, code.shape[-1])                     # (B, T, Z)
        seq, _ = self.gru(inp, h0)                                              # (B, T, H)
        return self.out(seq)                                                    # (B, T, F)


class AutoencoderTask(SequenceTask):
    """Encoder GRU -> latent code -> decoder GRU; loss = mean squared reconstruction error."""

    task_name = "autoencoder"

    def build_head(self):
        c = self.config
        self.to_code = nn.Linear(self.encoder_size, c.latent_size)
        return _Decoder(c.latent_size, c.hidden_size, int(self.meta["input_size"]), c.num_layers)

    def batch_to_inputs(self, batch):
        return batch, batch["x"]

    def readout(self, seq, h_n, inputs):
        h = torch.cat([h_n[-2], h_n[-1]], -1) if self.config.bidirectional else h_n[-1]   # (B, D*H)
        code = torch.tanh(self.to_code(h))                                      # (B, Z)
        return self.head(code, inputs["x"].shape[1])                            # (B, T, F)

    def loss(self, recon, x, inputs):
        return F.mse_loss(recon, x)

    def decode(self, recon, inputs):
        return ((recon - inputs["x"]) ** 2).sum(-1)                             # (B, T) per-step error


Task = AutoencoderTask


# ====================================================================== scoring
def step_scores(models, values: np.ndarray, meta: dict, cfg: AutoencoderConfig,
                batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-step scores (n,) and per-window scores (n - window + 1,), windows at stride 1."""
    z = ((values - np.asarray(meta["mean"])) / np.asarray(meta["std"])).astype(np.float32)
    W = cfg.window
    if len(z) < W:
        raise DataError(f"too short: {len(z)} rows but the model reads windows of {W}", path=meta["data_name"])
    wins = windows(z, W, 1)                                                     # (N, W, F)
    batches = ({"x": torch.from_numpy(wins[i:i + batch_size])} for i in range(0, len(wins), batch_size))
    errs = [e.numpy() for e in infer(models, batches)]                          # (B, W) each; ensemble mean
    err = np.concatenate(errs)                                                  # (N, W)
    total, count = np.zeros(len(z)), np.zeros(len(z))
    for k in range(W):                                                          # step s = window start + k
        total[k:k + len(err)] += err[:, k]
        count[k:k + len(err)] += 1
    per_step = total / count
    width = cfg.smooth or max(1, W // 16)
    if width > 1:
        per_step = np.convolve(per_step, np.ones(width) / width, mode="same")
    return per_step, err.mean(1)


def anomaly_scores(models, meta: dict, config: AutoencoderConfig, values: np.ndarray, *,
                   threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """THE autoencoder inference entry point: per-step anomaly scores (n,) of ``values`` (n, F) (raw units, the
    training columns) and their flags (n,) bool, ``score > threshold``.

    ``threshold`` defaults to ``meta["threshold"]`` when present (a run's ``run.info["threshold"]``, set by
    its evaluation, is what ``grukit predict`` passes), else the ``config.percentile`` percentile of these
    scores. Windows at stride 1 go through :func:`~grukit.tasks.base.infer` (an ensemble averages errors).
    """
    values = np.asarray(values, dtype=np.float64)
    F_ = int(meta["input_size"])
    if values.ndim != 2 or values.shape[1] != F_:
        from ..errors import ShapeError
        raise ShapeError(f"values of shape {tuple(values.shape)}; expected (n, {F_}): the columns "
                         f"{', '.join(meta['roles']['columns'])}")
    scores, _ = step_scores(models, values, meta, config)
    if threshold is None:
        threshold = meta.get("threshold")
    if threshold is None:
        threshold = float(np.percentile(scores, config.percentile))
    return scores, scores > float(threshold)


def zscore_scores(values: np.ndarray, meta: dict) -> np.ndarray:
    """The baseline: the largest |x - mean| / std over features, with training statistics."""
    return np.abs((values - np.asarray(meta["mean"])) / np.asarray(meta["std"])).max(1)


def _best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve
    p, r, t = precision_recall_curve(labels, scores)
    f1 = 2 * p * r / np.clip(p + r, 1e-12, None)
    return float(t[int(np.argmax(f1[:-1]))])


def _thresholds(run, models, cfg: AutoencoderConfig, scores: np.ndarray, z: np.ndarray,
                train_end: int) -> tuple[float, float]:
    """(grukit, z-score) thresholds: a percentile of the training part, or best F1 on ``cfg.valid_data``."""
    if cfg.threshold == "f1":
        values, labels, _, _, _, path = read_values(cfg, cfg.valid_data, run.meta["roles"])
        if labels is None or not labels.any() or labels.all():
            raise DataError("threshold=f1 needs both normal and anomalous labelled steps in the validation "
                            "series", path=path)
        v_scores, _ = step_scores(models, values, run.meta, cfg)
        return (_best_f1_threshold(labels, v_scores),
                _best_f1_threshold(labels, zscore_scores(values, run.meta)))
    return (float(np.percentile(scores[:train_end], cfg.percentile)),
            float(np.percentile(z[:train_end], cfg.percentile)))


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of nonzero labels."""
    edges = np.diff(np.concatenate([[0], (np.asarray(labels) > 0).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def point_adjusted_f1(labels: np.ndarray, flagged: np.ndarray) -> float:
    """F1 after marking a whole labelled segment as flagged when any of its steps is (Xu et al. 2018)."""
    labels, adj = np.asarray(labels) > 0, np.asarray(flagged, bool).copy()
    for a, b in segments(labels):
        if adj[a:b].any():
            adj[a:b] = True
    tp = int((adj & labels).sum())
    return 2 * tp / max(int(adj.sum()) + int(labels.sum()), 1)


def ucr_hit(labels: np.ndarray, scores: np.ndarray, margin: int = 100) -> float:
    """1.0 when the highest score lies within ``margin`` steps of a labelled segment (the UCR archive rule)."""
    top = int(np.argmax(scores))
    return float(any(a - margin <= top < b + margin for a, b in segments(labels)))


def _detection_metrics(labels, scores, threshold) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
    flagged = scores > threshold
    out = {"precision": float(precision_score(labels, flagged, zero_division=0)),
           "recall": float(recall_score(labels, flagged, zero_division=0)),
           "F1": float(f1_score(labels, flagged, zero_division=0)),
           "PA_F1": point_adjusted_f1(labels, flagged),
           "ROC_AUC": float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan"),
           "UCR_hit": ucr_hit(labels, scores),
           "flagged": float(flagged.mean())}
    return out


def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """Detection metrics after the training part (if labelled) beside the z-score baseline."""
    cfg, meta = run.config, run.meta
    values, labels, times, train_end, _, path = read_values(cfg, data or cfg.data, meta["roles"])
    if data is not None:
        train_end = meta["train_end"] if len(values) > meta["train_end"] else 0
    scores, _ = step_scores(models, values, meta, cfg)
    z = zscore_scores(values, meta)
    if train_end < 1 and cfg.threshold != "f1":                  # a new series: keep the training threshold
        thr, thr_z = run.info.get("threshold"), run.info.get("threshold_zscore")
        if thr is None:
            raise DataError("this series has no training part to take a percentile of and the run stores no "
                            "threshold; evaluate on the training data first or pass threshold=f1", path=path)
    else:
        thr, thr_z = _thresholds(run, models, cfg, scores, z, max(train_end, 1))
        if data is None:
            run.update_info(threshold=thr, threshold_zscore=thr_z)
    from ..plots import anomaly_plot
    anomaly_plot(values, scores, thr, scores > thr, run.path / "plots" / "anomaly.png", labels, times,
                 title=f"{Path(path).name}: flagged (red) and labelled (green)")
    test = slice(train_end, None)
    if labels is not None and not labels[test].any():
        warnings.warn(f"{path}: the label column {meta['roles']['label_col']!r} has no anomalous (1) row after "
                      f"the training part (rows {train_end + 1}-{len(labels)}); precision, recall and F1 cannot be "
                      "computed, only the threshold and the flagged fraction are reported", stacklevel=2)
    if labels is None or not labels[test].any():
        return {"grukit": {"threshold": thr, "flagged": float((scores[test] > thr).mean())},
                "zscore": {"threshold": thr_z, "flagged": float((z[test] > thr_z).mean())}}
    return {"grukit": {**_detection_metrics(labels[test], scores[test], thr), "threshold": thr},
            "zscore": {**_detection_metrics(labels[test], z[test], thr_z), "threshold": thr_z}}


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Per-step anomaly score and flag (CSV) and a PNG marking the flagged regions."""
    from ..plots import anomaly_plot
    cfg, meta = run.config, run.meta
    values, labels, times, _, roles, path = read_values(cfg, data or cfg.data, meta["roles"])
    thr = run.info.get("threshold")
    if thr is None:
        metrics_file = run.path / "metrics.json"
        thr = float(pd.read_json(metrics_file).loc["threshold", "grukit"]) if metrics_file.is_file() else None
    scores, flags = anomaly_scores(models, meta, cfg, values, threshold=thr)
    thr = thr if thr is not None else float(np.percentile(scores, cfg.percentile))
    frame = pd.DataFrame({"step": np.arange(len(values)), "score": scores, "anomaly": flags.astype(int)})
    if times is not None:
        frame.insert(1, roles["time_col"], np.asarray(times))
    out = Path(out) if out else run.path / "predictions.csv"
    paths = [write_predictions(frame, out)]
    paths.append(anomaly_plot(values, scores, thr, scores > thr, out.with_suffix(".png"), labels, times))
    return paths
