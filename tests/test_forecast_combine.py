"""Forecast combination: the network's point forecast averaged with statistical forecasts (``combine``)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from grukit.errors import ConfigError
from grukit.tasks.baselines import fit_baselines
from grukit.tasks.forecast import forecast_series
from grukit.tasks.forecast_combine import choose_on_validation, combine_forecasts, static_combine
from grukit.tasks.forecast_config import ForecastConfig
from grukit.train import fit

from test_forecast_panel import FAST, wide_panel


def test_combination_is_the_mean_and_intervals_move_with_it():
    """By hand: the point is the mean of the network's and each method's forecast; lo, hi and every quantile
    shift by the same amount (widths kept); the inputs are not changed."""
    rng = np.random.default_rng(0)
    hist = [np.cumsum(rng.normal(size=(40, 1)), 0) + 50, np.sin(np.arange(30.0))[:, None] + 10]
    own = [{"point": np.full((5, 1), 3.0), "lo": np.full((5, 1), 1.0), "hi": np.full((5, 1), 6.0),
            "quantiles": np.stack([np.full((5, 1), 1.0), np.full((5, 1), 3.0)], -1)} for _ in hist]
    out = combine_forecasts(own, hist, 5, 1, ["ets", "theta"])
    base, _ = fit_baselines([h[:, 0] for h in hist], 5, 1, ["ets", "theta"])
    for j in range(2):
        mix = (3.0 + base["ets"][j]["point"] + base["theta"][j]["point"]) / 3
        np.testing.assert_allclose(out[j]["point"][:, 0], mix)
        np.testing.assert_allclose(out[j]["hi"][:, 0] - out[j]["lo"][:, 0], 5.0)
        np.testing.assert_allclose(out[j]["lo"][:, 0], mix - 2.0)
        np.testing.assert_allclose(out[j]["quantiles"][:, 0, 1], mix)
        assert (own[j]["point"] == 3.0).all()                                    # untouched
    assert combine_forecasts(own, hist, 5, 1, []) is own


def test_auto_asks_the_validation_windows_and_keeps_the_better():
    """auto is decided by the validation windows: a network that forecasts them perfectly stays alone, one that
    is far off is combined with SES, damped and Theta; off and a list of names are decided by the config."""
    assert static_combine(("auto",)) is None
    assert static_combine(("off",)) == [] and static_combine(("arima",)) == ["arima"]
    rng = np.random.default_rng(1)
    wins = []
    for _ in range(30):
        y = np.cumsum(rng.normal(size=48))[:, None] + 100
        wins.append((y[:40], y[40:44]))
    perfect = lambda pick: [{"point": wins[i][1].copy()} for i in pick]          # noqa: E731
    awful = lambda pick: [{"point": wins[i][1] + 1000.0} for i in pick]          # noqa: E731
    methods, scores = choose_on_validation(perfect, wins, 4, 1)
    assert methods == [] and scores["network"] == 0 < scores["combined"]
    methods, scores = choose_on_validation(awful, wins, 4, 1)
    assert methods == ["ses", "damped", "theta"] and scores["combined"] < scores["network"]
    assert choose_on_validation(perfect, [], 4, 1) == ([], {})


def test_every_series_weighs_alike_in_the_choice():
    """A long series has many more validation windows than a short one; the choice reads the latest windows of
    every series, the same number each, and averages per series first (as the test and M4 weigh series):
    letting M4 Weekly's long series dominate chose the mix that the test then scored worse (OWA 0.838 alone,
    0.903 mixed)."""
    from grukit.tasks.forecast_combine import pick_windows
    series_of = [0] * 50 + [1] * 3 + [2] * 10
    assert pick_windows(series_of, limit=9) == [47, 48, 49, 50, 51, 52, 60, 61, 62]      # 3 latest each
    assert pick_windows(series_of, limit=300) == list(range(63))
    many = [i // 2 for i in range(1000)]                                                 # 500 series
    got = pick_windows(many, limit=100)
    assert len(got) == 100 and all(many[p] != many[q] for p, q in zip(got, got[1:]))    # one (the last) each
    assert all(p % 2 == 1 for p in got)
    # a long series the mix suits cannot outvote a short one the network suits when averaged per series
    rng = np.random.default_rng(3)
    wins, series_of = [], []
    for sid, n in ((0, 40), (1, 2)):
        for _ in range(n):
            y = np.cumsum(rng.normal(size=40))[:, None] + 50
            wins.append((y[:36], y[36:]))
            series_of.append(sid)
    net = lambda pick: [{"point": wins[i][1] + (50.0 if series_of[i] == 0 else 0.0)} for i in pick]  # noqa: E731
    assert choose_on_validation(net, wins, 4, 1, series_of=series_of)[1]["network"] == pytest.approx(
        np.mean([np.mean([50 / np.abs(np.diff(wins[i][0][:, 0])).mean() for i in range(40)]), 0.0]))


def test_a_trained_run_records_the_choice_and_forecast_series_applies_it(tmp_path):
    """A run records the validation scores behind auto's choice; a run told to combine with ets and theta
    forecasts (through forecast_series, the one inference path) the mean of the network alone and the two."""
    panel = wide_panel(tmp_path / "panel.csv", lengths=(80, 70, 75, 66))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(panel), out=tmp_path / "panel", lookback=12, horizon=6, season_length=6,
                  evaluate=False, **FAST)
    scores = run.meta["combine_validation_mase"]
    assert set(scores) == {"network", "combined"}
    assert run.meta["combine"] == (["ses", "damped", "theta"] if scores["combined"] < scores["network"] else [])
    one = wide_panel(tmp_path / "one.csv", lengths=(70,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(one), out=tmp_path / "one", lookback=12, horizon=6, season_length=6,
                  evaluate=False, combine=("ets", "theta"), **FAST)
    assert run.meta["combine"] == ["ets", "theta"] and "combine_validation_mase" not in run.meta
    hist = np.linspace(10, 20, 50)
    mixed = forecast_series(run.models(), run.meta, run.config, [hist])[0]["point"][:, 0]
    alone = forecast_series(run.models(), {**run.meta, "combine": []}, run.config, [hist])[0]["point"][:, 0]
    base, _ = fit_baselines([hist], 6, 6, ["ets", "theta"])
    np.testing.assert_allclose(mixed, (alone + base["ets"][0]["point"] + base["theta"][0]["point"]) / 3)



def test_a_run_trained_without_after_fit_learns_it_later(tmp_path):
    """grukit tune's trials skip the combination's choice (and calibration); the best run learns it before
    its test score, from its own config: the same choice and scores as a run that learnt it at once."""
    from grukit.runs import Run
    from grukit.train import learn_after_fit
    panel = wide_panel(tmp_path / "panel.csv", lengths=(80, 70, 75, 66))
    kw = dict(data=str(panel), lookback=12, horizon=6, season_length=6, evaluate=False, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        now = fit("forecast", out=tmp_path / "now", **kw)
        later = fit("forecast", out=tmp_path / "later", after_fit=False, **kw)
    assert later.meta["after_fit_pending"] and "combine" not in later.meta
    learn_after_fit(later)
    meta = Run(tmp_path / "later").meta
    assert meta["after_fit_pending"] is False and meta["combine"] == now.meta["combine"]
    assert meta["combine_validation_mase"] == pytest.approx(now.meta["combine_validation_mase"], rel=1e-4)

@pytest.mark.parametrize("value,match", [(("auto", "ets"), "auto and off stand alone"),
                                         (("ets", "prophet"), "combine.*prophet")])
def test_bad_combine_is_named(value, match):
    with pytest.raises(ConfigError, match=match):
        ForecastConfig(combine=value).validate()
