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

__all__ = ["fwd", "inv", "scaler", "Codec", "window_at", "WindowDataset", "train_origins", "split_origins",
           "needs_fill", "fold_shifts"]


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


def train_origins(end: int, L: int, H: int, max_windows: int = 0, fill: bool = False) -> np.ndarray:
    """Origins with a full horizon before ``end``: from L (every lookback full), or from 1 where no full lookback
    fits (short series: padded lookbacks). ``fill`` (scarce data, :func:`needs_fill`): at least L origins where
    the series has them, the last L, the earliest with padded lookbacks, instead of the few full ones alone.
    ``max_windows`` > 0: at most that many, evenly spaced over the series and always including the last."""
    last = end - H
    if last < 1:
        return np.zeros(0, dtype=int)
    first = L if last - L + 1 >= (L if fill else 1) else max(1, last - L + 1)
    o = np.arange(first, last + 1)
    if 0 < max_windows < len(o):
        o = np.unique(o[np.round(np.linspace(0, len(o) - 1, max_windows)).astype(int)])
    return o


def split_origins(end: int, L: int, H: int, max_windows: int = 0, val_fraction: float = 0.0, fill: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation origins of one series' first ``end`` points: the last ``val_fraction`` of the
    origins validate, and a training window's targets end before the first validation target (no validation
    target is ever a training target, so the validation loss measures forecasts of unseen points, which early
    stopping and ``grukit tune`` rely on). Training windows then come from the points before the validation
    targets (with a padded lookback where the series is short; ``fill``: see :func:`train_origins`); a series too
    short for both trains on all of its origins and validates none."""
    origins = train_origins(end, L, H, max_windows, fill)
    n = len(origins)
    n_val = min(n - 1, max(1, math.ceil(val_fraction * n))) if val_fraction > 0 and n > 1 else 0
    if n_val == 0:
        return origins, origins[:0]
    val = origins[n - n_val:]
    train = train_origins(int(val[0]), L, H, max_windows, fill)      # targets [o, o + H) end before val[0]
    if len(train) == 0:
        return origins, origins[:0]
    return train, val


def needs_fill(ends: list[int], L: int, H: int, max_windows: int = 0, val_fraction: float = 0.0) -> bool:
    """Whether the series (their first ``ends`` points) give fewer training windows with a full lookback than
    the lookback has steps, all together: then each series trains on at least L windows, the earliest padded
    (``fill``). A single series just long enough for a few full lookbacks (lynx at the defaults: 90 points,
    lookback 36, horizon 24) otherwise trained on those few alone, one window for lynx; a panel with data to
    spare keeps its full windows only (M4 Weekly: filling its short series with padded windows lost 0.018 OWA)."""
    full = 0
    for e in ends:                                     # stops at the first L windows (a large panel: a few series)
        full += int((split_origins(e, L, H, max_windows, val_fraction)[0] >= L).sum())
        if full >= L:
            return False
    return True


def _need(end: int, n: int) -> str:
    return f"need at least {n} points" if end < n else "do not all fit"


def _fold_windows(end: int, L: int, H: int, max_windows: int, val_fraction: float, fill: bool = False) -> int:
    """Training windows of a fold whose data end at ``end`` (0 when it has no validation window)."""
    train, val = split_origins(end, L, H, max_windows, val_fraction, fill)
    return len(train) if len(val) else 0


def fold_shifts(end: int, L: int, H: int, k: int, step: int = 0, max_windows: int = 0, val_fraction: float = 0.2,
                name: str = "the series", fill: bool = False) -> list[int]:
    """Rolling-origin validation folds of one series' first ``end`` points: the points each fold drops from the
    end, ``[0, step, 2 step, ...]`` (k of them; the first is the normal split). Fold ``j`` is split by
    :func:`split_origins` on the first ``end - j * step`` points, so its validation windows end ``j * step``
    points before the normal ones and its model trains only on points before its own validation targets.

    ``step`` 0: the horizon when the earliest fold still keeps at least half of the normal fold's training
    windows, else the largest step below it that does, else the largest that leaves every fold a training window
    (short series: the folds then differ by a few points, which still averages the validation over k separately
    trained models and cutoffs). A ``k`` or ``step`` that
    leaves the earliest fold without a training or a validation window is a :class:`ConfigError` naming the
    series length and the length needed. ``fill``: as :func:`split_origins`.
    """
    from ..errors import ConfigError
    if k < 1:
        raise ConfigError(f"val_origins={k}: expected at least 1 fold")
    if k == 1:
        return [0]
    if val_fraction <= 0:
        raise ConfigError(f"val_origins={k} needs a validation split in each fold: set val_fraction > 0")
    least = next((e for e in range(1, end + 1) if _fold_windows(e, L, H, max_windows, val_fraction, fill)), None)
    if least is None:
        raise ConfigError(f"val_origins={k}: {name} has {end} points before the held-out test part, too few for "
                          f"one training and one validation window (horizon {H}); use val_origins=1")

    def empty_fold(s: int) -> int | None:
        """The end of the first fold with no training or validation window at step ``s`` (None: all fit)."""
        return next((end - j * s for j in range(k) if not _fold_windows(end - j * s, L, H, max_windows,
                                                                         val_fraction, fill)), None)
    if step == 0:
        keep = (_fold_windows(end, L, H, max_windows, val_fraction, fill) + 1) // 2
        step = next((s for s in range(H, 0, -1) if empty_fold(s) is None and min(
            _fold_windows(end - j * s, L, H, max_windows, val_fraction, fill) for j in range(k)) >= keep), 0) or \
            next((s for s in range(H, 0, -1) if empty_fold(s) is None), 0)
        if step == 0:
            raise ConfigError(f"val_origins={k}: {name} has {end} points before the held-out test part; {k} folds "
                              f"ending 1 point apart {_need(end, least + k - 1)}, each with a training and a "
                              f"validation window (the fold ending at point {empty_fold(1)} has none; a fold needs "
                              f"{least} or more points); lower val_origins")
    bad = empty_fold(step)
    if bad is not None:
        raise ConfigError(f"val_origins={k}, val_step={step}: {name} has {end} points before the held-out test "
                          f"part; {k} folds {step} apart {_need(end, least + (k - 1) * step)}, each with a "
                          f"training and a validation window (the fold ending at point {bad} has none; a fold "
                          f"needs {least} or more points); lower val_origins or val_step")
    return [j * step for j in range(k)]


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
