"""Forecast windows: per-series encoding (seasonal adjustment, transform, scaling) and padded, masked lookbacks.

Encoding of a series ``y`` (n, C) in original units, position t counted from the series' first point::

    v = y / season[t mod m]          (only with deseasonalize; factors of one otherwise)
    z = (transform(v) - mean) / std  (transform: none, log, sqrt; mean/std of the training part)

and back. Nothing is clipped: a value the inverse transform cannot represent is an error naming the series.

A window at origin ``o`` holds the ``lookback`` steps before ``o`` and the ``horizon`` steps from ``o``. When
fewer than ``lookback`` steps exist, the window is padded on the left with the first value and its ``mask``
(1 observed, 0 padding) says so; the mask is also an input feature, so one model reads series of any length.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["fwd", "inv", "scaler", "Codec", "window_at", "WindowDataset", "train_origins", "split_origins"]


def fwd(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "sqrt":
        return np.sqrt(y)
    return np.log(y) if transform == "log" else y


def inv(z: np.ndarray, transform: str) -> np.ndarray:
    if transform == "sqrt":
        return np.square(np.maximum(z, 0))          # the square root's range is >= 0
    if transform == "log":
        with np.errstate(over="ignore"):
            return np.exp(z)
    return z


def scaler(z: np.ndarray) -> dict[str, list[float]]:
    mean, std = z.mean(0), z.std(0)
    return {"mean": mean.tolist(), "std": np.where(std > 1e-8, std, 1.0).tolist()}


class Codec:
    """One series' encoding: seasonal factors (m,), transform, scaler; ``encode`` / ``decode`` by position."""

    def __init__(self, transform: str, scale: dict, season: np.ndarray | None = None, sid: str = ""):
        self.transform, self.sid = transform, sid
        self.mean, self.std = np.asarray(scale["mean"], dtype=float), np.asarray(scale["std"], dtype=float)
        self.season = np.asarray(season if season is not None else [1.0], dtype=float)

    def factors(self, positions: np.ndarray) -> np.ndarray:
        return self.season[np.asarray(positions) % len(self.season)][:, None]          # (n, 1)

    def encode(self, y: np.ndarray, start: int = 0) -> np.ndarray:
        v = y / self.factors(np.arange(start, start + len(y)))
        return (fwd(v, self.transform) - self.mean) / self.std

    def decode(self, z: np.ndarray, start: int) -> np.ndarray:
        y = inv(z * self.std + self.mean, self.transform) * self.factors(np.arange(start, start + len(z)))
        if not np.isfinite(y).all():
            raise DataError(f"the forecast of series {self.sid!r} does not fit in float64 after the inverse "
                            f"{self.transform} transform (up to {np.nanmax(np.abs(z * self.std + self.mean)):.3g} "
                            "before it); rescale the data or use --transform none")
        return y


def window_at(z: np.ndarray, cov: np.ndarray, o: int, L: int, H: int, K: int, lookback: int | None = None
              ) -> dict[str, np.ndarray]:
    """The window at origin ``o``: x (L, C+1+K+P) = [targets, mask, covariates], window (L, C), mask (L,),
    known_future (H, K), phase (position of the window's first step); ``lookback`` < L masks the older steps."""
    use = min(L, o, lookback or L)
    w, c = z[o - use:o], cov[o - use:o]
    pad = L - use
    mask = np.r_[np.zeros(pad), np.ones(use)].astype(np.float32)
    if pad:
        w = np.concatenate([np.repeat(w[:1], pad, 0), w])
        c = np.concatenate([np.zeros((pad, cov.shape[1])), c])
    kf = cov[o:o + H, :K]
    x = np.concatenate([w, mask[:, None], c], 1)
    return {"x": x.astype(np.float32), "window": w.astype(np.float32), "mask": mask,
            "known_future": kf.astype(np.float32), "phase": np.int64(o - L)}


def train_origins(end: int, L: int, H: int, max_windows: int = 0) -> np.ndarray:
    """Origins with a full horizon before ``end``: from L (long series) or 1 (short ones: padded lookback);
    with ``max_windows`` > 0 at most that many, evenly spaced over the series and always including the last."""
    last = end - H
    if last < 1:
        return np.zeros(0, dtype=int)
    first = L if last >= L else 1
    o = np.arange(first, last + 1)
    if 0 < max_windows < len(o):
        o = np.unique(o[np.round(np.linspace(0, len(o) - 1, max_windows)).astype(int)])
    return o


def split_origins(end: int, L: int, H: int, max_windows: int = 0, val_fraction: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation origins of one series' first ``end`` points: the last ``val_fraction`` of the
    origins validate, and a training window's targets end before the first validation target (no validation
    target is ever a training target, so the validation loss measures forecasts of unseen points, which early
    stopping and ``grukit tune`` rely on). Training windows then come from the points before the validation
    targets (with a padded lookback where the series is short); a series too short for both trains on all of its
    origins and validates none."""
    origins = train_origins(end, L, H, max_windows)
    n = len(origins)
    n_val = min(n - 1, max(1, math.ceil(val_fraction * n))) if val_fraction > 0 and n > 1 else 0
    if n_val == 0:
        return origins, origins[:0]
    val = origins[n - n_val:]
    train = train_origins(int(val[0]), L, H, max_windows)      # targets [o, o + H) end before val[0]
    if len(train) == 0:
        return origins, origins[:0]
    return train, val


class WindowDataset(Dataset):
    """Windows built on the fly from per-series encoded arrays: item = window_at(...) plus y (H, C) and sid."""

    def __init__(self, zs: list[np.ndarray], covs: list[np.ndarray], index: list[tuple[int, int]], L: int,
                 H: int, K: int, sids: list[int], lookbacks: tuple[int, ...] = (), seed: int = 0):
        self.zs, self.covs, self.index, self.L, self.H, self.K = zs, covs, index, L, H, K
        self.sids, self.lookbacks = sids, tuple(lookbacks)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, o = self.index[i]
        lb = int(self.rng.choice(self.lookbacks)) if self.lookbacks else None   # lookback-ensemble training
        item = window_at(self.zs[s], self.covs[s], o, self.L, self.H, self.K, lb)
        item["y"] = self.zs[s][o:o + self.H].astype(np.float32)
        item["sid"] = np.int64(self.sids[s])
        return item


def to_batch(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack window dicts into a batch of tensors (float32, int64 for ids and phases)."""
    return {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in items[0]}
