"""Scoring and writing forecasts of a trained run: the M4 evaluation beside strong baselines, predictions CSV.

``evaluate`` forecasts from each origin (the end of the training data when the run has ``test_data``, else the
``backtests`` rolling origins of the held-out tail), fits the configured baselines on the same histories
(:mod:`grukit.tasks.baselines`, in ``n_jobs`` processes) and returns the averaged metrics of
:mod:`grukit.tasks.forecast_metrics` per method (sMAPE, MASE, OWA against Naive2, MSIS and coverage for methods
with intervals). It also writes ``evaluation/series.csv`` (one row per series, target, origin and method) and
plots of the model's best and worst series. The model's forecasts come from the ``forecast`` function passed in
(:func:`grukit.tasks.forecast.forecast_series`).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..data.panel import Series, load_panel
from ..data.timeseries import future_times
from ..errors import DataError
from ..io import atomic_write
from .baselines import fit_baselines
from .forecast_metrics import owa, series_metrics, summarize

__all__ = ["evaluate", "predict", "interval_level", "cases_for"]


def interval_level(cfg) -> float | None:
    """Nominal coverage of the model's interval (None for point forecasts)."""
    if cfg.likelihood == "quantile" and len(cfg.quantiles) >= 2:
        return float(cfg.quantiles[-1] - cfg.quantiles[0])
    return float(cfg.interval) if cfg.likelihood == "gaussian" else None


def _cov(s: Series) -> np.ndarray:
    return np.concatenate([s.known, s.past], 1)


def cases_for(run, data: str | None) -> tuple[list[dict], str]:
    """Evaluation cases: dicts of series, origin, history (origin, C), actual (H, C), covariates, known future."""
    cfg, meta = run.config, run.meta
    H = cfg.horizon
    series, _, path = load_panel(data or cfg.data, roles=meta["roles"], duplicates=cfg.duplicates, gaps=cfg.gaps)
    cases, skipped = [], []
    if cfg.test_data and data is None:
        test, _, tpath = load_panel(cfg.test_data, roles=meta["roles"], duplicates=cfg.duplicates, gaps=cfg.gaps)
        by_id = {t.id: t for t in test}
        for s in series:
            t = by_id.get(s.id)
            if t is None or s.n_obs < 1:
                skipped.append(s.id)
                continue
            if t.n_obs < H:
                raise DataError(f"series {s.id!r} has {t.n_obs} test values; the horizon needs {H}", path=tpath)
            cases.append({"s": s, "origin": s.n_obs, "history": s.y[: s.n_obs], "actual": t.y[:H],
                          "cov": _cov(s)[: s.n_obs], "known_future": t.known[:H], "filled": t.n_filled(0, H)})
    else:
        for s in series:
            for j in range(cfg.backtests, 0, -1):
                origin = s.n_obs - j * H
                if origin < 2:
                    skipped.append(s.id)
                    continue
                cases.append({"s": s, "origin": origin, "history": s.y[:origin], "actual": s.y[origin:origin + H],
                              "cov": _cov(s)[:origin], "known_future": s.known[origin:origin + H],
                              "filled": s.n_filled(origin, origin + H)})
    if skipped:
        names = ", ".join(map(repr, sorted(set(skipped))[:10]))
        warnings.warn(f"{path}: {len(set(skipped))} series not evaluated (no test values or under 2 points before "
                      f"the origin): {names}", stacklevel=2)
    filled = [c for c in cases if c["filled"]]
    if filled:
        names = ", ".join(f"{c['s'].id!r} ({c['filled']})" for c in filled[:5]) + (" ..." if len(filled) > 5 else "")
        warnings.warn(f"{path}: {sum(c['filled'] for c in filled)} of the scored values were interpolated over "
                      f"empty or skipped steps, not observed: {names}; their errors count as if observed",
                      stacklevel=2)
    if not cases:
        raise DataError("no series can be evaluated (each needs 2 points before the origin and a full horizon "
                        "after it)", path=path)
    return cases, path


def _progress(cfg, n: int):
    """A stderr progress line for the baselines of many series (shown with ``progress`` and 20+ series)."""
    if not cfg.progress or n < 20:
        return None
    import sys
    step = max(1, n // 20)

    def show(i: int, total: int) -> None:
        if i % step == 0 or i == total:
            sys.stderr.write(f"\rbaselines {', '.join(cfg.baselines)}: {i}/{total} series")
            if i == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
    return show


def evaluate(run, models: list, data: str | None = None, *, forecast: Callable) -> dict[str, dict[str, float]]:
    """The model and the baselines on the same origins; returns {method: averaged metrics} (see module doc)."""
    cfg, meta = run.config, run.meta
    H, m = cfg.horizon, int(meta["season_length"])
    cases, path = cases_for(run, data)
    t0 = time.time()
    fcs = forecast(models, meta, cfg, [c["history"] for c in cases], ids=[c["s"].id for c in cases],
                   covariates=[c["cov"] for c in cases], known_future=[c["known_future"] for c in cases])
    t_model = time.time() - t0
    level = interval_level(cfg) or 0.95
    alpha = 1 - level
    rows: dict[str, list[dict[str, float]]] = {"grukit": [], **{k: [] for k in cfg.baselines}}
    records = []
    C = int(meta["n_targets"])
    t0 = time.time()
    for c in range(C):
        base, failures = fit_baselines([cs["history"][:, c] for cs in cases], H, m, list(cfg.baselines),
                                       level=level, n_jobs=cfg.n_jobs, progress=_progress(cfg, len(cases)))
        for k, n_bad in failures.items():
            if n_bad:
                warnings.warn(f"baseline {k} failed on {n_bad} series (naive used there)", stacklevel=2)
        for i, cs in enumerate(cases):
            hist, act = cs["history"][:, c], cs["actual"][:, c]
            per = {"grukit": {k: v[:, c] for k, v in fcs[i].items() if k != "quantiles"}}
            per.update({k: base[k][i] for k in cfg.baselines})
            scores = {k: series_metrics(act, f["point"], hist, m, f.get("lo"), f.get("hi"), alpha)
                      for k, f in per.items()}
            ref = scores.get("naive2")
            for k, sc in scores.items():
                rows[k].append(sc)
                rec = {"series": cs["s"].id, "target": meta["roles"]["target"][c], "origin": cs["origin"],
                       "method": k, **sc}
                if ref and ref["sMAPE"] > 0 and ref["MASE"] > 0:
                    rec["OWA"] = owa(sc["sMAPE"], sc["MASE"], ref["sMAPE"], ref["MASE"])
                records.append(rec)
    t_base = time.time() - t0
    table = summarize(rows)
    table["grukit"]["seconds"] = round(t_model, 2)
    for k in cfg.baselines:
        table[k]["seconds"] = round(t_base / max(1, len(cfg.baselines)), 2)
    _write(run, records, cases, fcs, meta, data)
    return table


def _write(run, records: list[dict], cases: list[dict], fcs: list[dict], meta: dict, data: str | None) -> None:
    frame = pd.DataFrame.from_records(records)
    name = "series.csv" if data is None else "series-eval.csv"
    atomic_write(run.path / "evaluation" / name, frame.to_csv(index=False))
    own = frame[frame.method == "grukit"].reset_index(drop=True)
    order = np.argsort(own["sMAPE"].to_numpy(), kind="stable")
    H = fcs[0]["point"].shape[0]

    def item(i):
        cs, fc = cases[i], fcs[i]
        y = np.concatenate([cs["history"], cs["actual"]])
        start = max(0, cs["origin"] - 4 * H)                     # the last 4 horizons of history
        times = cs["s"].times.iloc[start:cs["origin"] + H].reset_index(drop=True) if cs["s"].times is not None \
            else None
        return (cs["s"].id, times, y[start:], cs["origin"] - start, fc)

    try:
        from ..plots import forecast_plot
        target = meta["roles"]["target"]
        C = len(target)
        picks = [i % len(cases) for i in order]                   # rows are (target, case) in target order
        forecast_plot([item(i) for i in range(min(4, len(cases)))], target, run.path / "plots" / "forecast.png",
                      title="held-out forecast")
        forecast_plot([item(i) for i in dict.fromkeys(picks[:3])], target, run.path / "plots" / "best.png",
                      title="best sMAPE")
        forecast_plot([item(i) for i in dict.fromkeys(picks[::-1][:3])], target, run.path / "plots" / "worst.png",
                      title="worst sMAPE")
    except Exception as e:  # noqa: BLE001 - metrics matter more than the pictures
        warnings.warn(f"could not draw the forecast plots: {e}", stacklevel=2)


def predict(run, models: list, data: str | None, out: str | Path | None = None, holdout: int = 0, *,
            forecast: Callable) -> list[Path]:
    """Forecast ``horizon`` steps after each series' last observed target; CSV (with intervals) and PNG.

    ``holdout`` > 0 forecasts from ``holdout`` steps before the end instead, so the CSV gets an ``actual``
    column and the PNG the actuals beside the forecast (a back-test of one origin)."""
    cfg, meta = run.config, run.meta
    series, _, path = load_panel(data or cfg.data, roles=meta["roles"], duplicates=cfg.duplicates, gaps=cfg.gaps,
                                 allow_future=True)
    H, C = cfg.horizon, meta["n_targets"]
    target_names = meta["roles"]["target"]
    origins = []
    for s in series:
        origin = s.n_obs - holdout
        if origin < 1:
            raise DataError(f"series {s.id!r}: --holdout {holdout} leaves {origin} observed points before the "
                            "forecast origin; at least 1 is needed", path=path)
        origins.append(origin)
    known = [s.known[o:o + H] for s, o in zip(series, origins)]
    for s, o, k in zip(series, origins, known):
        if meta["n_known"] and len(k) < H:
            raise DataError(f"known covariates {', '.join(meta['roles']['known'])} need {H} future rows after the "
                            f"last observed target of series {s.id!r}; found {len(k)}", path=path)
    fcs = forecast(models, meta, cfg, [s.y[:o] for s, o in zip(series, origins)], ids=[s.id for s in series],
                   covariates=[_cov(s)[:o] for s, o in zip(series, origins)], known_future=known)
    records, plotted = [], []
    for s, origin, fc in zip(series, origins, fcs):
        if s.times is None:
            times = list(range(origin, origin + H))
        elif holdout and origin + H <= len(s.times):
            times = list(s.times.iloc[origin:origin + H])
        else:
            times = future_times(s.times.iloc[:origin], H)
        for i in range(H):
            for c in range(C):
                rec = {"series": s.id, "time": times[i], "step": i + 1, "target": target_names[c],
                       "forecast": fc["point"][i, c]}
                if "lo" in fc:
                    rec["lower"], rec["upper"] = fc["lo"][i, c], fc["hi"][i, c]
                if holdout:
                    rec["actual"] = s.y[origin + i, c] if origin + i < s.n_obs else np.nan
                records.append(rec)
        if len(plotted) < 4:
            plotted.append((s.id, s.times, s.y[: s.n_obs], origin, fc))
    out = Path(out) if out else run.path / "predictions.csv"
    frame = pd.DataFrame.from_records(records)
    if not meta["roles"]["id_col"]:
        frame = frame.drop(columns="series")
    paths = [atomic_write(out, frame.to_csv(index=False))]
    from ..plots import forecast_plot
    paths.append(forecast_plot(plotted, target_names, out.with_suffix(".png"),
                               title="back-test forecast" if holdout else "forecast", future_times=not holdout))
    return paths
