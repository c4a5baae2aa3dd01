"""ForecastConfig: options of the forecasting task (torch-free, read by the CLI at start-up)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import TaskConfig, choice, opt
from ..data.panel import DUPLICATES, GAPS

__all__ = ["ForecastConfig", "BASELINE_NAMES"]

BASELINE_NAMES = ("naive", "seasonal_naive", "naive2", "theta", "ets", "ses", "holt", "damped", "comb", "arima")


@dataclass
class ForecastConfig(TaskConfig):
    """Multi-horizon forecasting of one or many series with a GRU over a lookback window."""

    time_col: str = opt("", "time column (empty: a column named time/date/ds/timestamp if present, else row order)")
    target: tuple[str, ...] = opt((), "target column(s), comma separated (empty: every numeric column not "
                                      "otherwise used)")
    known: tuple[str, ...] = opt((), "covariates known in the future (calendar, prices), comma separated")
    past: tuple[str, ...] = opt((), "covariates observed only up to the forecast origin, comma separated")
    id_col: str = opt("", "series-id column when the file holds many series")
    lookback: int = opt(0, "time steps the GRU reads before each forecast origin; 0 = auto: 36, or where the "
                           "median series has fewer than 36 origins (training points minus the horizon), half "
                           "of them, so it still gives as many training windows (M1 yearly, 15 points, "
                           "horizon 6: lookback 36 lost to naive by half, 4 beat it; see README)")
    horizon: int = opt(24, "time steps forecast at once (direct multi-horizon head)")
    likelihood: str = opt("quantile", "output: point (MSE), gaussian (mean and scale) or quantile (pinball loss)")
    quantiles: tuple[float, ...] = opt((0.1, 0.5, 0.9), "quantiles for likelihood=quantile; the outer pair "
                                                       "gives the interval, 0.5 the point forecast")
    interval: float = opt(0.8, "nominal coverage of the prediction interval for likelihood=gaussian")
    transform: str = opt("auto", "target transform before scaling: none, log (positive data), sqrt "
                                 "(non-negative counts), auto (log when every target value is > 0)")
    linear_skip: bool = opt(True, "add a linear map from the lookback window to the horizon (residual head)")
    window_norm: bool = opt(True, "subtract each input window's mean level from inputs and add it back to the "
                                  "forecast (handles trends and level shifts)")
    window_scale: bool = opt(False, "also divide each window (after its level) by its local scale, the mean "
                                     "absolute step between consecutive lookback values, and weigh its errors "
                                     "in those units (as MASE does): series that trend smoothly and series "
                                     "that jump then count alike; likelihood point or quantile")
    backtests: int = opt(1, "rolling-origin evaluation folds; the last fold is the held-out tail of length "
                            "horizon")
    season_length: int = opt(0, "seasonal period for seasonal-naive, ETS and MASE (0: from the time "
                                "frequency, 12 for monthly)")
    ensemble: int = opt(1, "models trained with different seeds, combined by their median (evaluation and "
                           "predict)")
    lookbacks: tuple[int, ...] = opt((), "lookback ensemble: train on windows cut at random to one of these "
                                         "lengths (<= lookback) and forecast with the median over all of them")
    layout: str = opt("auto", "table layout: long (one row per step), wide (M4: id then values, blanks after "
                              "the end), auto (wide when there is no time column and the first column holds ids)")
    gaps: str = opt("interpolate", "time steps a series skips (days left out of daily data) and empty values "
                                   "between a series' values: interpolate (insert the steps, fill the values "
                                   "linearly in time), keep (read the rows as consecutive steps, dropping rows "
                                   "with an empty target) or error; a warning names them either way")
    duplicates: str = opt("error", "two rows of one series with the same time stamp: error, or combine them "
                                   "with mean, sum or last")
    test_data: str = opt("", "file with the values after each series' training data (e.g. M4's test file); "
                             "evaluation then forecasts from the end of the training data instead of holding "
                             "out backtests x horizon points")
    val_origins: int = opt(0, "grukit tune: rolling-origin validation folds, each a model trained on the points "
                              "before its own validation windows, the folds' data ending val_step apart; the "
                              "search objective is their mean validation loss (0 = 3 for a single series under "
                              "1,000 points, where one validation block is too few to choose settings by, else 1)")
    val_step: int = opt(0, "points between the ends of successive validation folds (0 = horizon, or less on a "
                           "short series so the earliest fold keeps half the training windows)")
    fold_shift: int = opt(0, "points dropped from the end of each series' training part before the training / "
                             "validation split (grukit tune sets it for the earlier validation folds)")
    max_windows: int = opt(0, "training windows per series, evenly spaced over its history, the last one "
                               "included (-1 = all; 0 = auto: all, unless the panel has more than 50,000, "
                               "then the cap that keeps about 50,000, so an epoch stays minutes, not hours)")
    deseasonalize: bool = opt(False, "divide each series by its classical multiplicative seasonal indices (when "
                                     "the M4 seasonality test finds the season) before the transform")
    es_hybrid: bool = opt(False, "ES-RNN-style hybrid: per-series level and seasonal smoothing coefficients and "
                                 "initial seasonality, learned jointly with the GRU, normalise each window")
    series_embedding: int = opt(0, "size of a learned per-series id embedding fed to the GRU (0 = off)")
    head_init: str = opt("auto", "the GRU's part of the head: baseline (starts at zero, so the untrained model is "
                                 "the skip's seasonal-naive forecast), random (PyTorch's init), auto (baseline for "
                                 "many series, random for one: its few validation windows then stop training at "
                                 "the near-baseline first epochs)")
    skip_init: str = opt("naive", "start of the linear skip: naive (the seasonal-naive forecast, the naive one when "
                                  "M4's seasonality test finds no season in most series), ses (the (seasonal) "
                                  "simple exponential smoothing forecast, its weight fitted by least squares "
                                  "on the training parts: naive when that weight is 1, a long average when "
                                  "small) or mean (zero: the window's level, its mean or the ES hybrid's "
                                  "smoothed level)")
    skip_decay: float = opt(0.0, "L2 penalty on the linear skip's departure from its start (the naive or mean "
                                 "forecast), added to the training loss: a prior for short, noisy series")
    skip_prior: float = opt(1.0, "where the data are scarce (fewer full-lookback training windows than lookback "
                                 "steps, all series together: a single short series such as lynx or airline), "
                                 "add skip_prior x lookback / training windows to skip_decay, holding the skip's "
                                 "weights near their start; 0 = none (see README)")
    mase_loss: bool = opt(True, "weight each series' training and validation loss by 1 / its in-sample mean "
                                "absolute seasonal difference (encoded units), as MASE scales errors, instead of "
                                "equally; a single series' weight is 1, so this changes panels only (M4 Weekly "
                                "and Hourly and M1 at the defaults gained with it, see README)")
    calibrate: str = opt("auto", "rescale the prediction intervals around the point forecast, per horizon step, "
                                 "so that they cover the nominal share of the validation targets (conformal, "
                                 "on forecasts of points never trained on): on, off, auto (on when every "
                                 "horizon step has at least 2 / (1 - coverage) validation targets, i.e. 40 at "
                                 "95%: a panel of series, not one short series)")
    patch: int = opt(0, "the GRU reads the lookback in non-overlapping patches of this many steps (one recurrent "
                        "step per patch: lookback / patch steps, far faster on long lookbacks); 0 = the seasonal "
                        "period when it is >= 24 (hourly and finer) and the lookback holds two periods, else 1")
    baselines: tuple[str, ...] = opt(("naive", "seasonal_naive", "naive2", "theta", "ets", "damped", "comb", "arima"),
                                     "baselines fitted beside the model: naive, seasonal_naive, naive2, theta, "
                                     "ets (automatic), ses, holt, damped, comb (M4's benchmarks: SES, Holt, "
                                     "damped trend and their mean, on the seasonally adjusted series), arima")
    combine: tuple[str, ...] = opt(("auto",), "statistical forecasts averaged with the network's point forecast "
                                   "(equal weights; intervals move with it): auto (ses, damped and theta, kept "
                                   "only where that forecasts the validation windows better: short noisy "
                                   "series, not large panels), off, or baseline names (ets,theta,arima,...), "
                                   "fitted on each history at forecast time")
    n_jobs: int = opt(1, "processes fitting the baselines (0 = one per CPU)")
    batch_size: int = opt(16, "windows per batch")
    max_epochs: int = opt(200, "upper bound on training epochs")
    patience: int = opt(30, "early stopping patience in epochs (at most; see patience_steps)")
    patience_steps: int = opt(0, "early stopping waits at most this many optimiser steps, at least 3 epochs, so "
                                 "a panel whose epoch is thousands of steps stops after a few idle epochs (0 = off: "
                                 "patience counts epochs; on M4 Weekly 3000 cut training 8x and cost OWA 0.13)")
    hidden_size: int = opt(32, "GRU units")
    lr: float = opt(1e-2, "Adam learning rate")

    loss_fields: ClassVar[tuple[str, ...]] = ("likelihood", "quantiles", "interval", "mase_loss", "transform",
                                              "deseasonalize")
    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune forecast` search space
        "hidden_size": [16, 32, 64, 128],
        "num_layers": [1, 2],
        "lookback": [0, 12, 24, 36, 48, 72],     # 0: auto (the default, so trial 0 is the defaults)
        "lr": {"low": 1e-3, "high": 3e-2, "log": True},
        "batch_size": [8, 16, 32],
        "head_dropout": {"low": 0.0, "high": 0.3},
    }   # not window_norm: the per-series scaler is fitted on the training part validation points included, so
    # a model without it learns their level: on nile and on M1 the search chose window_norm=False for its lower
    # validation loss, and it lost on test to the defaults (see README); not window_scale: its validation loss is
    # in each window's local units, not comparable across trials

    def problems(self) -> list[str]:
        p = super().problems()
        if self.lookback < 0 or self.horizon < 1:
            p.append(f"lookback={self.lookback}, horizon={self.horizon}: expected lookback >= 1 (or 0 = auto) and "
                     "horizon >= 1")
        choice(p, "likelihood", self.likelihood, ["point", "gaussian", "quantile"])
        choice(p, "transform", self.transform, ["none", "log", "sqrt", "auto"])
        choice(p, "skip_init", self.skip_init, ["naive", "ses", "mean"])
        if self.window_scale and self.likelihood == "gaussian":
            p.append("window_scale needs likelihood point or quantile (a Gaussian's scale is not rescaled)")
        if self.likelihood == "quantile":
            if not self.quantiles or any(not 0 < q < 1 for q in self.quantiles):
                p.append(f"quantiles={list(self.quantiles)}: expected values strictly between 0 and 1")
            elif list(self.quantiles) != sorted(set(self.quantiles)):
                p.append(f"quantiles={list(self.quantiles)}: expected increasing, distinct values")
        if not 0 < self.interval < 1:
            p.append(f"interval={self.interval}: expected a coverage in (0, 1)")
        if self.backtests < 1 or self.ensemble < 1 or self.season_length < 0:
            p.append("backtests and ensemble must be >= 1, season_length >= 0")
        choice(p, "layout", self.layout, ["auto", "long", "wide"])
        choice(p, "duplicates", self.duplicates, list(DUPLICATES))
        choice(p, "gaps", self.gaps, list(GAPS))
        if any(not 1 <= k <= (self.lookback or k) for k in self.lookbacks):
            p.append(f"lookbacks={list(self.lookbacks)}: expected lengths between 1 and lookback={self.lookback}")
        if self.val_origins < 0 or self.val_step < 0 or self.fold_shift < 0:
            p.append(f"val_origins={self.val_origins}, val_step={self.val_step}, fold_shift={self.fold_shift}: "
                     "expected integers >= 0")
        if self.max_windows < -1 or self.series_embedding < 0 or self.n_jobs < -1:
            p.append("max_windows must be >= -1 (-1 = all, 0 = auto), series_embedding >= 0, n_jobs >= -1")
        if self.patience_steps < 0:
            p.append(f"patience_steps={self.patience_steps}: expected an integer >= 0 (0 = patience in epochs only)")
        choice(p, "head_init", self.head_init, ["auto", "baseline", "random"])
        choice(p, "calibrate", self.calibrate, ["auto", "on", "off"])
        if self.skip_decay < 0 or self.skip_prior < 0:
            p.append(f"skip_decay={self.skip_decay}, skip_prior={self.skip_prior}: expected >= 0 (0 = none)")
        if not 0 <= self.patch <= self.lookback:
            p.append(f"patch={self.patch}: expected 0 (the season) or a length between 1 and lookback={self.lookback}")
        for b in self.baselines:
            choice(p, "baselines", b, list(BASELINE_NAMES))
        if len(self.combine) > 1 and {"auto", "off"} & set(self.combine):
            p.append(f"combine={list(self.combine)}: auto and off stand alone; or name baselines")
        for b in self.combine:
            choice(p, "combine", b, ["auto", "off", *BASELINE_NAMES])
        return p
