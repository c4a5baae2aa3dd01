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

__all__ = ["acf", "seasonality_test", "season_from_values", "SEASON_CANDIDATES", "seasonal_indices",
           "seasonal_offsets", "seasonal_factors", "seasonal_adjustment"]


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


SEASON_CANDIDATES = (4, 7, 12, 24)   # quarterly, daily (a week), monthly, hourly (a day): the usual periods
MAX_TESTED = 500                     # series the panel's test reads, at most (evenly spaced)
MIN_PEAK = 0.25                      # the least autocorrelation of the differences that counts as a season


def season_from_values(series: list[np.ndarray], candidates: tuple[int, ...] = SEASON_CANDIDATES
                       ) -> tuple[int, float]:
    """(period, share of the tested series that have it) for series without time stamps (the M4 wide layout, a
    table without a time column): the candidate period that most series long enough to test (3 periods of
    differences) have, where having it means that the autocorrelation of the first differences at that lag is
    above 0.25 and the 99.5% bound of M4's seasonality test and higher than at the lags either side (a peak: a
    smooth cycle correlates at every short lag; weekly CO2's differences peak at 0.17 at lag 7, noise); (1, 0.0)
    when no candidate is had by more than half. Differences, not levels: a trend makes the levels'
    autocorrelation high at every lag."""
    pick = np.unique(np.linspace(0, len(series) - 1, min(len(series), MAX_TESTED)).round().astype(int)) \
        if series else []
    diffs = [np.diff(np.asarray(series[i], dtype=float)) for i in pick]
    best, share = 1, 0.0
    for m in sorted(candidates):
        tested = [d for d in diffs if len(d) >= 3 * m and np.ptp(d) > 0]
        hits = 0
        for d in tested:
            r = np.array([acf(d, k) for k in range(1, m + 2)])          # lags 1 .. m + 1
            bound = 2.576 * np.sqrt((1 + 2 * np.sum(r[:m - 1] ** 2)) / len(d))
            hits += bool(r[m - 1] > max(bound, MIN_PEAK) and r[m - 1] > r[m] and (m < 2 or r[m - 1] > r[m - 2]))
        if tested and hits / len(tested) > max(share, 0.5):
            best, share = m, hits / len(tested)
    return best, share


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
