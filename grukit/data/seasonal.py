"""Seasonality test and classical multiplicative decomposition, as the M4 competition's benchmarks use them.

The test is the one of the M4 benchmark code (R ``SeasonalityTest``): a series of length n is seasonal with
period m when its lag-m autocorrelation exceeds 1.645 * sqrt((1 + 2 * sum_{k<m} acf_k^2) / n) (90% one-sided).
The decomposition is R's ``decompose(type = "multiplicative")``: a centred moving average of order m (2 x m
for even m) as trend, the mean ratio y / trend at each position of the period as seasonal index, normalised to
a mean of one. Positions count from the series' first point (``t mod m``). A series with zeros or negative
values (solar power at night, temperatures, counts) cannot be divided by indices: :func:`seasonal_adjustment`
gives it R's ``decompose(type = "additive")`` instead, the mean difference y - trend at each position,
normalised to a mean of zero, subtracted rather than divided.
"""
from __future__ import annotations

import numpy as np

__all__ = ["acf", "seasonality_test", "seasonal_indices", "seasonal_offsets", "seasonal_factors",
           "seasonal_adjustment"]


def acf(y: np.ndarray, k: int) -> float:
    """Sample autocorrelation at lag ``k`` (the biased estimator R's ``acf`` uses)."""
    y = np.asarray(y, dtype=float)
    d = y - y.mean()
    den = float((d * d).sum())
    if den == 0 or k >= len(y):
        return 0.0
    return float((d[k:] * d[:-k]).sum() / den)


def seasonality_test(y: np.ndarray, m: int) -> bool:
    """M4's 90% test for seasonality of period ``m``; False for m <= 1 or fewer than 3 periods of data."""
    y = np.asarray(y, dtype=float)
    if m <= 1 or len(y) < 3 * m:
        return False
    r = np.array([acf(y, k) for k in range(1, m + 1)])          # acf_1 .. acf_m
    limit = 1.645 * np.sqrt((1 + 2 * np.sum(r[:-1] ** 2)) / len(y))
    return bool(abs(r[-1]) > limit)


def _detrended(y: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions t, trend at t): the centred moving average of order m (2 x m for even m)."""
    w = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    trend = np.convolve(y, w, mode="valid")                      # centred: trend[j] belongs to t = j + len(w)//2
    start = len(w) // 2
    return np.arange(start, start + len(trend)), trend


def seasonal_indices(y: np.ndarray, m: int) -> np.ndarray:
    """The m multiplicative seasonal indices (mean 1) of a positive series; position i is ``t mod m == i``."""
    y = np.asarray(y, dtype=float)
    t, trend = _detrended(y, m)
    ratio = y[t] / trend
    idx = np.array([ratio[(t % m) == i].mean() if np.any((t % m) == i) else 1.0 for i in range(m)])
    idx = np.where(np.isfinite(idx) & (idx > 0), idx, 1.0)
    return idx / idx.mean() if len(y) else idx


def seasonal_offsets(y: np.ndarray, m: int) -> np.ndarray:
    """The m additive seasonal components (mean 0) of any series; position i is ``t mod m == i``."""
    y = np.asarray(y, dtype=float)
    t, trend = _detrended(y, m)
    diff = y[t] - trend
    off = np.array([diff[(t % m) == i].mean() if np.any((t % m) == i) else 0.0 for i in range(m)])
    off = np.where(np.isfinite(off), off, 0.0)
    return off - off.mean()


def seasonal_factors(y: np.ndarray, m: int, test: bool = True) -> np.ndarray:
    """Seasonal indices to divide ``y`` by: the classical ones when ``y`` is positive, ``m > 1`` and (with
    ``test``) the seasonality test passes; ones otherwise (shape (m,) or (1,))."""
    y = np.asarray(y, dtype=float)
    if m <= 1 or len(y) < 2 * m + 1 or not (y > 0).all() or (test and not seasonality_test(y, m)):
        return np.ones(max(m, 1))
    return seasonal_indices(y, m)


def seasonal_adjustment(y: np.ndarray, m: int, test: bool = True) -> tuple[str, np.ndarray]:
    """``("mul", indices)`` to divide ``y`` by, as :func:`seasonal_factors`, for a positive series; for one with
    zeros or negative values that is long enough and (with ``test``) passes the seasonality test,
    ``("add", offsets)`` to subtract; ``("mul", ones)`` when there is no season to remove."""
    y = np.asarray(y, dtype=float)
    if m <= 1 or len(y) < 2 * m + 1 or (y > 0).all() or (test and not seasonality_test(y, m)):
        return "mul", seasonal_factors(y, m, test)
    return "add", seasonal_offsets(y, m)
