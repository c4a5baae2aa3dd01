r"""Forecasting: a GRU over a lookback window, a direct multi-horizon head, per-series scaling.

Data: a CSV/Parquet table with a time column, target column(s), optional known-future (``known``) and
past-only (``past``) covariates and an optional series-id column, or a built-in series. Targets are
(optionally) log-transformed, then standardised per series and target with the statistics of the training
part; ``meta.json`` keeps those scalers so a run forecasts without its training data.

Splits: with ``backtests = k`` the last ``k * horizon`` points of each series are held out; the model trains
on the rest (its last windows validate for early stopping) and is evaluated from each rolling origin, next to
naive, seasonal-naive and ETS baselines fitted on the same history.

Outputs per horizon step and target: ``point`` (MSE), ``gaussian`` (mean, scale; Gaussian NLL) or ``quantile``
(pinball loss on ``quantiles``; the outer pair is the prediction interval).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ForecastConfig
from ..data.batching import DictDataset, Prepared, loader
from ..data.timeseries import (future_times, load_table_or_builtin, numeric, parse_times,
                               pick_time_col, require_columns, season_from_times)
from ..errors import DataError
from .base import SequenceTask
from .heads import DirectForecastHead

__all__ = ["ForecastTask", "prepare", "evaluate", "predict", "Series", "read_series"]


# ====================================================================== data
@dataclass
class Series:
    id: str
    times: pd.Series | None        # (n,) datetimes or numbers, None when the file has no time column
    y: np.ndarray                  # (n, C) targets, original units; NaN only on future rows
    known: np.ndarray              # (n, K) known-future covariates
    past: np.ndarray               # (n, P) past-only covariates
    n_obs: int                     # rows with observed targets (the rest are future rows)


def _roles(cfg: ForecastConfig, df: pd.DataFrame, defaults: dict, path: str) -> dict[str, Any]:
    time_col = pick_time_col(df, cfg.time_col or defaults.get("time_col", ""), path)
    target = list(cfg.target or defaults.get("target", ()))
    known, past, id_col = list(cfg.known), list(cfg.past), cfg.id_col
    require_columns(df, [id_col] if id_col else [], path, "series-id column")
    require_columns(df, target, path, "target column")
    require_columns(df, known, path, "known covariate column")
    require_columns(df, past, path, "past covariate column")
    if not target:
        used = {time_col, id_col, *known, *past}
        target = [c for c in df.columns if c not in used and pd.api.types.is_numeric_dtype(df[c])]
        if not target:
            raise DataError("no numeric target column found; name it with --target", path=path)
    return {"time_col": time_col, "target": target, "known": known, "past": past, "id_col": id_col}


def read_series(df: pd.DataFrame, roles: dict[str, Any], path: str, allow_future: bool = False) -> list[Series]:
    """Split the table into series, checking every value; future rows (all targets empty) only at the end."""
    df = df.reset_index(drop=True)
    cols = {c: numeric(df, c, path) for c in [*roles["target"], *roles["known"], *roles["past"]]}
    times = parse_times(df, roles["time_col"], path) if roles["time_col"] else None
    groups = df.groupby(df[roles["id_col"]].astype(str), sort=False).indices if roles["id_col"] else \
        {"series": np.arange(len(df))}
    out = []
    for sid, idx in groups.items():
        idx = np.asarray(idx)
        if times is not None:
            idx = idx[np.argsort(times.iloc[idx].to_numpy(), kind="stable")]
        y = np.stack([cols[c][idx] for c in roles["target"]], axis=1)          # (n, C)
        missing = np.isnan(y).all(axis=1)
        n_obs = len(idx) - (int(np.argmin(missing[::-1])) if not missing.all() else len(idx))
        if missing.all():
            n_obs = 0
        if not allow_future:
            n_obs = len(idx)
        for j, c in enumerate(roles["target"]):                                # NaN/inf in observed targets
            bad = ~np.isfinite(y[:n_obs, j])
            if bad.any():
                raise DataError(f"{'missing/NaN' if np.isnan(y[:n_obs, j][bad][0]) else 'infinite'} target "
                                f"value{f' in series {sid!r}' if roles['id_col'] else ''}; expected finite "
                                "numbers (fill or drop the row)", path=path,
                                line=int(idx[np.flatnonzero(bad)[0]]) + 2, column=c)
        feats = []
        for c in [*roles["known"], *roles["past"]]:
            v = cols[c][idx]
            limit = len(idx) if c in roles["known"] else n_obs
            bad = ~np.isfinite(v[:limit])
            if bad.any():
                raise DataError("missing or infinite covariate value; expected finite numbers", path=path,
                                line=int(idx[np.flatnonzero(bad)[0]]) + 2, column=c)
            feats.append(np.nan_to_num(v))
        K = len(roles["known"])
        known = np.stack(feats[:K], 1) if K else np.zeros((len(idx), 0))
        past = np.stack(feats[K:], 1) if roles["past"] else np.zeros((len(idx), 0))
        t = times.iloc[idx].reset_index(drop=True) if times is not None else None
        out.append(Series(str(sid), t, y, known, past, n_obs))
    return out


def _transform(cfg_transform: str, series: list[Series]) -> str:
    if cfg_transform != "auto":
        return cfg_transform
    return "log" if all((s.y[: s.n_obs] > 0).all() for s in series) else "none"


def _fwd(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "sqrt":
        return np.sqrt(y)
    return np.log(y) if transform == "log" else y


def _inv(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "sqrt":
        return np.square(np.clip(y, 0, None))
    return np.exp(np.clip(y, -50, 50)) if transform == "log" else y


def _scaler(y: np.ndarray) -> dict[str, list[float]]:
    mean, std = y.mean(0), y.std(0)
    return {"mean": mean.tolist(), "std": np.where(std > 1e-8, std, 1.0).tolist()}


def _windows(s: Series, z: np.ndarray, cov: np.ndarray, L: int, H: int, K: int, end: int) -> dict[str, list]:
    """Every window whose targets end at or before ``end``: inputs (L, C+K+P), known future (H, K), y (H, C)."""
    rows: dict[str, list] = {"x": [], "window": [], "known_future": [], "y": []}
    for o in range(L, end - H + 1):                       # forecast origin o: inputs [o-L, o), targets [o, o+H)
        rows["x"].append(np.concatenate([z[o - L:o], cov[o - L:o]], 1).astype(np.float32))
        rows["window"].append(z[o - L:o].astype(np.float32))
        rows["known_future"].append(cov[o:o + H, :K].astype(np.float32))
        rows["y"].append(z[o:o + H].astype(np.float32))
    return rows


def _need(cfg: ForecastConfig) -> int:
    return cfg.lookback + cfg.horizon + cfg.backtests * cfg.horizon + 1


def prepare(cfg: ForecastConfig) -> Prepared:
    df, defaults, path = load_table_or_builtin(cfg.data, "forecast")
    roles = _roles(cfg, df, defaults, path)
    series = read_series(df, roles, path)
    L, H, hold = cfg.lookback, cfg.horizon, cfg.backtests * cfg.horizon
    for s in series:
        if s.n_obs < _need(cfg):
            who = f"series {s.id!r} has" if roles["id_col"] else "the series has"
            raise DataError(f"too short: {who} {s.n_obs} points but lookback {L} + horizon {H} + held-out "
                            f"{hold} (backtests x horizon) + 1 need {_need(cfg)}; lower --lookback, --horizon "
                            "or --backtests", path=path, column=roles["id_col"] or None)
    transform = _transform(cfg.transform, series)
    if transform == "log" and any((s.y[: s.n_obs] <= 0).any() for s in series):
        raise DataError("transform=log needs positive targets; use --transform none", path=path)
    if transform == "sqrt" and any((s.y[: s.n_obs] < 0).any() for s in series):
        raise DataError("transform=sqrt needs non-negative targets; use --transform none", path=path)
    m = cfg.season_length or season_from_times(series[0].times)
    scalers, train_rows, val_rows = {}, [], []
    covs = np.concatenate([np.concatenate([s.known, s.past], 1)[: s.n_obs - hold] for s in series])
    cov_scaler = _scaler(covs) if covs.shape[1] else {"mean": [], "std": []}
    for s in series:
        end = s.n_obs - hold
        ty = _fwd(s.y[:end], transform)
        scalers[s.id] = _scaler(ty)
        z = (_fwd(s.y[: s.n_obs], transform) - scalers[s.id]["mean"]) / scalers[s.id]["std"]
        cov = (np.concatenate([s.known, s.past], 1)[: s.n_obs] - cov_scaler["mean"]) / cov_scaler["std"] \
            if covs.shape[1] else np.zeros((s.n_obs, 0))
        rows = _windows(s, z, cov, L, H, len(roles["known"]), end)
        n = len(rows["y"])
        n_val = min(n - 1, max(1, math.ceil(cfg.val_fraction * n))) if cfg.val_fraction > 0 else 0
        train_rows.append({k: v[: n - n_val] for k, v in rows.items()})
        val_rows.append({k: v[n - n_val:] for k, v in rows.items()})

    def dataset(parts):
        return DictDataset(**{k: [r for p in parts for r in p[k]] for k in ("x", "window", "known_future", "y")})

    train_ds, val_ds = dataset(train_rows), dataset(val_rows)
    C, K, P = len(roles["target"]), len(roles["known"]), len(roles["past"])
    meta = {"input_size": C + K + P, "n_targets": C, "n_known": K, "roles": roles, "transform": transform,
            "season_length": int(m), "scalers": scalers, "cov_scaler": cov_scaler, "data_name": path,
            "has_val": len(val_ds) > 0, "n_train_windows": len(train_ds), "n_val_windows": len(val_ds)}
    return Prepared(loader(train_ds, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(val_ds, cfg.batch_size, False, cfg.num_workers) if len(val_ds) else None, meta,
                    {"series": series})


# ====================================================================== model
class ForecastTask(SequenceTask):
    """GRU encoder over the lookback window, :class:`~grukit.tasks.heads.DirectForecastHead` on its state."""

    task_name = "forecast"

    @property
    def n_params(self) -> int:
        c = self.config
        return {"point": 1, "gaussian": 2, "quantile": len(c.quantiles)}[c.likelihood]

    def build_head(self):
        c, m = self.config, self.meta
        return DirectForecastHead(self.encoder_size, c.horizon, m["n_targets"], self.n_params, c.lookback,
                                  m["n_known"], c.linear_skip, c.head_dropout, int(m.get("season_length", 1)))

    def build_metrics(self):
        from torchmetrics import MeanAbsoluteError, MetricCollection
        return MetricCollection({"mae": MeanAbsoluteError()})

    def batch_to_inputs(self, batch):
        return batch, batch["y"]

    def forward(self, inputs, state=None):
        x, window = inputs["x"], inputs["window"]                      # (B, L, F), (B, L, C)
        C = window.shape[-1]
        level = window.mean(1, keepdim=True) if self.config.window_norm else torch.zeros_like(window[:, :1])
        x = torch.cat([x[..., :C] - level, x[..., C:]], dim=-1)        # (B, L, F) level-free targets
        seq, h_n = self.encoder(x, state)                              # (B, L, D*H), (L*D, B, H)
        h = torch.cat([h_n[-2], h_n[-1]], -1) if self.config.bidirectional else h_n[-1]   # (B, D*H)
        out = self.head(h, window - level, inputs.get("known_future"))  # (B, horizon, C, P)
        shift = level.unsqueeze(-1)                                    # (B, 1, C, 1)
        if self.config.likelihood == "gaussian":                       # only the mean moves with the level
            out = torch.cat([out[..., :1] + shift, out[..., 1:]], dim=-1)
        else:
            out = out + shift
        return out, h_n

    def _point(self, out: Tensor) -> Tensor:
        c = self.config
        if c.likelihood == "quantile":
            q = list(c.quantiles)
            i = q.index(0.5) if 0.5 in q else len(q) // 2
            return out[..., i]
        return out[..., 0]                                             # (B, horizon, C)

    def loss(self, out, y, inputs):
        c = self.config
        if c.likelihood == "point":
            return F.mse_loss(out[..., 0], y)
        if c.likelihood == "gaussian":
            sigma = F.softplus(out[..., 1]) + 1e-3
            return F.gaussian_nll_loss(out[..., 0], y, sigma ** 2)
        q = torch.tensor(c.quantiles, dtype=out.dtype, device=out.device)   # (Q,)
        diff = y.unsqueeze(-1) - out                                         # (B, horizon, C, Q)
        return torch.maximum(q * diff, (q - 1) * diff).mean()

    def metric_inputs(self, out, y, inputs):
        return self._point(out), y

    def decode(self, out, inputs=None) -> dict[str, Tensor]:
        """Point forecast and interval bounds, each (B, horizon, C), in scaled units."""
        c = self.config
        if c.likelihood == "quantile":
            out = out.sort(dim=-1).values                              # rearrange crossed quantiles
        point = self._point(out)
        if c.likelihood == "quantile" and len(c.quantiles) >= 2:
            return {"point": point, "lo": out[..., 0], "hi": out[..., -1]}
        if c.likelihood == "gaussian":
            sigma = F.softplus(out[..., 1]) + 1e-3
            z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + c.interval / 2)))
            return {"point": point, "lo": point - z * sigma, "hi": point + z * sigma}
        return {"point": point}


Task = ForecastTask


# ====================================================================== use a trained run
def _forecast(models: list[ForecastTask], s: Series, origin: int, meta: dict, cfg: ForecastConfig,
              scaler: dict) -> dict[str, np.ndarray]:
    """Forecast ``horizon`` steps after ``origin`` (exclusive end of history); original units, (H, C) each."""
    L, H, K = cfg.lookback, cfg.horizon, meta["n_known"]
    tr = meta["transform"]
    mean, std = np.asarray(scaler["mean"]), np.asarray(scaler["std"])
    z = (_fwd(s.y[origin - L:origin], tr) - mean) / std                       # (L, C)
    cs = meta["cov_scaler"]
    cov_all = np.concatenate([s.known, s.past], 1)
    cov = (cov_all - cs["mean"]) / cs["std"] if cov_all.shape[1] else cov_all
    kf = cov[origin:origin + H, :K]
    if K and len(kf) < H:
        raise DataError(f"known covariates {', '.join(meta['roles']['known'])} need {H} future rows after the "
                        f"last observed target of series {s.id!r}; found {len(kf)}", path=meta["data_name"])
    batch = {"x": torch.tensor(np.concatenate([z, cov[origin - L:origin]], 1)[None], dtype=torch.float32),
             "window": torch.tensor(z[None], dtype=torch.float32),
             "known_future": torch.tensor(kf[None], dtype=torch.float32)}
    outs = []
    with torch.no_grad():
        for m in models:
            outs.append({k: v[0].numpy() for k, v in m.decode(m(batch)[0]).items()})
    res = {}
    for k in outs[0]:
        v = np.mean([o[k] for o in outs], axis=0) * std + mean                # (H, C) back to transformed units
        res[k] = _inv(v, tr)
    return res


def _scaler_for(s: Series, meta: dict, end: int) -> dict:
    if s.id in meta["scalers"]:
        return meta["scalers"][s.id]
    return _scaler(_fwd(s.y[:end], meta["transform"]))                      # a new series: its own history


def _load(run, data: str | None, allow_future: bool) -> tuple[list[Series], str]:
    meta = run.meta
    df, _, path = load_table_or_builtin(data or run.config.data, "forecast")
    roles = dict(meta["roles"])
    require_columns(df, [roles["time_col"], roles["id_col"], *roles["target"], *roles["known"], *roles["past"]],
                    path)
    return read_series(df, roles, path, allow_future=allow_future), path


def evaluate(run, models: list[ForecastTask], data: str | None = None) -> dict[str, dict[str, float]]:
    """Rolling-origin evaluation (``backtests`` folds of ``horizon``) beside naive, seasonal naive and ETS."""
    from .baselines import ets, forecast_metrics, naive, seasonal_naive
    cfg, meta = run.config, run.meta
    series, path = _load(run, data, allow_future=False)
    L, H, m = cfg.lookback, cfg.horizon, meta["season_length"]
    rows: dict[str, list[dict[str, float]]] = {"grukit": [], "naive": [], "seasonal_naive": [], "ets": []}
    plotted = []
    for s in series:
        if s.n_obs < L + H:
            raise DataError(f"series {s.id!r} has {s.n_obs} points; evaluation needs lookback + horizon = "
                            f"{L + H}", path=path)
        folds = min(cfg.backtests, (s.n_obs - L) // H)
        for j in range(folds, 0, -1):
            origin = s.n_obs - j * H
            hist, actual = s.y[:origin], s.y[origin:origin + H]
            fc = _forecast(models, s, origin, meta, cfg, _scaler_for(s, meta, origin))
            for c in range(s.y.shape[1]):
                hc, ac = hist[:, c], actual[:, c]
                rows["grukit"].append(forecast_metrics(ac, fc["point"][:, c], hc, m,
                                                       fc.get("lo", [None])[:, c] if "lo" in fc else None,
                                                       fc["hi"][:, c] if "hi" in fc else None))
                rows["naive"].append(forecast_metrics(ac, naive(hc, H), hc, m))
                rows["seasonal_naive"].append(forecast_metrics(ac, seasonal_naive(hc, H, m), hc, m))
                rows["ets"].append(forecast_metrics(ac, ets(hc, H, m), hc, m))
            if j == 1 and len(plotted) < 4:
                plotted.append((s, origin, fc))
    table = {k: {name: float(np.mean([r[name] for r in v])) for name in v[0]} for k, v in rows.items() if v}
    try:
        from ..plots import forecast_plot
        forecast_plot([(s.id, s.times, s.y, origin, fc) for s, origin, fc in plotted], meta["roles"]["target"],
                      run.path / "plots" / "forecast.png", title=f"held-out forecast: {Path(path).name}")
    except Exception as e:  # noqa: BLE001 - metrics matter more than the picture
        import warnings
        warnings.warn(f"could not draw the forecast plot: {e}", stacklevel=2)
    return table


def predict(run, models: list[ForecastTask], data: str | None, out: str | Path | None = None,
            holdout: int = 0) -> list[Path]:
    """Forecast ``horizon`` steps after each series' last observed target; CSV (with intervals) and PNG.

    ``holdout`` > 0 forecasts from ``holdout`` steps before the end instead, so the CSV gets an ``actual``
    column and the PNG the actuals beside the forecast (a back-test of one origin)."""
    from ..runs import atomic_write
    cfg, meta = run.config, run.meta
    series, path = _load(run, data, allow_future=True)
    H, C = cfg.horizon, meta["n_targets"]
    target_names = meta["roles"]["target"]
    records, plotted = [], []
    for s in series:
        if s.n_obs < cfg.lookback:
            raise DataError(f"series {s.id!r} has {s.n_obs} observed points; the model reads lookback = "
                            f"{cfg.lookback}", path=path)
        origin = s.n_obs - holdout
        if origin < cfg.lookback:
            raise DataError(f"series {s.id!r}: --holdout {holdout} leaves {origin} observed points before the "
                            f"forecast origin; the model reads lookback = {cfg.lookback}", path=path)
        fc = _forecast(models, s, origin, meta, cfg, _scaler_for(s, meta, origin))
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
