"""Forecast accuracy as the M4 competition scores it: sMAPE, MASE, OWA, MSIS and interval coverage.

Per series (``series_metrics``) and over a panel (``summarize``):

- sMAPE = mean over the horizon of 200 |y - f| / (|y| + |f|) (a step where both are 0 counts 0);
- MASE = mean |y - f| / the in-sample mean |y_t - y_{t-m}| (lag 1 when the history is not longer than m);
- MSIS = mean over the horizon of (U - L) + 2/a (L - y) [y < L] + 2/a (y - U) [y > U], divided by the same
  scale, for a (1 - a) interval (a = 0.05 for M4's 95% intervals);
- coverage = share of the horizon inside [L, U];
- OWA = (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2) / 2, on the panel averages (the competition's definition)
  and, in the per-series table, on each series' own values.
"""
from __future__ import annotations

import numpy as np

__all__ = ["mase_scale", "smape", "mase", "msis", "coverage", "series_metrics", "summarize", "owa"]


def mase_scale(history: np.ndarray, m: int) -> float:
    """Mean absolute in-sample seasonal-naive error (lag 1 when the history is not longer than m); 1.0 when
    that is 0 (a constant history), so the error stays finite."""
    y = np.asarray(history, dtype=float)
    lag = m if m > 1 and len(y) > m else 1
    d = np.abs(y[lag:] - y[:-lag])
    s = float(d.mean()) if len(d) else 0.0
    return s if s > 0 else 1.0


def smape(actual, pred) -> float:
    a, p = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    den = np.abs(a) + np.abs(p)
    return float(np.mean(np.where(den > 0, 200 * np.abs(a - p) / np.where(den > 0, den, 1), 0.0)))


def mase(actual, pred, history, m: int) -> float:
    a, p = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    return float(np.abs(a - p).mean() / mase_scale(history, m))


def msis(actual, lo, hi, history, m: int, alpha: float = 0.05) -> float:
    a, lo, hi = (np.asarray(v, dtype=float) for v in (actual, lo, hi))
    score = (hi - lo) + 2 / alpha * (lo - a) * (a < lo) + 2 / alpha * (a - hi) * (a > hi)
    return float(score.mean() / mase_scale(history, m))


def coverage(actual, lo, hi) -> float:
    a = np.asarray(actual, dtype=float)
    return float(np.mean((a >= np.asarray(lo)) & (a <= np.asarray(hi))))


def series_metrics(actual, pred, history, m: int, lo=None, hi=None, alpha: float = 0.05) -> dict[str, float]:
    """sMAPE, MASE, MAE, RMSE of one series' forecast; with an interval also MSIS (for level 1 - alpha) and
    coverage. Values must be finite: a non-finite forecast is a bug upstream, not a score."""
    a, p = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    err = a - p
    out = {"sMAPE": smape(a, p), "MASE": mase(a, p, history, m), "MAE": float(np.abs(err).mean()),
           "RMSE": float(np.sqrt(np.mean(err ** 2)))}
    if lo is not None and hi is not None:
        out["MSIS"] = msis(a, lo, hi, history, m, alpha)
        out["coverage"] = coverage(a, lo, hi)
    return out


def owa(smape_: float, mase_: float, smape_naive2: float, mase_naive2: float) -> float:
    return float((smape_ / smape_naive2 + mase_ / mase_naive2) / 2)


def summarize(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Average each method's per-series rows; add OWA relative to ``naive2`` when it is among the methods."""
    table = {k: {name: float(np.mean([r[name] for r in v if name in r])) for name in v[0]}
             for k, v in rows.items() if v}
    ref = table.get("naive2")
    if ref and ref["sMAPE"] > 0 and ref["MASE"] > 0:
        for v in table.values():
            v["OWA"] = owa(v["sMAPE"], v["MASE"], ref["sMAPE"], ref["MASE"])
    return table
