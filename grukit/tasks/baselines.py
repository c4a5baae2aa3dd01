"""Forecast baselines (naive, seasonal naive, statsmodels ETS) and forecast accuracy metrics.

All functions take NumPy arrays: ``history`` (n,) and return forecasts of length ``h``.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["naive", "seasonal_naive", "ets", "forecast_metrics", "mase_scale"]


def naive(history: np.ndarray, h: int) -> np.ndarray:
    """Repeat the last observation."""
    return np.repeat(history[-1], h).astype(float)


def seasonal_naive(history: np.ndarray, h: int, m: int) -> np.ndarray:
    """Repeat the last full season (naive when the history is shorter than one season or m <= 1)."""
    if m <= 1 or len(history) < m:
        return naive(history, h)
    last = history[-m:]
    return np.array([last[i % m] for i in range(h)], dtype=float)


def ets(history: np.ndarray, h: int, m: int) -> np.ndarray:
    """statsmodels ETS: additive error and additive trend (damped or not), with additive or multiplicative
    (positive data only) seasonality when ``m > 1`` and there are two seasons of history; the configuration
    with the lowest AIC wins. Naive if every fit fails.

    No-trend models are left out on purpose: on short series their AIC often wins while they forecast trending
    data badly (airline: AIC picks ETS(A,N,M), MAE 73 vs 30 for ETS(A,A,M)), which would make a weak baseline.
    """
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    y = np.asarray(history, dtype=float)
    seasonals: list[str | None] = [None]
    if m > 1 and len(y) >= 2 * m + 2:
        seasonals = ["add"] + (["mul"] if (y > 0).all() else [])
    best, best_aic = None, np.inf
    for trend, damped in (("add", True), ("add", False)):
        for seasonal in seasonals:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ETSModel(y, error="add", trend=trend, damped_trend=damped, seasonal=seasonal,
                                   seasonal_periods=m if seasonal else None).fit(disp=False, maxiter=200)
                    fc = np.asarray(res.forecast(h), dtype=float)
            except Exception:  # noqa: BLE001 - a failing configuration is just skipped
                continue
            if np.isfinite(res.aic) and res.aic < best_aic and np.isfinite(fc).all():
                best, best_aic = fc, res.aic
    return best if best is not None else naive(y, h)


def mase_scale(history: np.ndarray, m: int) -> float:
    """Mean absolute in-sample seasonal-naive error (naive when the history is too short for m)."""
    y = np.asarray(history, dtype=float)
    lag = m if m > 1 and len(y) > m else 1
    d = np.abs(y[lag:] - y[:-lag])
    s = float(d.mean()) if len(d) else 0.0
    return s if s > 0 else 1.0


def forecast_metrics(actual: np.ndarray, pred: np.ndarray, history: np.ndarray, m: int,
                     lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE, MASE, sMAPE (percent) and, with an interval, its coverage (fraction inside)."""
    a, p = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    err = a - p
    out = {"MAE": float(np.abs(err).mean()), "RMSE": float(np.sqrt((err ** 2).mean())),
           "MASE": float(np.abs(err).mean() / mase_scale(history, m))}
    denom = np.abs(a) + np.abs(p)
    out["sMAPE"] = float(np.mean(np.where(denom > 0, 2 * np.abs(err) / np.where(denom > 0, denom, 1), 0)) * 100)
    if lo is not None and hi is not None:
        out["coverage"] = float(np.mean((a >= lo) & (a <= hi)))
    return out
