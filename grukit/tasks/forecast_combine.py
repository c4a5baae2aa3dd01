"""Forecast combination: the network's point forecast averaged with statistical forecasts of the same history.

Combining forecasts of different kinds is the most reliable gain the forecasting literature reports (Bates and
Granger 1969; the M4 competition's conclusions, where most of the top entries combined methods). grukit's
network wins on large panels (M4 Weekly and Hourly) and on series with structure to learn, and loses to
exponential smoothing and Theta on many short, noisy series; ``combine``
(:class:`~grukit.tasks.forecast_config.ForecastConfig`) chooses between the two per run:

- ``auto`` (default): after training, the network alone and its mean with simple exponential smoothing, the
  damped trend and Theta (M4's SES and Damped benchmarks on the seasonally adjusted series, and its Theta:
  cheap to fit, a few milliseconds a history) forecast the validation windows (at most ``MAX_CHECK``, every
  series weighing alike: :func:`pick_windows`); the combination is kept only where its mean MASE there is
  lower. The choice and both scores go to
  ``meta.json``. Measured on 20 single series nobody tuned for (``examples/forecast_single_series.py``,
  geometric-mean MASE relative to the better of ETS and Theta, seeds 0 and 1): the network alone 1.157,
  always combined 1.060, chosen by validation 1.021; on M1's 181 short yearly series OWA 0.825 / 0.860 ->
  0.809 / 0.806; on M4 Weekly the validation windows keep the network (combined, its test OWA would have gone
  from 0.820 to 0.897);
- ``off``; or baseline names (``ets,theta,arima``): always those.

Equal weights: the mean of the network's point forecast and each method's. Intervals (and quantiles) move with
the point, keeping the network's calibrated widths. The statistical methods are fitted on each history at
forecast time, in original units (so ``grukit predict`` and the server combine too; the ONNX export is the
network alone).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .baselines import fit_baselines
from .forecast_metrics import mase

__all__ = ["COMBINE_AUTO", "MAX_CHECK", "static_combine", "combine_forecasts", "pick_windows",
           "choose_on_validation"]

COMBINE_AUTO = ("ses", "damped", "theta")    # what ``auto`` may average with the network
MAX_CHECK = 300                     # validation windows the choice reads, at most (its cost; see pick_windows)


def static_combine(combine: Sequence[str]) -> list[str] | None:
    """The methods to combine with when the config decides alone; None where ``auto`` asks the validation
    windows."""
    c = [str(x).lower() for x in combine]
    if c == ["auto"]:
        return None
    return [] if c in ([], ["off"]) else c


def combine_forecasts(results: list[dict[str, np.ndarray]], histories: Sequence[np.ndarray], horizon: int, m: int,
                      methods: Sequence[str], n_jobs: int = 1) -> list[dict[str, np.ndarray]]:
    """``results`` (forecast_series' dicts, ``point`` (H, C) ...) with each point forecast replaced by its mean
    with ``methods``' forecasts of the same history ((T, C), original units), intervals and quantiles shifted
    by the same amount. New dicts; the inputs are left alone."""
    if not methods or not results:
        return results
    out = [{k: v.copy() for k, v in r.items()} for r in results]
    C = out[0]["point"].shape[1]
    for c in range(C):
        base, _ = fit_baselines([np.asarray(h, dtype=float).reshape(len(h), -1)[:, c] for h in histories], horizon,
                                m, list(methods), n_jobs=n_jobs)
        for j, r in enumerate(out):
            own = r["point"][:, c].copy()
            mix = (own + sum(np.asarray(base[k][j]["point"], dtype=float) for k in methods)) / (1 + len(methods))
            shift = mix - own
            r["point"][:, c] = mix
            for k in ("lo", "hi"):
                if k in r:
                    r[k][:, c] += shift
            if "quantiles" in r:
                r["quantiles"][:, c, :] += shift[:, None]
    return out


def pick_windows(series_of: Sequence[int], limit: int = MAX_CHECK) -> list[int]:
    """Positions of the validation windows the choice reads: every series alike, as the test and M4's averages
    weigh them (a long series has many more windows, and on M4 Weekly letting them dominate chose the mix
    that the test then scored worse): the last ``limit // n_series`` windows of each series (at least one,
    the latest: the one nearest the forecast), or, with more series than ``limit``, the last window of
    ``limit`` series evenly spaced."""
    by: dict[int, list[int]] = {}
    for pos, sid in enumerate(series_of):
        by.setdefault(int(sid), []).append(pos)
    keys = list(by)
    if len(keys) > limit:
        keys = [keys[i] for i in np.unique(np.linspace(0, len(keys) - 1, limit).round().astype(int))]
    k = max(1, limit // len(keys))
    return sorted(p for key in keys for p in by[key][-k:])


def choose_on_validation(forecast: Callable[[list[int]], list[dict[str, np.ndarray]]],
                         windows: list[tuple[np.ndarray, np.ndarray]], horizon: int, m: int, n_jobs: int = 1,
                         series_of: Sequence[int] | None = None) -> tuple[list[str], dict[str, float]]:
    """``auto``: ([methods] or [], the mean MASE of each choice) from the validation ``windows``
    ((history (T, C), actual (H, C)), original units, in origin order within each series; ``series_of``: each
    window's series, default one series) read as :func:`pick_windows` says, each series' mean MASE weighing
    alike, where ``forecast(positions)`` gives the network's forecasts of those windows. The combination is
    kept only where its mean MASE is lower."""
    if not windows:
        return [], {}
    series_of = list(series_of) if series_of is not None else [0] * len(windows)
    pick = pick_windows(series_of)
    own = forecast(pick)
    hist = [windows[i][0] for i in pick]
    mixed = combine_forecasts(own, hist, horizon, m, COMBINE_AUTO, n_jobs=n_jobs)

    def score(fcs):
        per: dict[int, list[float]] = {}
        for i, f in zip(pick, fcs):
            per.setdefault(series_of[i], []).extend(
                mase(windows[i][1][:, c], f["point"][:, c], windows[i][0][:, c], m) for c in range(f["point"].shape[1]))
        return float(np.mean([np.mean(v) for v in per.values()]))
    scores = {"network": score(own), "combined": score(mixed)}
    return (list(COMBINE_AUTO) if scores["combined"] < scores["network"] else []), scores
