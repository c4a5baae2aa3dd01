"""Forecast baselines, configured as their authors recommend, for many series at once.

Every method maps ``(history (n,), h, m, level)`` to ``{"point": (h,), "lo": (h,), "hi": (h,)}`` (intervals
where the method has them) in the history's units:

- ``naive`` (last value), ``seasonal_naive`` (last period), ``naive2`` (naive on the seasonally adjusted series,
  the M4 benchmark OWA is relative to);
- ``theta``: the M4 benchmark Theta (SES with half the linear drift, statsmodels ``ThetaModel``) on the
  seasonally adjusted series;
- ``ets``: automatic exponential smoothing (statsmodels ``ETSModel``): every admissible combination of additive
  or multiplicative error, no / additive / damped trend and, for periods up to 12, no / additive /
  multiplicative seasonality (Hyndman's ``ets`` space without the unstable additive-error multiplicative-season
  forms), chosen by AICc; longer periods (hourly 24, weekly 52) are seasonally adjusted first (as M4's
  statistical benchmarks and Hyndman's ``stlf`` do), since those seasonal state spaces are too large to fit
  reliably. Prediction intervals from the selected model;
- ``ses``, ``holt``, ``damped`` and ``comb``: the M4 competition's exponential-smoothing benchmarks, on the
  seasonally adjusted series as the competition's own code fits them: simple exponential smoothing, Holt's
  linear trend, Holt's damped trend (additive errors, parameters and initial states by maximum likelihood,
  the damping in [0.8, 0.98] as R's ``ets``), and ``comb`` (M4's "Comb S-H-D"), the mean of the three point
  forecasts (no interval);
- ``arima``: automatic ARIMA on the seasonally adjusted series (differences by the KPSS test as ``auto.arima``,
  then p, q <= 2 by AICc), with intervals; fitted on the last ``ARIMA_WINDOW`` (600) points, since statsmodels'
  exact likelihood makes long series (M4 Weekly has up to 2,597) cost seconds per fit.

Seasonal adjustment is the M4 benchmarks' one (:mod:`grukit.data.seasonal`), additive instead of
multiplicative for a series with zeros or negative values (which M4's code would leave unadjusted).
``fit_baselines`` runs the chosen methods over many series in ``n_jobs`` worker processes; a method that fails
on a series falls back to naive for that series and is counted.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np
import pandas as pd

from ..data.seasonal import seasonal_adjustment

__all__ = ["naive", "seasonal_naive", "naive2", "theta", "ets", "ses", "holt", "damped", "comb", "arima", "METHODS",
           "fit_baselines"]


class _Season:
    """The seasonal adjustment of one history (:func:`grukit.data.seasonal.seasonal_adjustment`): M4's
    multiplicative indices, or additive components for a series with zeros or negative values; ``put`` puts
    the season back on forecasts (points and interval bounds alike) of the ``h`` steps after the history."""

    def __init__(self, y: np.ndarray, m: int, adjust: bool = True):
        self.kind, self.comp = seasonal_adjustment(y, m) if adjust else ("mul", np.ones(1))
        self.n = len(y)

    def _at(self, t: np.ndarray) -> np.ndarray:
        return self.comp[t % len(self.comp)]

    def remove(self, y: np.ndarray) -> np.ndarray:
        s = self._at(np.arange(len(y)))
        return y / s if self.kind == "mul" else y - s

    def put(self, values: np.ndarray) -> np.ndarray:
        s = self._at(self.n + np.arange(len(values)))
        return values * s if self.kind == "mul" else values + s


def _adjust(y: np.ndarray, m: int) -> tuple[np.ndarray, _Season]:
    """(seasonally adjusted y, its season, to put back on forecasts)."""
    season = _Season(y, m)
    return season.remove(y), season


def naive(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Repeat the last observation."""
    return {"point": np.repeat(float(history[-1]), h)}


def seasonal_naive(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Repeat the last full period (naive when the history is shorter than one period or m <= 1)."""
    if m <= 1 or len(history) < m:
        return naive(history, h)
    last = np.asarray(history[-m:], dtype=float)
    return {"point": last[np.arange(h) % m]}


def naive2(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Naive on the seasonally adjusted series, re-seasonalised (M4's Naive2)."""
    y = np.asarray(history, dtype=float)
    des, season = _adjust(y, m)
    return {"point": season.put(np.repeat(des[-1], h))}


def theta(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """The M4 benchmark Theta method on the seasonally adjusted series."""
    from statsmodels.tsa.forecasting.theta import ThetaModel
    y = np.asarray(history, dtype=float)
    des, season = _adjust(y, m)
    if len(des) < 4 or np.ptp(des) == 0:
        return naive2(y, h, m)
    res = ThetaModel(des, period=1, deseasonalize=False).fit()
    point = np.asarray(res.forecast(h), dtype=float)
    pi = np.asarray(res.prediction_intervals(h, alpha=1 - level), dtype=float)     # (h, 2)
    return {"point": season.put(point), "lo": season.put(pi[:, 0]), "hi": season.put(pi[:, 1])}


def _ets_fit(y: np.ndarray, m: int, seasonal_forms: bool):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    positive = bool((y > 0).all())
    seasons: list[str | None] = [None]
    if seasonal_forms and m > 1 and len(y) >= 2 * m + 2:
        seasons += ["add"] + (["mul"] if positive else [])
    best, best_ic = None, np.inf
    for error in ["add"] + (["mul"] if positive else []):
        for trend, damped in ((None, False), ("add", False), ("add", True)):
            for seasonal in seasons:
                if error == "add" and seasonal == "mul":
                    continue
                if len(y) < 3 + (2 if trend else 0) + (m if seasonal else 0):
                    continue
                try:
                    res = ETSModel(pd.Series(y), error=error, trend=trend, damped_trend=damped, seasonal=seasonal,
                                   seasonal_periods=m if seasonal else None).fit(disp=False, maxiter=300)
                except Exception:  # noqa: BLE001 - a configuration that does not fit is skipped
                    continue
                ic = res.aicc if np.isfinite(res.aicc) else res.aic
                if np.isfinite(ic) and ic < best_ic:
                    best, best_ic = res, ic
    return best


def _ets_forecast(res, n: int, h: int, level: float, season: _Season) -> dict[str, np.ndarray]:
    """Point and interval of a fitted ETS model over the next ``h`` steps, with the season put back."""
    frame = res.get_prediction(start=n, end=n + h - 1).summary_frame(alpha=1 - level)
    return {"point": season.put(frame["mean"].to_numpy()), "lo": season.put(frame["pi_lower"].to_numpy()),
            "hi": season.put(frame["pi_upper"].to_numpy())}


def ets(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Automatic ETS by AICc (see the module docstring), with its prediction interval."""
    y = np.asarray(history, dtype=float)
    direct = m <= 12
    season = _Season(y, m, adjust=not direct)
    des = season.remove(y)
    if len(y) < 4 or np.ptp(y) == 0:
        return naive(y, h)
    res = _ets_fit(des, m, seasonal_forms=direct)
    if res is None:
        return naive2(y, h, m)
    return _ets_forecast(res, len(des), h, level, season)


def _smoothing(history: np.ndarray, h: int, m: int, level: float, trend: str | None,
               damped: bool) -> dict[str, np.ndarray]:
    """One fixed exponential-smoothing form (additive errors) on the seasonally adjusted series."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    y = np.asarray(history, dtype=float)
    des, season = _adjust(y, m)
    if len(des) < (5 if trend else 3) or np.ptp(des) == 0:
        return naive2(y, h, m)
    res = ETSModel(pd.Series(des), error="add", trend=trend, damped_trend=damped).fit(disp=False, maxiter=300)
    return _ets_forecast(res, len(des), h, level, season)


def ses(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """M4's SES benchmark: simple exponential smoothing on the seasonally adjusted series."""
    return _smoothing(history, h, m, level, None, False)


def holt(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """M4's Holt benchmark: Holt's linear trend on the seasonally adjusted series."""
    return _smoothing(history, h, m, level, "add", False)


def damped(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """M4's Damped benchmark: Holt's damped trend on the seasonally adjusted series."""
    return _smoothing(history, h, m, level, "add", True)


COMB_PARTS = ("ses", "holt", "damped")


def comb(history: np.ndarray, h: int, m: int = 1, level: float = 0.95,
         fitted: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """M4's Comb S-H-D benchmark: the mean of the SES, Holt and Damped point forecasts; a part already in
    ``fitted`` (method name -> forecast of this history) is reused, the others are fitted."""
    fitted = fitted or {}
    return {"point": np.mean([(fitted[k] if k in fitted else METHODS[k](history, h, m, level))["point"]
                              for k in COMB_PARTS], axis=0)}


def _ndiffs(y: np.ndarray, max_d: int = 2) -> int:
    from statsmodels.tsa.stattools import kpss
    d = 0
    while d < max_d and len(y) > 10:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = kpss(y, regression="c", nlags="auto")[1]
        except Exception:  # noqa: BLE001
            break
        if p >= 0.05:
            break
        y, d = np.diff(y), d + 1
    return d


ARIMA_WINDOW = 600


def arima(history: np.ndarray, h: int, m: int = 1, level: float = 0.95) -> dict[str, np.ndarray]:
    """Automatic ARIMA(p, d, q) on the seasonally adjusted series (KPSS for d, AICc for p, q <= 2)."""
    from statsmodels.tsa.arima.model import ARIMA
    y = np.asarray(history, dtype=float)
    des, season = _adjust(y, m)
    if len(y) < 8 or np.ptp(y) == 0:
        return naive(y, h)
    des = des[-ARIMA_WINDOW:]                      # the recent past: the Kalman filter cost grows with n
    d = _ndiffs(des)
    best, best_ic = None, np.inf
    for p in range(3):
        for q in range(3):
            trend = "c" if d == 0 else ("t" if d == 1 else "n")
            try:
                res = ARIMA(des, order=(p, d, q), trend=trend).fit()
            except Exception:  # noqa: BLE001
                continue
            if np.isfinite(res.aicc) and res.aicc < best_ic:
                best, best_ic = res, res.aicc
    if best is None:
        return naive2(y, h, m)
    fc = best.get_forecast(h)
    ci = np.asarray(fc.conf_int(alpha=1 - level), dtype=float)
    return {"point": season.put(np.asarray(fc.predicted_mean, dtype=float)), "lo": season.put(ci[:, 0]),
            "hi": season.put(ci[:, 1])}


METHODS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "naive": naive, "seasonal_naive": seasonal_naive, "naive2": naive2, "theta": theta, "ets": ets,
    "ses": ses, "holt": holt, "damped": damped, "comb": comb, "arima": arima}


def _run_one(args) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    from threadpoolctl import threadpool_limits
    history, h, m, level, methods = args
    out, failed = {}, []
    with threadpool_limits(1):                   # small matrices: BLAS threads only contend
        for name in methods:
            _one(name, history, h, m, level, out, failed)
    return out, failed


def _one(name, history, h, m, level, out, failed) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "comb":                   # the parts this series has fitted already are reused
                fc = comb(history, h, m, level, {k: out[k] for k in COMB_PARTS if k in out and k not in failed})
            else:
                fc = METHODS[name](history, h, m, level)
        if not all(np.isfinite(v).all() for v in fc.values()):
            raise FloatingPointError("non-finite forecast")
    except Exception:  # noqa: BLE001 - one failing series must not stop the table
        fc = naive(history, h)
        failed.append(name)
    out[name] = fc


def _single_thread() -> None:
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"


def fit_baselines(histories: list[np.ndarray], h: int, m: int, methods: list[str], *, level: float = 0.95,
                  n_jobs: int = 1, progress: Callable[[int, int], None] | None = None
                  ) -> tuple[dict[str, list[dict[str, np.ndarray]]], dict[str, int]]:
    """Forecast every history with every method; ``n_jobs`` processes (0 or -1: one per CPU).

    Returns ``{method: [forecast per series]}`` and ``{method: number of series where it failed}`` (those
    series got the naive forecast)."""
    unknown = [k for k in methods if k not in METHODS]
    if unknown:
        from ..errors import ConfigError
        raise ConfigError(f"unknown baseline(s) {unknown}; expected some of {', '.join(METHODS)}")
    jobs = [(np.asarray(y, dtype=float), h, m, level, list(methods)) for y in histories]
    n_jobs = (os.cpu_count() or 1) if n_jobs in (0, -1) else max(1, n_jobs)
    cheap = set(methods) <= {"naive", "seasonal_naive", "naive2"}
    results = []
    if n_jobs == 1 or cheap or len(jobs) < 4:
        for i, j in enumerate(jobs):
            results.append(_run_one(j))
            if progress:
                progress(i + 1, len(jobs))
    else:
        with ProcessPoolExecutor(n_jobs, initializer=_single_thread) as pool:
            for i, r in enumerate(pool.map(_run_one, jobs, chunksize=max(1, len(jobs) // (8 * n_jobs)))):
                results.append(r)
                if progress:
                    progress(i + 1, len(jobs))
    out = {k: [r[0][k] for r in results] for k in methods}
    failures = {k: sum(k in r[1] for r in results) for k in methods}
    return out, failures
