r"""Forecasting: one global GRU over padded, masked lookback windows of many series, a direct multi-horizon head.

Data (read by :mod:`grukit.data.panel`): a long CSV/Parquet table (time, targets, ``known`` / ``past``
covariates, series id), the M4 wide layout, or a built-in series. Series of any length train together: a short
series' windows are padded on the left and masked; one too short to forecast at all is skipped with a warning
naming it. Each series is encoded per :mod:`grukit.data.windows` (optional seasonal adjustment, log/sqrt
transform, per-series standardisation on its training part); ``meta.json`` keeps the scalers.

Model options (each a config field): window-level normalisation (``window_norm``), seasonal adjustment
(``deseasonalize``), an ES-RNN-style hybrid (``es_hybrid``: per-series smoothing coefficients and initial
seasonality learned with the GRU, :mod:`grukit.tasks.forecast_es`), series-id embeddings
(``series_embedding``), point / Gaussian / quantile outputs, ensembles over seeds (``ensemble``) and lookbacks
(``lookbacks``) combined by their median.

Inference has one entry point, :func:`forecast_series`, which the CLI (evaluate, predict), the estimator
``GRUForecaster`` and the HTTP server call; it runs the models through :func:`grukit.tasks.base.infer`.
Evaluation and prediction files live in :mod:`grukit.tasks.forecast_eval`.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .forecast_config import ForecastConfig
from ..data.batching import Prepared, loader
from ..data.panel import MAX_MAGNITUDE, Series, drop_short, load_panel
from ..data.seasonal import season_from_values, seasonal_factors, seasonality_test
from ..data.timeseries import season_from_times
from ..data.windows import (Codec, WindowDataset, fold_shifts, fwd, needs_fill, scaler, split_origins, to_batch,
                            window_at)
from ..errors import ConfigError, DataError
from . import forecast_eval
from .base import SequenceTask, infer
from .forecast_combine import choose_on_validation, combine_forecasts, static_combine
from .forecast_es import ESLayer
from .forecast_intervals import MAX_SCALE, MIN_SCORES_FACTOR, apply_scales, conformal_scales, nominal_coverage
from .heads import DirectForecastHead

__all__ = ["ForecastTask", "prepare", "prepare_series", "held_out", "skip_season", "ses_alpha", "resolve_lookback",
           "resolve_max_windows", "resolve_patience", "resolve_plan",
           "forecast_series", "after_fit", "evaluate", "predict", "Series", "choose_transform", "season_of",
           "mase_weights", "validation_folds", "assemble_config", "SHORT_SERIES"]

SHORT_SERIES = 1000       # a single series shorter than this is validated over 3 rolling-origin folds by tune


# ====================================================================== data
def choose_transform(cfg_transform: str, series: list[Series], path: str = "") -> str:
    """``auto``: log when every observed target is > 0, else none; log/sqrt are checked against the data."""
    pos = all((s.y[: s.n_obs] > 0).all() for s in series)
    transform = ("log" if pos else "none") if cfg_transform == "auto" else cfg_transform
    if transform == "log" and not pos:
        raise DataError("transform=log needs positive targets; use --transform none", path=path)
    if transform == "sqrt" and any((s.y[: s.n_obs] < 0).any() for s in series):
        raise DataError("transform=sqrt needs non-negative targets; use --transform none", path=path)
    return transform


def season_of(y: np.ndarray, m: int, deseasonalize: bool) -> np.ndarray:
    """Per-series seasonal factors (m,) for the encoding: the classical ones when asked and found, else ones."""
    if not deseasonalize or m <= 1 or y.shape[1] != 1:
        return np.ones(1)
    return seasonal_factors(y[:, 0], m)


def mase_weights(zs: list[np.ndarray], ends: list[int], m: int) -> list[float]:
    """Per-series loss weights 1 / d_i, d_i the mean absolute seasonal (lag m; lag 1 when the training part is
    shorter than m + 1) difference of the encoded training part, over the median weight, clipped to [0.05, 20]:
    a loss weighted so averages errors scaled as MASE scales them."""
    d = []
    for z, end in zip(zs, ends):
        z = z[:end]
        lag = m if end > m else 1
        diff = np.abs(z[lag:] - z[:-lag]) if end > lag else np.zeros(0)
        d.append(float(diff.mean()) if diff.size and diff.mean() > 1e-6 else np.nan)
    inv = 1 / np.asarray(d)
    med = np.nanmedian(inv) if np.isfinite(inv).any() else 1.0
    return np.clip(np.nan_to_num(inv / med, nan=1.0), 0.05, 20.0).tolist()


def ses_alpha(trains: list[np.ndarray], m: int, grid: int = 50) -> float:
    """The smoothing weight of (seasonal) simple exponential smoothing fitted to ``trains`` (1-D encoded
    training parts) by least squares over a grid of ``grid`` values in (0, 1]: each of the ``m`` phases keeps its
    own level l <- a y + (1 - a) l, started at its first value, and every later value is forecast by its phase's
    level; the squared errors of all series are pooled (the series are scaled alike by then). a = 1 is the
    (seasonal) naive forecast, small a a long average: what the skip's ``ses`` start uses."""
    alphas = np.linspace(1.0 / grid, 1.0, grid)                           # (A,)
    sse = np.zeros(grid)
    for y in trains:
        y = np.asarray(y, dtype=np.float64)
        y = y[np.isfinite(y)]
        if len(y) <= m:
            continue
        level = np.tile(y[:m], (grid, 1))                                  # (A, m)
        for t in range(m, len(y)):
            k = t % m
            e = y[t] - level[:, k]                                         # (A,)
            sse += e * e
            level[:, k] += alphas * e
    return float(alphas[int(np.argmin(sse))]) if sse.any() else 1.0


def skip_season(trains: list[np.ndarray], m: int) -> int:
    """The period of the skip's seasonal-naive start: ``m`` when at least half the series long enough to test
    (3 periods) pass M4's seasonality test on their training part, else 1 (the naive forecast): repeating the
    last period of a series without a season repeats its noise."""
    tested = [seasonality_test(y, m) for y in trains if len(y) >= 3 * m] if m > 1 else []
    return m if tested and 2 * sum(tested) >= len(tested) else 1


def _covariates(s: Series, cov_scale: dict) -> np.ndarray:
    cov = np.concatenate([s.known, s.past], 1)
    return (cov - cov_scale["mean"]) / cov_scale["std"] if cov.shape[1] else cov


def prepare(cfg: ForecastConfig) -> Prepared:
    series, roles, path = load_panel(cfg.data, layout=cfg.layout, duplicates=cfg.duplicates, gaps=cfg.gaps,
                                     time_col=cfg.time_col, target=cfg.target, known=cfg.known, past=cfg.past,
                                     id_col=cfg.id_col)
    return prepare_series(cfg, series, roles, path)


def held_out(cfg: ForecastConfig) -> int:
    """Points kept out of training at each series' end: none with ``test_data``, else ``backtests x horizon``
    for the evaluation; plus ``fold_shift`` (an earlier rolling-origin validation fold ends that much sooner)."""
    return (0 if cfg.test_data else cfg.backtests * cfg.horizon) + cfg.fold_shift


def prepare_series(cfg: ForecastConfig, series: list[Series], roles: dict, path: str = "",
                   hold: int | None = None) -> Prepared:
    """Loaders and meta for series already read (``prepare`` reads ``cfg.data``; the estimator passes arrays).
    ``hold``: points kept out of training at each series' end (default: none with ``test_data``, else
    ``backtests x horizon`` for the evaluation), plus ``fold_shift`` (an earlier rolling-origin validation fold)."""
    hold = held_out(cfg) if hold is None else hold + cfg.fold_shift
    series = drop_short(series, hold + 2, f"train and hold out {hold} points", path)
    m, tested, L, _ = resolve_plan(cfg, series, hold)
    H = cfg.horizon
    if not any(s.n_obs - hold >= H + 1 for s in series):
        n, folds = max(s.n_obs for s in series), (0 if cfg.test_data else cfg.backtests)
        fits = (n - 1 - cfg.fold_shift) // (folds + 1)     # the longest series: n - folds x H - shift >= H + 1
        hint = f"--horizon {fits} or less fits its {n} points" if fits >= 1 else "lower --backtests"
        raise DataError(f"too short: no series has horizon {H} + held-out {hold} (backtests x horizon + "
                        f"fold_shift) + 1 = {H + hold + 1} points, the least that gives one training window; "
                        f"lower --horizon or --backtests ({hint})", path=path, column=roles["id_col"] or None)
    transform = choose_transform(cfg.transform, series, path)
    K = len(roles["known"])
    covs = np.concatenate([np.concatenate([s.known, s.past], 1)[: s.n_obs - hold] for s in series])
    cov_scale = scaler(covs) if covs.shape[1] else {"mean": [], "std": []}
    scalers, seasons, zs, cov_list, train_idx, val_idx = {}, {}, [], [], [], []
    fill = needs_fill([s.n_obs - hold for s in series], L, H, cfg.max_windows, cfg.val_fraction)
    for i, s in enumerate(series):
        end = s.n_obs - hold
        season = season_of(s.y[:end], m, cfg.deseasonalize)
        v = s.y[:end] / season[np.arange(end) % len(season)][:, None]
        scalers[s.id] = scaler(fwd(v, transform))
        if len(season) > 1:
            seasons[s.id] = season.tolist()
        zs.append(Codec(transform, scalers[s.id], season, s.id).encode(s.y[: s.n_obs]))
        cov_list.append(_covariates(s, cov_scale) if covs.shape[1] else np.zeros((s.n_obs, 0)))
        train_o, val_o = split_origins(end, L, H, cfg.max_windows, cfg.val_fraction, fill)
        train_idx += [(i, int(o)) for o in train_o]
        val_idx += [(i, int(o)) for o in val_o]
    sids = list(range(len(series)))
    train_ds = WindowDataset(zs, cov_list, train_idx, L, H, K, sids, cfg.lookbacks, cfg.seed)
    val_ds = WindowDataset(zs, cov_list, val_idx, L, H, K, sids)
    C, P = len(roles["target"]), len(roles["past"])
    resolve_patience(cfg, len(train_ds))
    short = [s.id for s in series if s.n_obs - hold < L + H]
    meta = {"input_size": C + 1 + K + P + cfg.series_embedding, "n_targets": C, "n_known": K, "n_past": P,
            "roles": roles, "transform": transform, "season_length": int(m), "scalers": scalers,
            "seasons": seasons, "cov_scaler": cov_scale, "data_name": path, "series_ids": [s.id for s in series],
            "short_series": short, "has_val": len(val_ds) > 0, "n_train_windows": len(train_ds),
            "n_val_windows": len(val_ds), "padded_fill": fill}
    meta["skip_season"] = tested
    fixed = static_combine(cfg.combine)
    if fixed is not None:                                 # else after_fit asks the validation windows
        meta["combine"] = fixed
    if cfg.skip_init == "ses" and cfg.linear_skip:
        period = 1 if cfg.deseasonalize or cfg.es_hybrid else meta["skip_season"]
        meta["skip_alpha"] = ses_alpha([z[: s.n_obs - hold, 0] for z, s in zip(zs, series)], period)
    if cfg.mase_loss:
        meta["loss_weights"] = mase_weights(zs, [s.n_obs - hold for s in series], int(m))
    return Prepared(loader(train_ds, cfg.batch_size, True, cfg.num_workers, cfg.seed),
                    loader(val_ds, cfg.batch_size, False, cfg.num_workers) if len(val_ds) else None, meta,
                    {"series": series})


AUTO_LOOKBACK = 36        # lookback=0: this many steps, or fewer where the median series cannot fill them


def resolve_lookback(cfg: ForecastConfig, lengths: list[int], hold: int, in_place: bool = True,
                     season: int = 1) -> int:
    """``lookback`` 0 (auto) made concrete: ``AUTO_LOOKBACK``, unless the median series' room (its training part,
    ``lengths`` minus ``hold``, minus the horizon: the origins a full horizon leaves) is smaller than that; then
    half the room, at least 1, so that the median series gives as many training windows as its lookback has
    steps. Where the series have a ``season`` (the period M4's test finds, :func:`skip_season`) longer than
    that (half-hourly 48, weekly 52), one period, if the room holds two: a window shorter than the period
    cannot even give the seasonal-naive forecast (measured on aeon's half-hourly solar series, one period beat
    two and 36 steps). A lookback given stays. ``in_place``: written into ``cfg`` (so the run's config.yaml
    records it)."""
    if cfg.lookback:
        return cfg.lookback
    room = int(np.median([n - hold for n in lengths])) - cfg.horizon if lengths else AUTO_LOOKBACK
    lookback = AUTO_LOOKBACK if room >= AUTO_LOOKBACK else max(1, room // 2)
    if lookback < season <= room // 2:
        lookback = season
    if any(k > lookback for k in cfg.lookbacks):
        raise ConfigError(f"lookbacks={list(cfg.lookbacks)}: longer than the automatic lookback {lookback}; "
                          "pass --lookback")
    if in_place:
        cfg.lookback = lookback
    return lookback


WINDOW_BUDGET = 50_000    # max_windows=0: all training windows up to about this many in the whole panel


def resolve_max_windows(cfg: ForecastConfig, lengths: list[int], hold: int, lookback: int,
                        in_place: bool = True) -> int:
    """``max_windows`` 0 (auto) made concrete: 0 (every window) while the panel's forecast origins number at most
    ``WINDOW_BUDGET``; above it (M4 Daily's 4,227 series give about 10 million), the largest per-series cap
    whose windows stay within the budget, with a one-line note, so that an epoch of the default batch size
    takes minutes. -1 (all) and a cap given stay. ``in_place``: written into ``cfg`` (config.yaml records it)."""
    if cfg.max_windows:
        return cfg.max_windows
    last = np.asarray(lengths) - hold - cfg.horizon                    # each series' last origin
    counts = np.where(last >= lookback, last - lookback + 1, np.maximum(last, 0))
    if counts.sum() <= WINDOW_BUDGET:
        return 0
    lo, hi = 1, int(counts.max())
    while lo < hi:                                                     # the largest cap within the budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(counts, mid).sum() <= WINDOW_BUDGET else (lo, mid - 1)
    if in_place:
        cfg.max_windows = lo
        warnings.warn(f"{len(lengths)} series give {int(counts.sum()):,} training windows; each trains on at most "
                      f"{lo}, evenly spaced over its history (max_windows; -1 = all)", stacklevel=2)
    return lo


def resolve_plan(cfg: ForecastConfig, series: list[Series], hold: int, in_place: bool = True
                 ) -> tuple[int, int, int, int]:
    """(season, the season M4's test finds (:func:`skip_season`), lookback, max_windows) of ``series`` whose last
    ``hold`` points are held out: the automatic values where the config has 0 (written into it with
    ``in_place``), one place for training and for ``grukit tune``'s fold plan."""
    m = int(cfg.season_length or season_from_times(series[0].times))
    if not cfg.season_length and series[0].times is None:          # no time stamps: the season from the values
        m, share = season_from_values([s.y[: s.n_obs - hold, 0] for s in series])
        if m > 1 and in_place:
            warnings.warn(f"no time column: seasonal period {m} found in the values (their differences' "
                          f"autocorrelation peaks at lag {m} in {share:.0%} of the series tested); pass "
                          "--season-length to set another", stacklevel=2)
    lengths = [s.n_obs for s in series]
    tested = skip_season([s.y[: s.n_obs - hold, 0] for s in series], m)
    lookback = resolve_lookback(cfg, lengths, hold, in_place=in_place, season=tested)
    return m, tested, lookback, resolve_max_windows(cfg, lengths, hold, lookback, in_place=in_place)


MIN_PATIENCE = 3          # patience_steps never stops sooner than this many epochs without improvement


def resolve_patience(cfg: ForecastConfig, n_windows: int) -> int:
    """Early stopping's patience in epochs: ``patience``, or fewer where an epoch of ``n_windows`` training
    windows is so many steps that ``patience_steps`` pass in fewer epochs, but at least ``MIN_PATIENCE``
    (a single series: ~10 steps an epoch, 30 epochs; M4 Weekly at the defaults: ~3,600 steps, 3). Written
    into ``cfg`` so the run's config.yaml (and a resume) records it."""
    if cfg.patience_steps <= 0 or cfg.patience <= MIN_PATIENCE:
        return cfg.patience
    steps = max(1, math.ceil(n_windows / cfg.batch_size))
    cfg.patience = min(cfg.patience, max(MIN_PATIENCE, math.ceil(cfg.patience_steps / steps)))
    return cfg.patience


def validation_folds(cfg: ForecastConfig) -> list[int]:
    """``fold_shift`` of each rolling-origin validation fold ``grukit tune`` trains for one setting (``[0]``:
    the normal split only); see :func:`grukit.data.windows.fold_shifts`. ``val_origins`` 0 gives 3 folds for a
    single series shorter than ``SHORT_SERIES`` points, else 1. The plan follows the longest series."""
    series, roles, path = load_panel(cfg.data, layout=cfg.layout, duplicates=cfg.duplicates, gaps=cfg.gaps,
                                     time_col=cfg.time_col, target=cfg.target, known=cfg.known, past=cfg.past,
                                     id_col=cfg.id_col)
    hold = held_out(cfg)
    _, _, lookback, windows = resolve_plan(cfg, series, hold, in_place=False)   # a search's start stays auto
    longest = max(series, key=lambda s: s.n_obs)
    end = longest.n_obs - hold
    k = cfg.val_origins or (3 if len(series) == 1 and end < SHORT_SERIES else 1)
    name = f"series {longest.id!r}" if len(series) > 1 else f"{path or cfg.data}"
    fill = needs_fill([s.n_obs - hold for s in series], lookback, cfg.horizon, windows, cfg.val_fraction)
    return fold_shifts(end, lookback, cfg.horizon, k, cfg.val_step, windows, cfg.val_fraction, name, fill)


def assemble_config(configs: list[ForecastConfig]) -> ForecastConfig:
    """The run config of an ensemble assembled from runs of different settings (``grukit tune``'s best trials,
    best first): the first's, with the longest lookback of them all, so that each window holds what every
    member reads (a member with a shorter lookback reads the end of it, :class:`_CropView`)."""
    return configs[0].replace(lookback=max(int(c.lookback) for c in configs))


# ====================================================================== model
SCALE_FLOOR = 1e-2   # window_scale: the least local scale (encoded units; a series' scaler gives it std 1)


class ForecastTask(SequenceTask):
    """GRU encoder over the (normalised, masked) lookback window, a direct multi-horizon head on its state."""

    task_name = "forecast"
    ensemble_rule = "median"

    def __init__(self, config, meta, member: int = 0):
        super().__init__(config, meta, member)
        n_series = max(1, len(self.meta.get("series_ids", [])))
        c = self.config
        self.embed = nn.Embedding(n_series, c.series_embedding) if c.series_embedding else None
        self.es = ESLayer(n_series, int(self.meta.get("season_length", 1))) if c.es_hybrid else None
        w = self.meta.get("loss_weights") if c.mase_loss else None
        self.register_buffer("series_w", torch.tensor(w, dtype=torch.float32) if w else None, persistent=False)

    @property
    def patch_len(self) -> int:
        """Steps per GRU input (``patch``; 0: a high-frequency season (m >= 24, hourly and finer) when the lookback
        holds two of them, where reading step by step costs m times more recurrent steps; 1 otherwise)."""
        c = self.config
        if c.patch:
            return int(c.patch)
        m = int(self.meta.get("season_length", 1))
        return m if m >= 24 and 2 * m <= c.lookback else 1

    def build_encoder(self, input_size: int | None = None):
        size = int(self.meta["input_size"] if input_size is None else input_size)
        return super().build_encoder(size * self.patch_len)                       # p steps of F features

    @property
    def n_params(self) -> int:
        c = self.config
        return {"point": 1, "gaussian": 2, "quantile": len(c.quantiles)}[c.likelihood]

    @property
    def skip_weight(self) -> float:
        """The L2 weight on the skip's departure from its start: ``skip_decay``, plus ``skip_prior`` x lookback /
        training windows where the data are scarce (``padded_fill``: fewer full-lookback windows than the
        lookback has steps, so each output's L skip weights outnumber the windows that fit them): a prior of
        fixed strength per window (the loss is a mean over windows) that holds the skip near its smoothing
        start. Lynx at the defaults (36 steps, 35 windows) without it fitted a cycle that overshot the test
        years threefold; with windows to spare (sunspots' 157) the skip stays free, where a prior cost."""
        c, m = self.config, self.meta
        n = int(m.get("n_train_windows", 0))
        return c.skip_decay + (c.skip_prior * c.lookback / n if c.skip_prior and n and m.get("padded_fill") else 0.0)

    def build_head(self):
        c, m = self.config, self.meta
        adjusted = c.deseasonalize or c.es_hybrid                # the window is seasonally adjusted already
        head = DirectForecastHead(self.encoder_size, c.horizon, m["n_targets"], self.n_params, c.lookback,
                                  m["n_known"], c.linear_skip, c.head_dropout,
                                  1 if adjusted else int(m.get("skip_season", m.get("season_length", 1))),
                                  n_locations=1 if c.likelihood == "gaussian" else None,
                                  zero_correction=c.head_init == "baseline" or
                                  (c.head_init == "auto" and len(m.get("series_ids", [])) > 1))
        if c.skip_init == "mean" and head.skip is not None:      # the window's level: the mean (or ES) forecast
            nn.init.zeros_(head.skip.weight)
            head.mark_skip_start()
        elif c.skip_init == "ses" and head.skip is not None and "skip_alpha" in m:
            head.start_at_ses(float(m["skip_alpha"]))
        return head

    def build_metrics(self):
        from torchmetrics import MeanAbsoluteError, MetricCollection
        return MetricCollection({"mae": MeanAbsoluteError()})

    def batch_to_inputs(self, batch):
        return batch, batch.get("y")

    def _embedding(self, sid: Tensor) -> Tensor:
        known = (sid >= 0).view(-1, 1)
        e = self.embed(sid.clamp(min=0))
        return torch.where(known, e, self.embed.weight.mean(0, keepdim=True).expand_as(e))

    def forward(self, inputs, state=None):
        c = self.config
        x, window, mask = inputs["x"], inputs["window"], inputs["mask"]           # (B, L, F), (B, L, C), (B, L)
        B, L, C = window.shape
        H = c.horizon
        if self.es is not None:
            base_in, base_out = self.es(window, mask, inputs["sid"], inputs["phase"], H)
        else:
            w = mask.unsqueeze(-1)
            level = (window * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1) if c.window_norm \
                else torch.zeros_like(window[:, :1])                             # (B, 1, C) masked mean
            base_in, base_out = level.expand(B, L, C), level.expand(B, H, C)
        adj = (window - base_in) * mask.unsqueeze(-1)                              # (B, L, C), padding -> 0
        scale = self.local_scale(inputs) if c.window_scale else None               # (B, 1, C)
        if scale is not None:
            adj = adj / scale
        feats = [adj, x[..., C:]]
        if self.embed is not None:
            feats.append(self._embedding(inputs["sid"]).unsqueeze(1).expand(B, L, -1))
        inp = torch.cat(feats, -1)                                                 # (B, L, F)
        p = self.patch_len
        if p > 1:                                                                  # one GRU step per patch
            pad = (-L) % p
            inp = F.pad(inp, (0, 0, pad, 0))                                      # (B, L + pad, F), zeros first
            inp = inp.reshape(B, (L + pad) // p, p * inp.shape[-1])               # (B, T/p, p*F)
        seq, h_n = self.encoder(inp, state)
        h = torch.cat([h_n[-2], h_n[-1]], -1) if c.bidirectional else h_n[-1]    # (B, D*H)
        out = self.head(h, adj, inputs.get("known_future"))                       # (B, horizon, C, P)
        if scale is not None:                                                      # back to encoded units
            out = out * scale.unsqueeze(-1)
        shift = base_out.unsqueeze(-1)                                             # (B, horizon, C, 1)
        if c.likelihood == "gaussian":                                             # only the mean moves
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
        return out[..., 0]                                                         # (B, horizon, C)

    def local_scale(self, inputs) -> Tensor:
        """Each window's mean absolute step between consecutive valid values, per target (B, 1, C), at least
        ``SCALE_FLOOR`` (encoded units): the local scale that ``window_scale`` divides by, MASE's scale taken
        over the lookback."""
        window, mask = inputs["window"], inputs["mask"]                            # (B, L, C), (B, L)
        both = (mask[:, 1:] * mask[:, :-1]).unsqueeze(-1)                          # (B, L-1, 1)
        steps = (window[:, 1:] - window[:, :-1]).abs() * both                      # (B, L-1, C)
        return (steps.sum(1, keepdim=True) / both.sum(1, keepdim=True).clamp(min=1)).clamp(min=SCALE_FLOOR)

    def loss(self, out, y, inputs):
        c = self.config
        if c.likelihood == "point":
            per = F.mse_loss(out[..., 0], y, reduction="none")                    # (B, horizon, C)
        elif c.likelihood == "gaussian":
            sigma = F.softplus(out[..., 1]) + 1e-3
            per = F.gaussian_nll_loss(out[..., 0], y, sigma ** 2, reduction="none")
        else:
            q = torch.tensor(c.quantiles, dtype=out.dtype, device=out.device)    # (Q,)
            diff = y.unsqueeze(-1) - out                                          # (B, horizon, C, Q)
            per = torch.maximum(q * diff, (q - 1) * diff)
        if c.window_scale:                                  # errors in each window's local units, as MASE
            sc = self.local_scale(inputs)                   # (B, 1, C)
            per = per / (sc.unsqueeze(-1) if per.dim() == 4 else sc ** 2)
        w = self.skip_weight if self.training else 0.0      # the property once per step
        reg = w * self.head.skip_departure() if w else 0.0
        if self.series_w is None:
            return per.mean() + reg
        sid = inputs["sid"]
        w = torch.where(sid >= 0, self.series_w[sid.clamp(min=0)], torch.ones_like(self.series_w[:1]))  # (B,)
        return (per.flatten(1).mean(1) * w).mean() + reg

    def metric_inputs(self, out, y, inputs):
        return self._point(out), y

    def decode(self, out, inputs=None) -> dict[str, Tensor]:
        """Point forecast and interval bounds, each (B, horizon, C), and for quantile outputs all quantiles
        (B, horizon, C, Q); encoded units."""
        c = self.config
        if c.likelihood == "quantile":
            out = out.sort(dim=-1).values                                         # rearrange crossed quantiles
        point = self._point(out)
        if c.likelihood == "quantile" and len(c.quantiles) >= 2:
            return {"point": point, "lo": out[..., 0], "hi": out[..., -1], "quantiles": out}
        if c.likelihood == "gaussian":
            sigma = F.softplus(out[..., 1]) + 1e-3
            z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + c.interval / 2)))
            return {"point": point, "lo": point - z * sigma, "hi": point + z * sigma}
        return {"point": point}


Task = ForecastTask


# ====================================================================== the one inference entry point
class _LookbackView:
    """An ensemble member that reads only the last ``lookback`` steps of each window (the rest masked)."""

    def __init__(self, model: ForecastTask, lookback: int):
        self.model, self.lookback = model, lookback
        self.ensemble_rule, self.training = model.ensemble_rule, model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def on_predict_epoch_start(self) -> None:
        self.model.on_predict_epoch_start()

    def predict_step(self, batch, batch_idx):
        L, C = batch["window"].shape[1], batch["window"].shape[2]
        cut = max(0, L - self.lookback)
        mask, x, window = batch["mask"].clone(), batch["x"].clone(), batch["window"].clone()
        if cut:                                    # as window_at pads: the oldest kept value, masked out
            first = torch.argmax((mask[:, cut:] > 0).float(), dim=1) + cut           # (B,) first observed kept
            fill = window[torch.arange(len(window)), first].unsqueeze(1)              # (B, 1, C)
            window[:, :cut] = fill
            x[:, :cut, :C] = window[:, :cut]
            mask[:, :cut] = 0
            x[:, :, C] = mask                                                      # the mask feature
        return self.model.predict_step({**batch, "mask": mask, "x": x, "window": window}, batch_idx)


class _CropView(_LookbackView):
    """An ensemble member trained on a shorter lookback than the run's windows (an ensemble assembled from runs
    of different settings, ``member_configs`` in meta.json): it reads each window's last ``lookback`` steps,
    sliced off, exactly the window :func:`window_at` cuts for that lookback."""

    def predict_step(self, batch, batch_idx):
        cut = batch["window"].shape[1] - self.lookback
        if cut > 0:
            batch = {**batch, "x": batch["x"][:, cut:], "window": batch["window"][:, cut:],
                     "mask": batch["mask"][:, cut:]}
            if "phase" in batch:                                               # the window's first step
                batch["phase"] = batch["phase"] + cut
        return self.model.predict_step(batch, batch_idx)


def _views(members: list[ForecastTask], cfg: ForecastConfig) -> list:
    """What reads each window: the ``lookbacks`` views of each member, else each member as it is or, where it
    was trained on a shorter lookback than the run's, cropped to it."""
    if cfg.lookbacks:
        return [_LookbackView(mdl, lb) for mdl in members for lb in cfg.lookbacks]
    views = []
    for mdl in members:
        own = int(mdl.config.lookback)
        if own > cfg.lookback:
            raise ConfigError(f"ensemble member {mdl.member} reads {own} steps, more than the run's lookback of "
                              f"{cfg.lookback}; meta.json's member_configs do not fit config.yaml")
        views.append(_CropView(mdl, own) if own < cfg.lookback else mdl)
    return views


def forecast_series(models: ForecastTask | Sequence[ForecastTask], meta: dict, config: ForecastConfig,
                    series: Sequence[np.ndarray], *, known_future: Sequence[np.ndarray] | None = None,
                    covariates: Sequence[np.ndarray] | None = None, ids: Sequence[str] | None = None,
                    batch_size: int = 256) -> list[dict[str, np.ndarray]]:
    """Forecast the ``horizon`` steps after each history, in original units. THE forecasting entry point.

    Args:
        models: a trained :class:`ForecastTask` or an ensemble of them (``Run.models()``).
        meta, config: the run's ``meta.json`` and :class:`~grukit.tasks.forecast_config.ForecastConfig`.
        series: one array per series: its history, ``(T,)`` or ``(T, C)`` with ``C`` = the run's targets, in
            original units, oldest first, at least one finite value (short histories are padded and masked).
        known_future: per series, ``(horizon, K)`` values of the known covariates after the history (required
            when the run has known covariates).
        covariates: per series, ``(T, K + P)`` known then past covariates aligned with the history (zeros when
            omitted).
        ids: per series, its id in the training data: that series' scaler, smoothing parameters and embedding
            are used; an unknown or missing id gets statistics from its own history and the mean parameters.

    Returns:
        One dict per series with ``"point"`` ``(horizon, C)``, and when the run has intervals ``"lo"`` / ``"hi"``
        ``(horizon, C)`` and, for quantile outputs, ``"quantiles"`` ``(horizon, C, Q)``; original units. Ensemble
        members (and the ``lookbacks`` views of each) are combined in :func:`grukit.tasks.base.infer`, in
        encoded units, by their median (by their mean for an ensemble that ``grukit tune`` assembled).
    """
    members = [models] if isinstance(models, ForecastTask) else list(models)
    cfg = config
    L, H, K, C = cfg.lookback, cfg.horizon, int(meta["n_known"]), int(meta["n_targets"])
    F_cov = K + int(meta.get("n_past", len(meta["roles"]["past"])))
    index = {sid: i for i, sid in enumerate(meta.get("series_ids", []))}
    m = int(meta.get("season_length", 1))
    items, codecs, starts, hists = [], [], [], []
    for j, raw in enumerate(series):
        y = np.asarray(raw, dtype=np.float64)
        y = y.reshape(len(y), -1) if y.ndim == 1 else y
        hists.append(y)
        sid = str(ids[j]) if ids is not None else None
        name = sid if sid is not None else f"#{j}"
        if y.ndim != 2 or y.shape[1] != C or len(y) < 1:
            raise DataError(f"series {name}: history of shape {np.shape(raw)}; expected (T,) or (T, {C}) with T >= 1")
        if not np.isfinite(y).all():
            raise DataError(f"series {name}: the history has missing or infinite values; expected finite numbers")
        if np.abs(y).max() > MAX_MAGNITUDE:
            raise DataError(f"series {name}: values up to {np.abs(y).max():.3g} exceed {MAX_MAGNITUDE:.0e}; "
                            "divide the data by a power of ten first")
        if meta["transform"] == "log" and (y <= 0).any() or meta["transform"] == "sqrt" and (y < 0).any():
            raise DataError(f"series {name}: the run's {meta['transform']} transform needs "
                            f"{'positive' if meta['transform'] == 'log' else 'non-negative'} values")
        if sid in meta["scalers"]:                                          # a training series: its encoding
            scale = meta["scalers"][sid]
            season = np.asarray(meta.get("seasons", {}).get(sid, [1.0]), dtype=float)
        else:
            season = season_of(y, m, cfg.deseasonalize)
            scale = scaler(fwd(y / season[np.arange(len(y)) % len(season)][:, None], meta["transform"]))
        codec = Codec(meta["transform"], scale, season, name)
        z = codec.encode(y)
        cov = np.zeros((len(y) + H, F_cov))
        if covariates is not None and F_cov:
            cov[: len(y)] = np.asarray(covariates[j], dtype=float).reshape(len(y), F_cov)
        if K:
            kf = np.asarray(known_future[j], dtype=float) if known_future is not None else np.zeros((0, K))
            if kf.shape[0] < H:
                raise DataError(f"known covariates {', '.join(meta['roles']['known'])} need {H} future rows after "
                                f"the last observed target of series {name}; found {kf.shape[0]}")
            cov[len(y):, :K] = kf[:H].reshape(H, K)
        if F_cov:
            cs = meta["cov_scaler"]
            cov = (cov - cs["mean"]) / cs["std"]
        item = window_at(z, cov, len(y), L, H, K)
        item["sid"] = np.int64(index.get(sid, -1))
        items.append(item)
        codecs.append(codec)
        starts.append(len(y))
    batches = (to_batch(items[i:i + batch_size]) for i in range(0, len(items), batch_size))
    merged = _run(members, cfg, batches)
    if merged and "lo" in merged and meta.get("interval_scale"):               # conformal calibration
        merged = apply_scales(merged, meta["interval_scale"])
    results = []
    for j, codec in enumerate(codecs):
        res = {}
        for k, v in merged.items():
            if k == "quantiles":                                                  # (H, C, Q)
                res[k] = np.stack([codec.decode(v[j][..., q], starts[j]) for q in range(v.shape[-1])], -1)
            else:
                res[k] = codec.decode(v[j], starts[j])
        results.append(res)
    return combine_forecasts(results, hists, H, m, meta.get("combine") or [], n_jobs=cfg.n_jobs)


def _run(members: list[ForecastTask], cfg: ForecastConfig, batches) -> dict[str, np.ndarray]:
    """Every member (and its ``lookbacks`` views, or its crop to a shorter lookback) over ``batches`` through
    :func:`infer`, combined by the members' rule (the median; the mean for an ensemble that ``grukit tune``
    assembled); the decoded outputs concatenated, encoded units."""
    outs = infer(_views(members, cfg), batches, rule=members[0].ensemble_rule)
    return {k: torch.cat([o[k] for o in outs]).numpy().astype(np.float64) for k in outs[0]} if outs else {}


def after_fit(config: ForecastConfig, prepared: Prepared, load_models) -> dict:
    """Meta entries learnt once every member is trained: ``interval_scale``, the conformal scale per horizon step
    (:mod:`grukit.tasks.forecast_intervals`) from the validation windows, when ``calibrate`` asks for it.
    ``load_models()`` gives the trained members; it is called only when there is something to calibrate.
    ``combine`` (auto): whether the statistical combination forecasts the validation windows better
    (:func:`grukit.tasks.forecast_combine.choose_on_validation`), with the scores behind the choice."""
    models: list = []

    def members() -> list:
        if not models:
            models.extend(load_models())
        return models
    found = {} if "combine" in prepared.meta else _choose_combine(config, prepared, members)
    return {**found, **_calibrate(config, prepared, members)}


def _choose_combine(config: ForecastConfig, prepared: Prepared, members) -> dict:
    series, H, m = prepared.extra["series"], config.horizon, int(prepared.meta["season_length"])
    index = prepared.val.dataset.index if prepared.val is not None else []
    wins = [(series[i].y[:o], series[i].y[o:o + H]) for i, o in index]

    def own(pick: list[int]) -> list[dict]:
        chosen = [series[index[k][0]] for k in pick]
        cov = [np.concatenate([s.known, s.past], 1) for s in chosen]
        return forecast_series(members(), prepared.meta, config, [wins[k][0] for k in pick],
                               ids=[s.id for s in chosen], covariates=[c[:index[k][1]] for c, k in zip(cov, pick)],
                               known_future=[s.known[index[k][1]:index[k][1] + H] for s, k in zip(chosen, pick)])
    methods, scores = choose_on_validation(own, wins, H, m, n_jobs=config.n_jobs, series_of=[i for i, _ in index])
    return {"combine": methods, "combine_validation_mase": {k: round(v, 6) for k, v in scores.items()}}


def _calibrate(config: ForecastConfig, prepared: Prepared, members) -> dict:
    coverage = nominal_coverage(config)
    if config.calibrate == "off" or coverage is None or prepared.val is None:
        return {}
    need = math.ceil(MIN_SCORES_FACTOR / (1 - coverage)) if config.calibrate == "auto" else 1
    if len(prepared.val.dataset) * int(prepared.meta["n_targets"]) < need:
        return {}                                        # auto on one short series: nothing loaded or forecast
    batches = list(prepared.val)
    out = _run(members(), config, batches)
    y = torch.cat([b["y"] for b in batches]).numpy()
    scales = conformal_scales(out["point"], out["lo"], out["hi"], y, coverage)
    if scales is None:
        if config.calibrate == "on":
            warnings.warn(f"calibrate=on: {y.shape[0] * y.shape[2]} validation targets per horizon step are too "
                          f"few for {coverage:.0%} intervals; the intervals are left as trained", stacklevel=2)
        return {}
    if scales.max() > MAX_SCALE:
        warnings.warn(f"interval calibration: the validation targets need intervals {scales.max():.0f}x wider "
                      f"than trained (more than {MAX_SCALE:.0f}x: the trained intervals carry no information, "
                      "train longer); the intervals are left as trained", stacklevel=2)
        return {}
    return {"interval_scale": [round(float(v), 6) for v in scales]}


# ====================================================================== the registry protocol
def evaluate(run, models: list[ForecastTask], data: str | None = None) -> dict[str, dict[str, float]]:
    """See :func:`grukit.tasks.forecast_eval.evaluate` (scores :func:`forecast_series` beside the baselines)."""
    return forecast_eval.evaluate(run, models, data, forecast=forecast_series)


def predict(run, models: list[ForecastTask], data: str | None, out=None, holdout: int = 0):
    """See :func:`grukit.tasks.forecast_eval.predict` (writes :func:`forecast_series` forecasts)."""
    return forecast_eval.predict(run, models, data, out, holdout=holdout, forecast=forecast_series)
