"""Forecast metrics against hand computations and the M4 published figures; the baselines' basic contracts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grukit.data.seasonal import seasonal_indices, seasonality_test
from grukit.tasks import baselines as B
from grukit.tasks.forecast_metrics import coverage, mase, mase_scale, msis, owa, series_metrics, smape, summarize

M4 = next((p / "shared" / "data" / "m4" for p in Path(__file__).resolve().parents[1].parents
           if (p / "shared" / "data" / "m4").is_dir()), Path(__file__).resolve().parents[1].parent / "shared")


def test_metrics_by_hand():
    a, f = np.array([10.0, 20.0, 0.0]), np.array([12.0, 15.0, 0.0])
    # sMAPE: 200*2/22, 200*5/35, 0 (both zero) -> mean
    assert smape(a, f) == pytest.approx((400 / 22 + 1000 / 35 + 0) / 3)
    hist = np.array([1.0, 3.0, 2.0, 6.0, 4.0])                # lag-2 diffs: |2-1|, |6-3|, |4-2| -> 2
    assert mase_scale(hist, 2) == pytest.approx(2.0)
    assert mase_scale(hist, 9) == pytest.approx(np.mean([2, 1, 4, 2]))   # history too short for m: lag 1
    assert mase_scale(np.ones(5), 1) == 1.0                   # constant history: finite scale
    assert mase(a, f, hist, 2) == pytest.approx((2 + 5 + 0) / 3 / 2)
    lo, hi = np.array([9.0, 21.0, -1.0]), np.array([11.0, 25.0, 1.0])
    # widths 2, 4, 2; 20 is below lo=21 by 1 -> penalty 2/0.05*1 = 40
    assert msis(a, lo, hi, hist, 2, 0.05) == pytest.approx((2 + 4 + 40 + 2) / 3 / 2)
    assert coverage(a, lo, hi) == pytest.approx(2 / 3)
    assert owa(10.0, 2.0, 20.0, 1.0) == pytest.approx((0.5 + 2.0) / 2)
    row = series_metrics(a, f, hist, 2, lo, hi)
    assert row["MAE"] == pytest.approx(7 / 3) and row["RMSE"] == pytest.approx(np.sqrt((4 + 25) / 3))
    table = summarize({"naive2": [{"sMAPE": 10.0, "MASE": 1.0}, {"sMAPE": 30.0, "MASE": 3.0}],
                       "m": [{"sMAPE": 5.0, "MASE": 1.0}, {"sMAPE": 15.0, "MASE": 3.0}]})
    assert table["m"]["OWA"] == pytest.approx((10 / 20 + 2 / 2) / 2)   # OWA of the averages (M4's definition)


def test_seasonal_decomposition_recovers_the_pattern():
    t = np.arange(120)
    pattern = np.array([0.8, 1.0, 1.3, 0.9])
    y = (100 + t) * pattern[t % 4]
    idx = seasonal_indices(y, 4)
    np.testing.assert_allclose(idx, pattern / pattern.mean(), rtol=0.02)
    assert seasonality_test(y, 4) and not seasonality_test(np.random.default_rng(1).normal(size=120), 4)
    fc = B.naive2(y, 8, 4)["point"]                           # last adjusted level times the next indices
    np.testing.assert_allclose(fc / fc[0], idx[(120 + np.arange(8)) % 4] / idx[0], rtol=1e-9)


def test_additive_adjustment_for_series_with_zeros():
    """A series with zeros (solar power at night) cannot be divided by seasonal indices: it is adjusted
    additively (R's decompose(type = "additive")), and the M4 benchmarks then forecast its season, where they
    repeated the last value before; a positive series keeps M4's multiplicative indices."""
    from grukit.data.seasonal import seasonal_adjustment
    day = np.array([0.0, 0.0, 1.0, 3.0, 1.0, 0.0])               # m = 6, zeros at night
    y = np.tile(day, 8) + 2.0 * np.arange(48) / 48               # plus a slow trend
    kind, off = seasonal_adjustment(y, 6)
    # by hand: the centred 2x6 moving average of a period-6 pattern is its mean (5/6) plus the trend, so the
    # offsets are the pattern minus its mean
    assert kind == "add"
    np.testing.assert_allclose(off, day - day.mean(), atol=1e-9)
    point = B.naive2(y, 6, 6)["point"]                             # the last adjusted value plus the season
    np.testing.assert_allclose(point, (y[-1] - off[47 % 6]) + off, atol=1e-9)
    assert np.abs(point - (np.tile(day, 2)[:6] + 2.0)).max() < 0.1     # the next day, not the last value
    for name in ("theta", "ses", "damped", "arima"):
        f = B.METHODS[name](y, 6, 6)
        assert np.abs(f["point"] - (day + 2.0)).max() < 0.3, name  # every benchmark forecasts the day's shape
        assert np.all(f["lo"] <= f["point"]) and np.all(f["point"] <= f["hi"]), name
    assert seasonal_adjustment(y + 1.0, 6)[0] == "mul"           # positive: M4's multiplicative indices
    noise = np.random.default_rng(0).standard_normal(48)          # no season: nothing removed
    assert seasonal_adjustment(noise, 6) == ("mul", pytest.approx(np.ones(6)))


def test_baselines_contracts():
    rng = np.random.default_rng(0)
    t = np.arange(96)
    y = 50 + 0.5 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, 96)
    out, failed = B.fit_baselines([y, y[:30]], 12, 12, ["naive", "seasonal_naive", "naive2", "theta", "ets"],
                                  level=0.9)
    assert failed == {k: 0 for k in out}
    assert (out["naive"][0]["point"] == y[-1]).all()
    np.testing.assert_array_equal(out["seasonal_naive"][0]["point"], y[-12:])
    for k in ("theta", "ets"):
        for fc in out[k]:
            assert fc["point"].shape == (12,) and (fc["lo"] <= fc["point"]).all() and (fc["point"] <= fc["hi"]).all()
    actual = 50 + 0.5 * (96 + np.arange(12)) + 5 * np.sin(2 * np.pi * (96 + np.arange(12)) / 12)
    err = {k: np.abs(out[k][0]["point"] - actual).mean() for k in out}
    assert err["ets"] < err["naive"] and err["ets"] < err["seasonal_naive"]    # trend + season captured
    with pytest.raises(Exception, match="unknown baseline"):
        B.fit_baselines([y], 3, 1, ["prophet"])


def test_m4_smoothing_benchmarks(monkeypatch):
    """SES, Holt and Damped on the seasonally adjusted series; Comb is the mean of their points."""
    from grukit.tasks.forecast_config import BASELINE_NAMES
    assert set(BASELINE_NAMES) == set(B.METHODS)                  # what the config accepts is what exists
    t = np.arange(60, dtype=float)
    line = 10 + 2 * t + np.random.default_rng(0).normal(0, 0.05, 60)
    out, failed = B.fit_baselines([line], 6, 1, ["ses", "holt", "damped", "comb"], level=0.9)
    assert failed == {k: 0 for k in out}
    future = 10 + 2 * (60 + np.arange(6))
    np.testing.assert_allclose(out["holt"][0]["point"], future, atol=0.3)       # the trend goes on
    assert np.ptp(out["ses"][0]["point"]) < 1e-6                                # flat at the last level
    steps = np.diff(out["damped"][0]["point"])
    assert (steps > 0).all() and (steps < 2.05).all() and steps[-1] < steps[0]  # a trend that flattens
    for k in ("ses", "holt", "damped"):
        fc = out[k][0]
        assert (fc["lo"] < fc["point"]).all() and (fc["point"] < fc["hi"]).all()
    parts = np.mean([out[k][0]["point"] for k in ("ses", "holt", "damped")], axis=0)
    np.testing.assert_allclose(out["comb"][0]["point"], parts)
    np.testing.assert_allclose(B.comb(line, 6)["point"], parts, rtol=1e-6)     # alone, it fits the three
    calls = []
    fit_damped = B.METHODS["damped"]
    monkeypatch.setitem(B.METHODS, "damped", lambda *a: calls.append(1) or fit_damped(*a))
    some, _ = B.fit_baselines([line], 6, 1, ["damped", "comb"])                 # the defaults: Damped reused
    np.testing.assert_allclose(some["comb"][0]["point"], parts, rtol=1e-6)
    assert len(calls) == 1                                                      # fitted once, not again by comb
    assert set(out["comb"][0]) == {"point"}                                     # no interval of its own
    pattern = np.array([0.8, 1.0, 1.3, 0.9])
    seasonal = (100 + t) * pattern[t.astype(int) % 4]
    fc = B.damped(seasonal, 8, 4)["point"]                                      # re-seasonalised forecast
    ratio = fc / fc.mean()
    assert ratio.argmax() % 4 == (2 - 60) % 4 and ratio.argmin() % 4 == (0 - 60) % 4


@pytest.mark.parametrize("freq, h, m, published", [("Weekly", 13, 1, (8.866, 2.404, 0.917)),
                                                    ("Hourly", 48, 24, (19.265, 2.956, 1.141))])
def test_m4_damped_benchmark_close_to_published(freq, h, m, published):
    """M4's Damped benchmark against the published sMAPE, MASE and OWA (fitted there with R's ets; statsmodels'
    optimiser lands within a few hundredths: Weekly 8.904 / 2.408 / 0.919, Hourly 19.242 / 2.960 / 1.141)."""
    if not (M4 / f"{freq}-train.csv").is_file():
        pytest.skip(f"M4 files not found under {M4}")
    tr = pd.read_csv(M4 / f"{freq}-train.csv", index_col=0)
    te = pd.read_csv(M4 / f"{freq}-test.csv", index_col=0)
    hist = [r.dropna().to_numpy(float) for _, r in tr.iterrows()]
    act = [te.loc[sid].dropna().to_numpy(float) for sid in tr.index]
    out, failed = B.fit_baselines(hist, h, m, ["naive2", "damped"], n_jobs=2)
    assert failed["damped"] == 0
    table = summarize({k: [series_metrics(a, f["point"], y, m) for a, f, y in zip(act, out[k], hist)] for k in out})
    s, mase_, owa_ = published
    assert table["damped"]["sMAPE"] == pytest.approx(s, abs=0.06)
    assert table["damped"]["MASE"] == pytest.approx(mase_, abs=0.01)
    assert table["damped"]["OWA"] == pytest.approx(owa_, abs=0.004)


@pytest.mark.skipif(not (M4 / "Hourly-train.csv").is_file(), reason=f"M4 files not found under {M4}")
def test_m4_hourly_published_benchmarks_reproduced():
    """Naive, seasonal naive and Naive2 on M4 Hourly reproduce the published sMAPE / MASE to 3 decimals."""
    tr = pd.read_csv(M4 / "Hourly-train.csv", index_col=0)
    te = pd.read_csv(M4 / "Hourly-test.csv", index_col=0)
    hist = [r.dropna().to_numpy(float) for _, r in tr.iterrows()]
    act = [te.loc[sid].dropna().to_numpy(float) for sid in tr.index]
    out, _ = B.fit_baselines(hist, 48, 24, ["naive", "seasonal_naive", "naive2"])
    rows = {k: [series_metrics(a, f["point"], h, 24) for a, f, h in zip(act, out[k], hist)] for k in out}
    table = summarize(rows)
    for k, (s, m_) in {"naive": (43.003, 11.608), "seasonal_naive": (13.912, 1.193),
                       "naive2": (18.383, 2.395)}.items():
        assert round(table[k]["sMAPE"], 3) == s and round(table[k]["MASE"], 3) == m_, k
    assert table["seasonal_naive"]["OWA"] == pytest.approx(0.627, abs=1.5e-3)   # published from rounded parts
