"""Conformal interval calibration: the scores by hand, the scaling, and a trained panel whose intervals then
cover the nominal share of its validation targets, through the one inference path (forecast_series)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from grukit.tasks.forecast_config import ForecastConfig
from grukit.errors import ConfigError
from grukit.tasks.forecast import after_fit, forecast_series, prepare
from grukit.tasks.forecast_intervals import apply_scales, conformal_scales, nominal_coverage
from grukit.train import fit

from test_forecast_panel import FAST, wide_panel


def test_scores_and_finite_sample_quantile_by_hand():
    # one step, 9 targets, point 0, interval [-1, 2]: scores |y| below, y / 2 above
    y = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 6.0]).reshape(9, 1, 1)
    point, lo, hi = np.zeros_like(y), -np.ones_like(y), 2 * np.ones_like(y)
    # scores: 3, 1, .5, 0, .25, .5, 1, 2, 3 -> sorted 0 .25 .5 .5 1 1 2 3 3
    # coverage 0.8: k = ceil(10 * 0.8) = 8 -> the 8th smallest = 3
    np.testing.assert_allclose(conformal_scales(point, lo, hi, y, 0.8), [3.0])
    # coverage 0.5: k = ceil(5) = 5 -> 1.0 (the interval already covers half)
    np.testing.assert_allclose(conformal_scales(point, lo, hi, y, 0.5), [1.0])
    assert conformal_scales(point, lo, hi, y, 0.95) is None               # k = 10 > n = 9
    assert conformal_scales(point, lo, hi, y, 0.5, min_scores=10) is None


def test_scales_per_step_and_across_series():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, (200, 3, 2)) * np.array([1.0, 2.0, 4.0])[None, :, None]   # wider further ahead
    point, lo, hi = np.zeros_like(y), -np.ones_like(y), np.ones_like(y)
    s = conformal_scales(point, lo, hi, y, 0.9)
    assert s.shape == (3,) and s[0] < s[1] < s[2]
    scaled = apply_scales({"point": point, "lo": lo, "hi": hi}, s)
    inside = (y >= scaled["lo"]) & (y <= scaled["hi"])
    for h in range(3):                                  # at least the nominal share, at most one score more
        assert 0.9 <= inside[:, h].mean() <= 0.9 + 1 / 400 + 0.01


def test_apply_scales_keeps_point_and_quantile_order():
    point = np.array([[[1.0]], [[2.0]]])                                   # (N=2, H=1, C=1)
    q = np.stack([point - 1, point, point + 3], -1)                        # (2, 1, 1, 3)
    out = apply_scales({"point": point, "lo": q[..., 0], "hi": q[..., -1], "quantiles": q}, [0.5])
    np.testing.assert_allclose(out["lo"], point - 0.5)
    np.testing.assert_allclose(out["hi"], point + 1.5)
    np.testing.assert_allclose(out["quantiles"][..., 1], point)
    np.testing.assert_array_equal(out["point"], point)


def test_nominal_coverage_and_bad_value():
    assert nominal_coverage(ForecastConfig(quantiles=(0.025, 0.5, 0.975))) == pytest.approx(0.95)
    assert nominal_coverage(ForecastConfig(likelihood="gaussian", interval=0.9)) == pytest.approx(0.9)
    assert nominal_coverage(ForecastConfig(likelihood="point")) is None
    with pytest.raises(ConfigError, match=r"calibrate='yes': expected one of auto, on, off"):
        ForecastConfig(calibrate="yes").validate()


def test_trained_panel_calibrated_on_validation_and_used_by_forecast_series(tmp_path):
    """calibrate=on: meta.json gets one scale per horizon step; forecast_series applies it, and the
    validation targets are then covered at (at least) the nominal rate."""
    data = wide_panel(tmp_path / "w.csv", lengths=(80, 70, 75, 66, 90, 60))
    opts = dict(lookback=12, horizon=4, season_length=6, quantiles=(0.1, 0.5, 0.9), val_fraction=0.5,
                transform="none", combine=("off",), **FAST)         # affine codec: the scaling by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(data), out=tmp_path / "run", calibrate="on", evaluate=False, **opts)
        prepared = prepare(run.config)
    scales = run.meta["interval_scale"]
    assert len(scales) == 4 and all(s > 0 for s in scales)
    assert after_fit(run.config, prepared, run.models) == {"interval_scale": scales}      # deterministic
    # the validation windows' targets, forecast through forecast_series from their own histories
    series = prepared.extra["series"]
    ds = prepared.val.dataset
    hits, n = 0, 0
    raw_meta = {k: v for k, v in run.meta.items() if k != "interval_scale"}
    for si, origin in ds.index:
        s = series[si]
        hist, target = s.y[:origin, 0], s.y[origin:origin + 4, 0]
        fc = forecast_series(run.models(), run.meta, run.config, [hist], ids=[s.id])[0]
        raw = forecast_series(run.models(), raw_meta, run.config, [hist], ids=[s.id])[0]
        np.testing.assert_allclose(fc["point"], raw["point"])
        p = raw["point"][:, 0]                                              # the scaling, by hand
        np.testing.assert_allclose(fc["lo"][:, 0], p + np.array(scales) * (raw["lo"][:, 0] - p), rtol=1e-6)
        np.testing.assert_allclose(fc["hi"][:, 0], p + np.array(scales) * (raw["hi"][:, 0] - p), rtol=1e-6)
        hits += ((target >= fc["lo"][:, 0] - 1e-3) & (target <= fc["hi"][:, 0] + 1e-3)).sum()
        n += len(target)
    assert n >= 40 and hits / n >= 0.8                                     # nominal 0.8 on validation


def test_auto_leaves_one_short_series_uncalibrated(tmp_path):
    data = wide_panel(tmp_path / "w.csv", lengths=(60,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(data), out=tmp_path / "run", lookback=12, horizon=6, season_length=6,
                  evaluate=False, combine=("off",), **FAST)       # combine=auto would load them to choose
    assert run.config.calibrate == "auto" and "interval_scale" not in run.meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(run.config)
    assert after_fit(run.config, prepared, lambda: pytest.fail("loaded the models with nothing to calibrate")) == {}
    with pytest.warns(UserWarning, match=r"calibrate=on: \d+ validation targets per horizon step are too few"):
        cfg = ForecastConfig.from_dict({**run.config.to_dict(), "calibrate": "on", "quantiles": [0.01, 0.5, 0.99]})
        assert after_fit(cfg, prepare(cfg), run.models) == {}


def test_one_collapsed_interval_does_not_set_the_scale():
    y = np.full((10, 1, 1), 0.5)
    point, lo, hi = np.zeros_like(y), -np.ones_like(y), np.ones_like(y)
    lo[0], hi[0] = 0.0, 0.0                                  # one window's interval collapsed to its point
    # its half-width counts as 0.1 (a tenth of the median 1): score 5, the others 0.5; k = ceil(11 * 0.9) = 10
    np.testing.assert_allclose(conformal_scales(point, lo, hi, y, 0.9), [5.0])


def test_uninformative_intervals_left_as_trained(tmp_path):
    """A model whose quantiles have not separated (head_init baseline: all start at the seasonal naive value,
    and a learning rate too small to move them) would need a huge scale: a warning, no calibration."""
    data = wide_panel(tmp_path / "w.csv", lengths=(80, 70, 75, 66, 90, 60))
    with pytest.warns(UserWarning, match=r"interval calibration: the validation targets need intervals \d+x wider"):
        run = fit("forecast", data=str(data), out=tmp_path / "run", lookback=12, horizon=4, season_length=6,
                  val_fraction=0.5, calibrate="on", evaluate=False, **{**FAST, "lr": 1e-9, "max_epochs": 1})
    assert "interval_scale" not in run.meta
