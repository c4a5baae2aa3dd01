"""Many-series forecasting: panels of any length, the M4 wide layout, bad panels, model options, forecast_series."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from grukit.tasks.forecast_config import ForecastConfig
from grukit.errors import ConfigError, DataError
from grukit.runs import Run
from grukit.tasks.forecast import ForecastTask, forecast_series, mase_weights, prepare, ses_alpha, skip_season
from grukit.train import fit

FAST = dict(hidden_size=8, batch_size=32, progress=False, patience=0, lr=1e-2, max_epochs=2,
            baselines=("naive", "naive2"))


def wide_panel(path, lengths=(60, 16, 45, 1), m=6, seed=0):
    """M4 wide layout: id, then values; blanks after each series' end."""
    rng = np.random.default_rng(seed)
    n_max = max(lengths)
    rows = []
    for k, n in enumerate(lengths):
        t = np.arange(n)
        y = 50 + 5 * k + 0.2 * t + 4 * np.sin(2 * np.pi * t / m) + rng.normal(0, 0.3, n)
        rows.append([f"S{k + 1}"] + [f"{v:.3f}" for v in y] + [""] * (n_max - n))
    header = ",".join(f'"V{i + 1}"' for i in range(n_max + 1))
    path.write_text(header + "\n" + "\n".join(",".join([f'"{r[0]}"'] + r[1:]) for r in rows) + "\n")
    return path


def test_short_series_train_and_forecast_one_point_series_skipped(tmp_path):
    """A 16-point series among long ones trains (padded, masked windows) and is forecast; a 1-point series is
    skipped with one warning naming it; the M4 wide layout reads directly."""
    data = wide_panel(tmp_path / "train.csv")
    with pytest.warns(UserWarning, match=r"skipped 1 series too short.*'S4' \(1\)"):
        run = fit("forecast", data=str(data), out=tmp_path / "run", lookback=24, horizon=6, season_length=6,
                  **FAST)
    meta = run.meta
    assert meta["roles"]["layout"] == "wide" and meta["series_ids"] == ["S1", "S2", "S3"]
    assert "S2" in meta["short_series"]                        # 16 - 6 held out < lookback 24 + horizon 6
    per = pd.read_csv(run.path / "evaluation" / "series.csv")
    assert set(per.series) == {"S1", "S2", "S3"}
    s2 = per[(per.series == "S2") & (per.method == "grukit")]
    assert np.isfinite(s2["sMAPE"]).all() and s2["sMAPE"].iloc[0] < 20   # a sane forecast of the short one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = prepare(run.config).train.dataset
    s2 = [ds[i] for i in range(len(ds)) if ds.index[i][0] == 1]           # S2's training windows
    # 10 points before the held-out 6: origins 1..4, too few to validate on unseen targets, so all 4 train
    assert len(s2) == 4 and all(it["mask"][0] == 0 and it["mask"][-1] == 1 for it in s2)   # padded, masked
    assert all(it["x"].shape == (24, 2) for it in s2)                      # [value, mask] per step


def test_wide_test_file_gives_the_evaluation(tmp_path):
    full = wide_panel(tmp_path / "full.csv", lengths=(66, 22, 51))
    df = pd.read_csv(full)
    train, test = df.copy(), df.iloc[:, :7].copy()
    for i in range(len(df)):
        vals = df.iloc[i, 1:].dropna().to_numpy()
        train.iloc[i, 1:] = np.nan
        train.iloc[i, 1:len(vals) - 6 + 1] = vals[:-6]
        test.iloc[i, 1:] = vals[-6:]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    run = fit("forecast", data=str(tmp_path / "train.csv"), test_data=str(tmp_path / "test.csv"),
              out=tmp_path / "run", lookback=24, horizon=6, season_length=6, **FAST)
    per = pd.read_csv(run.path / "evaluation" / "series.csv")
    naive = per[per.method == "naive"].set_index("series")
    for i, sid in enumerate(df.iloc[:, 0]):                   # naive's sMAPE by hand from the test file
        vals = df.iloc[i, 1:].dropna().to_numpy(float)
        hist, act = vals[:-6], vals[-6:]
        want = np.mean(200 * np.abs(act - hist[-1]) / (np.abs(act) + np.abs(hist[-1])))
        assert naive.loc[sid, "sMAPE"] == pytest.approx(want)
        assert naive.loc[sid, "origin"] == len(hist)


def test_bad_panels_name_the_series(tmp_path):
    p = wide_panel(tmp_path / "w.csv", lengths=(30, 30))
    text = p.read_text().splitlines()
    cells = text[2].split(",")
    cells[3] = "n/a?"                                           # a non-numeric cell in series S2, column V4
    text[2] = ",".join(cells)
    p.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"line 3, column 'V4': non-numeric value 'n/a\?' in series 'S2'"):
        fit("forecast", data=str(p), out=tmp_path / "r1", lookback=8, horizon=4, **FAST)
    bad = pd.DataFrame({"date": [f"2020-02-{d:02d}" for d in range(1, 21)], "sales": [str(d) for d in range(20)]})
    bad.loc[6, "sales"] = "12,5"                                 # a decimal comma: the column is read as text
    bad.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(DataError, match=r"no numeric target column found, though column 'sales' is numbers but "
                                        r"for '12,5' at line 8; name it with --target"):
        fit("forecast", data=str(tmp_path / "text.csv"), out=tmp_path / "r0", lookback=4, horizon=2, **FAST)
    rows = [{"date": f"2020-01-{d:02d}", "store": s, "sales": float(d)} for s in "ab" for d in range(1, 29)]
    rows.append({"date": "2020-01-05", "store": "b", "sales": 99.0})
    pd.DataFrame(rows).to_csv(tmp_path / "dup.csv", index=False)
    kw = dict(data=str(tmp_path / "dup.csv"), id_col="store", target="sales", lookback=8, horizon=4, **FAST)
    with pytest.raises(DataError, match=r"series 'b' has duplicate time stamp 2020-01-05.*--duplicates mean"):
        fit("forecast", out=tmp_path / "r2", **kw)
    run = fit("forecast", out=tmp_path / "r3", duplicates="mean", evaluate=False, **kw)
    from grukit.data.panel import load_panel
    series, _, _ = load_panel(str(tmp_path / "dup.csv"), roles=run.meta["roles"], duplicates="mean")
    b = [s for s in series if s.id == "b"][0]
    assert len(b.y) == 28 and b.y[4, 0] == pytest.approx((5.0 + 99.0) / 2)
    with pytest.raises(Exception, match="duplicates='median': expected one of error, mean, sum, last"):
        ForecastConfig(duplicates="median").validate()


def test_large_magnitudes_scale_instead_of_clipping(tmp_path):
    """Values around 1e30 forecast at their own magnitude (no exp(50) clip); 1e300 is refused (see
    test_forecast BAD 'huge')."""
    t = np.arange(60)
    y = 1e30 * (2 + np.sin(2 * np.pi * t / 6))
    pd.DataFrame({"time": t, "y": y}).to_csv(tmp_path / "big.csv", index=False)
    run = fit("forecast", data=str(tmp_path / "big.csv"), out=tmp_path / "run", lookback=12, horizon=6,
              evaluate=False, **FAST)
    assert run.meta["transform"] == "log"
    fc = forecast_series(run.models(), run.meta, run.config, [y])[0]
    assert fc["point"].shape == (6, 1)
    assert 3e29 < fc["point"].min() and fc["point"].max() < 1e31     # far beyond exp(50) = 5.2e21


def test_es_layer_matches_the_holt_winters_recursion():
    """The hybrid's smoothing on one window equals a hand-written additive Holt-Winters recursion."""
    from grukit.tasks.forecast_es import ESLayer
    torch.manual_seed(0)
    es = ESLayer(n_series=2, season=3)
    with torch.no_grad():
        es.alpha[:] = torch.tensor([0.3, -0.5])
        es.gamma[:] = torch.tensor([-1.0, 0.2])
        es.season0[:] = torch.randn(2, 3)
    x = torch.randn(2, 7, 1, dtype=torch.float32)
    mask = torch.ones(2, 7)
    mask[1, :2] = 0
    x[1, :2] = x[1, 2]                                            # padded like window_at
    sid, phase = torch.tensor([0, 1]), torch.tensor([2, 4])
    base_in, base_out = es(x, mask, sid, phase, horizon=4)
    for b in range(2):
        a, g = torch.sigmoid(es.alpha[b]).item(), torch.sigmoid(es.gamma[b]).item()
        s0 = es.season0[b].detach().numpy()
        s0 = s0 - s0.mean()
        seas = [s0[(phase[b].item() + j) % 3] for j in range(3)]
        xs = x[b, :, 0].numpy()
        level = xs[0] - seas[0]
        used = []
        for t in range(7):
            s = seas[t]
            used.append(s)
            if mask[b, t] > 0:
                new = a * (xs[t] - s) + (1 - a) * level
                seas.append(g * (xs[t] - new) + (1 - g) * s)
                level = new
            else:
                seas.append(s)
        np.testing.assert_allclose(base_in[b, :, 0].detach().numpy(), np.array(used) + level, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(base_out[b, :, 0].detach().numpy(),
                                   [seas[7 + h % 3] + level for h in range(4)], rtol=1e-5, atol=1e-5)
    unknown, _ = es(x[:1], mask[:1], torch.tensor([-1]), phase[:1], 4)     # unknown id: mean parameters
    assert torch.isfinite(unknown).all()


OPTIONS = [
    ("deseasonalize", dict(deseasonalize=True)),
    ("es_hybrid", dict(es_hybrid=True)),
    ("series_embedding", dict(series_embedding=3)),
    ("lookbacks", dict(lookbacks=(6, 12))),
    ("gaussian", dict(likelihood="gaussian")),
    ("patch", dict(patch=5)),
    ("mase_loss", dict(mase_loss=True)),                         # lookback 12 = 2 zero steps + 2 patches of 5
]


@pytest.mark.parametrize("name,extra", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_model_options_train_and_forecast(tmp_path, name, extra):
    data = wide_panel(tmp_path / "w.csv", lengths=(60, 40, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(data), out=tmp_path / "run", lookback=12, horizon=6, season_length=6,
                  **{**FAST, **extra})
    metrics = json_metrics(run)
    assert np.isfinite(metrics["grukit"]["sMAPE"]) and metrics["grukit"]["sMAPE"] < 30
    model = run.models()[0]
    if name == "es_hybrid":
        assert model.es is not None and model.es.alpha.shape == (3,)
        assert not torch.equal(model.es.season0, torch.zeros(3, 6))      # learned jointly with the GRU
    if name == "series_embedding":
        assert model.embed.weight.shape == (3, 3)
    if name == "mase_loss":
        assert model.series_w.shape == (3,) and len(set(run.meta["loss_weights"])) == 3
    if name == "patch":
        assert model.patch_len == 5 and model.encoder.input_size == 5 * run.meta["input_size"]
    if name == "deseasonalize":
        assert set(run.meta["seasons"]) <= {"S1", "S2", "S3"} and run.meta["seasons"]
    hist = [np.linspace(50, 60, 30), np.array([52.0, 53.0])]
    fcs = forecast_series(run.models(), run.meta, run.config, hist)       # unknown ids, a 2-point history
    for fc in fcs:
        assert fc["point"].shape == (6, 1) and np.isfinite(fc["point"]).all()
        assert (fc["lo"] <= fc["point"] + 1e-9).all() and (fc["point"] <= fc["hi"] + 1e-9).all()


def json_metrics(run):
    import json
    return json.loads((run.path / "metrics.json").read_text())


def test_forecast_series_median_of_members_through_infer(tmp_path):
    """forecast_series combines ensemble members by their median (ForecastTask.ensemble_rule) in original
    units; quantiles come back for quantile outputs."""
    data = wide_panel(tmp_path / "w.csv", lengths=(60, 40))
    run = fit("forecast", data=str(data), out=tmp_path / "run", lookback=12, horizon=6, season_length=6,
              ensemble=3, evaluate=False, **FAST)
    models = Run(run.path).models()
    assert len(models) == 3 and ForecastTask.ensemble_rule == "median"
    hist = [np.linspace(50, 70, 40), np.linspace(60, 55, 25)[:, None]]
    alone = [forecast_series(m, run.meta, run.config, hist) for m in models]
    both = forecast_series(models, run.meta, run.config, hist, ids=["S1", "S2"])
    alone_ids = [forecast_series(m, run.meta, run.config, hist, ids=["S1", "S2"]) for m in models]
    for j in range(2):
        want = np.median(np.stack([a[j]["point"] for a in alone_ids]), 0)
        np.testing.assert_allclose(both[j]["point"], want, rtol=1e-5)
        assert both[j]["quantiles"].shape == (6, 1, 3)
        np.testing.assert_allclose(both[j]["quantiles"][..., 1], both[j]["point"], rtol=1e-6)
    assert not np.allclose(alone[0][0]["point"], alone_ids[0][0]["point"])   # ids pick the training scaler
    with pytest.raises(DataError, match=r"series #0: the history has missing or infinite values"):
        forecast_series(models, run.meta, run.config, [np.array([1.0, np.nan])])


def test_layout_detection_and_long_parquet(tmp_path):
    from grukit.data.panel import is_wide, load_panel
    assert is_wide(pd.DataFrame({"V1": ["H1", "H2"], "V2": [1.0, 2.0], "V3": [2.0, np.nan]}))
    assert not is_wide(pd.DataFrame({"date": ["2020-01-01", "2020-01-02"], "a": [1, 2], "b": [3, 4]}))
    assert not is_wide(pd.DataFrame({"store": ["a", "a"], "x": [1, 2], "y": [3, 4]}))     # repeated ids: long
    assert not is_wide(pd.DataFrame({"day": ["2020-01-01", "2020-01-02"], "x": [1, 2], "y": [3, 4]}))
    for ids in (["T1", "T2", "T10"], ["W1", "W2", "W3"], ["D1", "D2", "D3"]):     # M1's / M4's ids parse as dates
        assert is_wide(pd.DataFrame({"id": ids, "V1": [1.0, 2.0, 3.0], "V2": [2.0, np.nan, 1.0]})), ids
    for stamps in (["01/02/2020", "01/03/2020", "01/04/2020"], ["Jan 2020", "Feb 2020", "Mar 2020"],
                   ["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 02:00"]):
        assert not is_wide(pd.DataFrame({"when": stamps, "a": [1.0, 2.0, 3.0], "b": [3.0, 4.0, 5.0]})), stamps
    # a time column by a name that holds "date"/"time" and by its values alone; ids and counts are not times
    from grukit.data.timeseries import pick_time_col
    stamps = ["2021-05-01 00:00:00+00:00", "2021-05-01 00:30:00+00:00", "2021-05-01 01:00:00+00:00"]
    assert pick_time_col(pd.DataFrame({"datetime_gmt": stamps, "solar_gen": [0.0, 0.1, 0.2]}), "", "") \
        == "datetime_gmt"
    assert pick_time_col(pd.DataFrame({"update_count": [1, 2, 3], "when": ["01/02/2020", "01/03/2020",
                                                                         "01/04/2020"]}), "", "") == "when"
    assert pick_time_col(pd.DataFrame({"id": ["T1", "T2", "T3"], "store": ["store 1", "store 2", "store 3"],
                                       "v": [1.0, 2.0, 3.0]}), "", "") == ""
    assert pick_time_col(pd.DataFrame({"a": stamps, "b": stamps}), "", "", exclude=["a"]) == "b"
    long = pd.DataFrame({"ds": list(pd.date_range("2021-01-01", periods=5)) * 2, "id": ["p"] * 5 + ["q"] * 5,
                         "v": np.arange(10.0)})
    long.sample(frac=1, random_state=0).to_parquet(tmp_path / "l.parquet")      # rows shuffled
    series, roles, _ = load_panel(str(tmp_path / "l.parquet"), id_col="id", target=("v",))
    assert roles["layout"] == "long" and sorted(s.id for s in series) == ["p", "q"]
    by = {s.id: s.y[:, 0] for s in series}
    np.testing.assert_array_equal(by["p"], np.arange(5.0))                       # sorted by time per series
    np.testing.assert_array_equal(by["q"], np.arange(5.0, 10.0))


def _model(lookback=12, horizon=6, season=6, **extra):
    meta = {"input_size": 2, "n_targets": 1, "n_known": 0, "n_past": 0, "season_length": season,
            "series_ids": ["a", "b"], "roles": {"target": ["y"], "known": [], "past": []}}
    cfg = ForecastConfig(lookback=lookback, horizon=horizon, hidden_size=4, **extra)
    return ForecastTask(cfg, meta)


def _batch(window):
    B, L = window.shape
    mask = torch.ones(B, L)
    w = window.unsqueeze(-1)                                                        # (B, L, 1)
    return {"x": torch.cat([w, mask.unsqueeze(-1)], -1), "window": w, "mask": mask,
            "known_future": torch.zeros(B, 6, 0), "sid": torch.tensor([0, 1]), "phase": torch.zeros(B).long()}


def test_untrained_head_forecasts_seasonal_naive_exactly():
    """With the linear skip and head_init auto on many series (or baseline), the untrained model's every output
    is the seasonal-naive forecast of the window (the GRU learns a correction to it), with and without window
    normalisation; a single series (auto) or head_init=random keeps PyTorch's init of the GRU's part."""
    torch.manual_seed(0)
    window = torch.randn(2, 12) + 3.0
    want = torch.stack([window[:, 6 + h % 6] for h in range(6)], 1)                 # y[h] = x[L - m + h mod m]
    for norm in (True, False):
        out, _ = _model(window_norm=norm)(_batch(window))                           # (B, H, C, Q)
        for q in range(out.shape[-1]):
            torch.testing.assert_close(out[:, :, 0, q], want, rtol=1e-6, atol=1e-6)
    one = ForecastTask(_model().config, {**_model().meta, "series_ids": ["a"]})
    assert one.head.proj.weight.abs().sum() > 0                                     # auto: random for one series
    assert ForecastTask(_model(head_init="baseline").config, one.meta).head.proj.weight.abs().sum() == 0
    assert _model(head_init="random").head.proj.weight.abs().sum() > 0
    out, _ = _model(likelihood="gaussian")(_batch(window))                          # (B, H, C, 2)
    torch.testing.assert_close(out[:, :, 0, 0], want, rtol=1e-6, atol=1e-6)         # the mean moves,
    torch.testing.assert_close(out[..., 1], torch.zeros(2, 6, 1))                   # not the scale


def test_skip_starts_naive_without_a_season_and_at_the_mean_when_asked():
    """The skip repeats the last period only where M4's seasonality test finds the season in most series (else
    the naive forecast, the last value); skip_init=mean starts it at zero, so the untrained baseline output is the
    window's mean level."""
    rng = np.random.default_rng(0)
    t = np.arange(120)
    seasonal = [10 + 3 * np.sin(2 * np.pi * t / 6) + rng.normal(0, 0.2, 120) for _ in range(3)]
    noise = [rng.normal(0, 1, 120) for _ in range(3)]
    assert skip_season(seasonal, 6) == 6 and skip_season(noise, 6) == 1
    assert skip_season(seasonal[:1] + noise, 6) == 1                                 # most series decide
    assert skip_season([y[:17] for y in seasonal], 6) == 1                           # under 3 periods: untested
    assert skip_season(seasonal, 1) == 1
    torch.manual_seed(0)
    window = torch.randn(2, 12) + 3.0
    model = ForecastTask(_model().config, {**_model().meta, "skip_season": 1})       # as prepare records it
    model.head.proj.weight.data.zero_()
    model.head.proj.bias.data.zero_()
    out, _ = model(_batch(window))
    torch.testing.assert_close(out[:, :, 0, 1], window[:, -1:].expand(2, 6))        # naive: the last value
    mean = _model(skip_init="mean", head_init="baseline")
    out, _ = mean(_batch(window))
    torch.testing.assert_close(out[:, :, 0, 1], window.mean(1, keepdim=True).expand(2, 6))
    with pytest.raises(Exception, match="skip_init"):
        ForecastConfig(skip_init="ridge").validate()


def _ses_by_hand(y, alpha, m=1):
    """Seasonal SES the slow way: each phase's level starts at its first value, l <- l + alpha (y - l)."""
    level, sse = {}, 0.0
    for t, v in enumerate(y):
        k = t % m
        if k in level:
            sse += (v - level[k]) ** 2
            level[k] += alpha * (v - level[k])
        else:
            level[k] = v
    return sse, level


def test_ses_alpha_is_the_least_squares_weight_naive_for_a_random_walk_small_for_noise():
    """ses_alpha picks the grid weight of least pooled one-step squared error: it equals the brute-force
    minimum, statsmodels' SES fit with the same start level (within the grid step), 1 on random walks (the naive
    forecast), small on noise around a level; the seasonal form smooths each phase on its own."""
    rng = np.random.default_rng(0)
    walks = [np.cumsum(rng.normal(size=150)) for _ in range(3)]
    noise = [5 + rng.normal(size=150) for _ in range(3)]
    assert ses_alpha(walks, 1) >= 0.9
    assert ses_alpha(noise, 1) <= 0.1
    local = [np.cumsum(rng.normal(0, 0.3, 200)) + rng.normal(0, 1, 200)]          # local level: between the two
    a = ses_alpha(local, 1)
    grid = np.linspace(0.02, 1.0, 50)
    assert a == grid[np.argmin([_ses_by_hand(local[0], g)[0] for g in grid])]
    from statsmodels.tsa.holtwinters import SimpleExpSmoothing
    fit = SimpleExpSmoothing(local[0], initialization_method="known", initial_level=local[0][0]).fit()
    assert abs(fit.params["smoothing_level"] - a) <= 0.02 + 1e-9
    t = np.arange(240)
    seasonal_noise = [10 + 4 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, 240) for _ in range(2)]
    assert ses_alpha(seasonal_noise, 12) <= 0.25                                     # fixed pattern: average it
    assert ses_alpha([np.cumsum(rng.normal(size=240))], 12) >= 0.9                   # each phase a walk: naive
    assert ses_alpha([np.array([1.0, 2.0])], 4) == 1.0                               # nothing to fit: naive


def test_skip_ses_start_forecasts_the_smoothed_level_of_each_phase():
    """skip_init=ses (with the GRU's part at zero) makes the untrained model's forecast the (seasonal) SES
    forecast of the window: each horizon step the level of its phase, smoothed from that phase's earliest value
    in the window; weight 1 is the seasonal-naive start; prepare records the weight fitted on the training part
    (nile: a level with noise, well below 1)."""
    torch.manual_seed(0)
    window = torch.randn(2, 12) + 3.0
    for season, alpha in ((1, 0.3), (6, 0.45), (6, 1.0)):
        meta = {**_model().meta, "skip_season": season, "skip_alpha": alpha}
        model = ForecastTask(_model(skip_init="ses", head_init="baseline").config, meta)
        for norm in (True, False):
            model.config.window_norm = norm
            out, _ = model(_batch(window))                                           # (B, H, C, Q)
            for b in range(2):
                _, level = _ses_by_hand(window[b].double().numpy(), alpha, season)
                want = torch.tensor([level[(12 + h) % season] for h in range(6)], dtype=out.dtype)
                torch.testing.assert_close(out[b, :, 0, 1], want, rtol=1e-5, atol=1e-5)
        assert torch.equal(model.head.skip_start, model.head.skip.weight)            # skip_decay's prior
    naive = ForecastTask(_model(head_init="baseline").config, {**_model().meta, "skip_season": 6})
    one = ForecastTask(_model(skip_init="ses", head_init="baseline").config,
                       {**_model().meta, "skip_season": 6, "skip_alpha": 1.0})
    torch.testing.assert_close(one.head.skip.weight, naive.head.skip.weight)
    meta = prepare(ForecastConfig(data="nile", skip_init="ses")).meta
    assert 0 < meta["skip_alpha"] < 0.5
    assert "skip_alpha" not in prepare(ForecastConfig(data="nile")).meta


def test_skip_decay_penalises_only_the_skips_departure_from_its_start_in_training():
    """skip_decay=λ adds λ * sum((W - W_start)^2) of the linear skip to the training loss only: zero at the start
    (naive or mean), the hand-computed value after a change, absent from the validation loss; its gradient
    points back to the start."""
    torch.manual_seed(0)
    window = torch.randn(2, 12) + 3.0
    batch = _batch(window)
    y = torch.randn(2, 6, 1)
    for init in ("naive", "mean"):
        model = _model(skip_decay=0.5, skip_init=init)
        start = model.head.skip.weight.detach().clone()
        out, _ = model(batch)
        plain = _model(skip_init=init)
        plain.load_state_dict(model.state_dict())
        plain.train()
        torch.testing.assert_close(model.loss(out, y, batch), plain.loss(out, y, batch))       # 0 at the start
        with torch.no_grad():
            model.head.skip.weight[0, 0] += 0.2
            model.head.skip.weight[3, 5] -= 0.1
        out, _ = model(batch)
        torch.testing.assert_close(model.loss(out, y, batch) - plain.loss(out, y, batch),
                                   torch.tensor(0.5 * (0.2 ** 2 + 0.1 ** 2)))
        model.eval()
        torch.testing.assert_close(model.loss(out, y, batch), plain.loss(out, y, batch))       # not in validation
        model.train()
        model.zero_grad()
        (0.5 * model.head.skip_departure()).backward()
        g = model.head.skip.weight.grad
        assert g[0, 0] > 0 and g[3, 5] < 0 and int((g != 0).sum()) == 2
        torch.testing.assert_close(model.head.skip_start, start)
    assert _model(linear_skip=False, skip_decay=1.0).head.skip_departure() == 0


def test_a_single_short_series_fills_its_windows_and_a_long_one_does_not():
    """prepare records padded_fill: lynx (90 training points, lookback 36, horizon 24) trains on 35 windows, the
    earliest padded, instead of its one full window; sunspots keeps its full windows only."""
    pytest.importorskip("aeon", reason="lynx is aeon's (grukit[timeseries])")
    pytest.importorskip("statsmodels", reason="sunspots is statsmodels' (grukit[timeseries])")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lynx = prepare(ForecastConfig(data="lynx")).meta
        sun = prepare(ForecastConfig(data="sunspots")).meta
    assert lynx["padded_fill"] is True and lynx["n_train_windows"] == 35 and lynx["n_val_windows"] == 8
    assert sun["padded_fill"] is False and sun["n_train_windows"] == 157


def test_skip_prior_weighs_the_skips_departure_by_lookback_over_training_windows_where_data_are_scarce():
    """skip_prior=p adds p * lookback / training windows (meta's n_train_windows) to skip_decay's weight where
    the run filled its windows (meta's padded_fill: fewer full windows than lookback steps), nothing where it
    did not; 0 leaves skip_decay alone, and a run whose meta has neither (an old run) gets skip_decay only; a
    negative value is refused by name."""
    for n, fill, prior, decay, want in [(24, True, 2.0, 0.0, 1.0), (24, True, 2.0, 0.25, 1.25),
                                        (24, False, 2.0, 0.25, 0.25), (24, True, 0.0, 0.5, 0.5)]:
        model = _model(skip_prior=prior, skip_decay=decay)
        model.meta.update(n_train_windows=n, padded_fill=fill)
        assert model.skip_weight == pytest.approx(want)
        window = torch.randn(2, 12) + 3.0
        batch, y = _batch(window), torch.randn(2, 6, 1)
        with torch.no_grad():
            model.head.skip.weight[1, 2] += 0.3                         # 0.3 from its start
        plain = _model(skip_prior=0.0)
        plain.load_state_dict(model.state_dict())
        model.train()
        plain.train()
        out, _ = model(batch)
        torch.testing.assert_close(model.loss(out, y, batch) - plain.loss(out, y, batch),
                                   torch.tensor(want * 0.3 ** 2))
    assert _model(skip_prior=3.0).skip_weight == 0.0                     # no window count in meta: no prior
    assert ForecastConfig().skip_prior == 1.0
    for bad in ({"skip_prior": -1.0}, {"skip_decay": -0.1}):
        with pytest.raises(ConfigError, match="skip_decay=.*skip_prior=.*expected >= 0"):
            ForecastConfig(**bad).validate()


def test_patches_feed_one_gru_step_per_patch():
    """patch=p: the GRU reads (B, L/p, p*F), zeros padding the oldest patch; 0 picks a season >= 24 when the
    lookback holds two of them."""
    torch.manual_seed(0)
    assert _model(lookback=48, season=24).patch_len == 24                          # the default, 0: auto
    assert _model(lookback=47, season=24).patch_len == 1 and _model(season=6).patch_len == 1
    assert _model(patch=3).patch_len == 3
    model = _model(lookback=12, patch=5, window_norm=False)
    with torch.no_grad():
        model.head.proj.weight.normal_()                                           # make the GRU part count
    window = torch.randn(2, 12)
    batch = _batch(window)
    seen = {}
    model.encoder.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))     # returns None
    out, h_n = model(batch)
    x = seen["x"]
    assert x.shape == (2, 3, 10)                                                   # 15 = 3 zero steps + 12
    torch.testing.assert_close(x[:, 0, :6], torch.zeros(2, 6))
    torch.testing.assert_close(x[:, 0, 6:].reshape(2, 2, 2), batch["x"][:, :2])
    torch.testing.assert_close(x[:, 2].reshape(2, 5, 2), batch["x"][:, 7:])
    _, ref_h = model.encoder(x)
    torch.testing.assert_close(h_n, ref_h)
    with pytest.raises(Exception, match="patch=13"):
        ForecastConfig(lookback=12, patch=13).validate()


def test_mase_loss_weights_by_hand():
    """mase_loss: weight 1 / mean |z_t - z_{t-m}| over the training part, over the median, clipped to [0.05, 20];
    the loss is the weighted mean of the per-window losses."""
    zs = [np.array([0., 1, 0, 1, 0, 1, 9]), np.array([0., 2, 4, 6, 8, 10, 9]), np.array([0., 0.5, 3])]
    # lag 2 over the first 6 points: d = 0, 4 (and 0 -> no scale: weight 1); lag 1 for a 3-point part: 0.5
    w = mase_weights(zs, [6, 6, 2], 2)
    np.testing.assert_allclose(w, [1.0, (1 / 4) / np.median([1 / 4, 2]), 2 / np.median([1 / 4, 2])])
    assert mase_weights([np.r_[0.0, 1e3], np.r_[0.0, 1e-3], np.r_[0.0, 1.0]], [2, 2, 2], 1) == [0.05, 20.0, 1.0]
    model = _model(mase_loss=True, likelihood="point")
    assert model.series_w is None                                   # no weights in meta: the plain mean
    model = ForecastTask(model.config, {**model.meta, "loss_weights": [0.5, 3.0]})
    out, y = torch.randn(3, 6, 1, 1), torch.randn(3, 6, 1)
    per = ((out[..., 0] - y) ** 2).mean((1, 2))
    want = (per * torch.tensor([0.5, 3.0, 1.0])).mean()           # id -1 (unknown) weighs 1
    torch.testing.assert_close(model.loss(out, y, {"sid": torch.tensor([0, 1, -1])}), want)


def test_window_scale_divides_by_the_windows_mean_absolute_step_and_is_scale_equivariant():
    """window_scale: the local scale is the mean absolute step between consecutive valid lookback values (padded
    steps left out; at least SCALE_FLOOR); a window stretched about its level by k gives forecasts stretched by
    k (the GRU sees the same scaled inputs); the untrained baseline is still the naive forecast; the loss is the
    plain loss over each window's scale; a Gaussian output is refused."""
    from grukit.tasks.forecast import SCALE_FLOOR
    torch.manual_seed(0)
    window = torch.randn(2, 12) + 3.0
    batch = _batch(window)
    batch["mask"][1, :4] = 0                                                         # row 1: 8 valid steps
    batch["x"][1, :4, 1] = 0
    model = _model(window_scale=True, head_init="random")
    steps = [(window[0, 1:] - window[0, :-1]).abs().mean(), (window[1, 5:] - window[1, 4:-1]).abs().mean()]
    torch.testing.assert_close(model.local_scale(batch)[:, 0, 0], torch.stack(steps))
    flat = _batch(torch.full((1, 12), 2.0))
    assert float(model.local_scale(flat)) == pytest.approx(SCALE_FLOOR)
    model.eval()
    out, _ = model(batch)                                                            # (B, H, C, Q)
    k = 3.5
    level = (window * batch["mask"]).sum(1, keepdim=True) / batch["mask"].sum(1, keepdim=True)
    stretched = _batch(level + k * (window - level))
    stretched["mask"], stretched["x"][..., 1] = batch["mask"], batch["x"][..., 1]
    out_k, _ = model(stretched)
    lv = level[:, :, None, None]
    torch.testing.assert_close(out_k - lv, k * (out - lv), rtol=1e-4, atol=1e-4)
    base = _model(window_scale=True, head_init="baseline")                           # naive start kept
    torch.testing.assert_close(base(_batch(window))[0][:, :, 0, 1],
                               torch.stack([window[:, 6 + h % 6] for h in range(6)], 1), rtol=1e-5, atol=1e-5)
    plain = _model(head_init="random")
    plain.load_state_dict(model.state_dict())
    y = torch.randn(2, 6, 1)
    per_window = [float(plain.loss(out[b:b + 1], y[b:b + 1], {})) for b in range(2)]
    want = sum(p / float(s) for p, s in zip(per_window, steps)) / 2
    assert abs(float(model.loss(out, y, batch)) - want) < 1e-5
    with pytest.raises(Exception, match="window_scale"):
        ForecastConfig(window_scale=True, likelihood="gaussian").validate()


def test_auto_lookback_is_36_unless_the_median_series_is_short_then_half_its_room(tmp_path):
    """lookback=0 (the default) resolves to 36, or where the median series has fewer than 36 origins (training
    points minus the horizon), half of them; the resolved value is what the run's config records; a lookback
    given stays; the built-in single series keep 36; a lookbacks ensemble longer than the automatic lookback
    is refused by name."""
    from grukit.tasks.forecast import resolve_lookback
    pytest.importorskip("aeon", reason="airline and lynx are aeon's (grukit[timeseries])")
    pytest.importorskip("statsmodels", reason="nile and sunspots are statsmodels' (grukit[timeseries])")
    assert ForecastConfig().lookback == 0
    for name in ("airline", "nile", "lynx", "sunspots"):
        cfg = ForecastConfig(data=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepare(cfg)
        assert cfg.lookback == 36, name
    cfg = ForecastConfig(horizon=6)
    assert resolve_lookback(cfg, [15, 21, 15, 60, 9], 0) == 4                # median 15: room 9, half of it
    assert resolve_lookback(ForecastConfig(horizon=6, lookback=24), [15] * 3, 0) == 24   # given: kept
    assert resolve_lookback(ForecastConfig(horizon=6), [48, 40], 0) == 36      # room 38 >= 36
    assert resolve_lookback(ForecastConfig(horizon=6), [8], 0) == 1           # room 2: at least 1
    with pytest.raises(ConfigError, match="lookbacks"):
        resolve_lookback(ForecastConfig(horizon=6, lookbacks=(6,)), [15], 0)
    # a season longer than 36 (half-hourly 48): one period, where the room holds two; else as without one
    assert resolve_lookback(ForecastConfig(horizon=24), [290], 24, season=48) == 48     # room 242 >= 96
    assert resolve_lookback(ForecastConfig(horizon=24), [130], 24, season=48) == 36     # room 82 < 96
    assert resolve_lookback(ForecastConfig(horizon=24), [290], 24, season=24) == 36     # 36 holds the day
    assert resolve_lookback(ForecastConfig(horizon=6, lookback=12), [290], 0, season=48) == 12   # given: kept
    data = wide_panel(tmp_path / "short.csv", lengths=(20, 16, 24, 18))       # median 19 - 6 held out - 6
    from grukit.tasks.forecast import validation_folds
    cfg = ForecastConfig(data=str(data), horizon=6, season_length=6)
    validation_folds(cfg)                                    # grukit tune's fold plan: the start stays auto,
    assert cfg.lookback == 0                                 # so its trial 0 is the defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(data), out=tmp_path / "run", horizon=6, season_length=6, **FAST)
    assert run.config.lookback == 3 and Run(run.path).config.lookback == 3
    models = Run(run.path).models()
    assert models[0].head.skip.in_features == 3


def test_season_from_the_time_step_and_a_half_hourly_file_end_to_end(tmp_path):
    """Steps under a day that divide it give the day as the season (half-hourly 48, 15-minute 96); a
    half-hourly file whose time column is named datetime_gmt (as aeon's solar series) is read with that
    season, its seasonality found, and an automatic lookback of one period."""
    from grukit.data.timeseries import season_from_times
    for freq, m in (("30min", 48), ("15min", 96), ("h", 24), ("2h", 12), ("min", 1440), ("s", 1), ("7min", 1),
                    ("D", 7), ("B", 5), ("W-SUN", 52), ("MS", 12), ("QS", 4), ("YS", 1)):
        assert season_from_times(pd.Series(pd.date_range("2021-01-01", periods=20, freq=freq))) == m, freq
    t = pd.date_range("2021-05-01", periods=290, freq="30min", tz="UTC")
    day = np.clip(np.sin(2 * np.pi * (np.arange(290) % 48 - 12) / 48), 0, None)
    y = day * (1 + 0.1 * np.random.default_rng(0).standard_normal(290))
    pd.DataFrame({"datetime_gmt": t.strftime("%Y-%m-%d %H:%M:%S+00:00"), "solar_gen": y}).to_csv(
        tmp_path / "solar.csv", index=False)
    cfg = ForecastConfig(data=str(tmp_path / "solar.csv"))
    prepared = prepare(cfg)
    assert prepared.meta["season_length"] == 48 and prepared.meta["skip_season"] == 48
    assert cfg.lookback == 48 and prepared.meta["roles"]["time_col"] == "datetime_gmt"


def test_too_short_for_the_horizon_names_the_horizon_that_fits(tmp_path):
    """A 36-point monthly series (aeon's ShampooSales) at the default horizon of 24: the error names the
    largest horizon that fits, and that horizon trains."""
    t = pd.date_range("1991-01", periods=36, freq="MS").strftime("%Y-%m")
    pd.DataFrame({"Time": t, "Sales": 100 + np.arange(36.0) * 3}).to_csv(tmp_path / "shampoo.csv", index=False)
    with pytest.raises(DataError, match=r"too short: .* \(--horizon 17 or less fits its 36 points\)"):
        prepare(ForecastConfig(data=str(tmp_path / "shampoo.csv")))
    prepare(ForecastConfig(data=str(tmp_path / "shampoo.csv"), horizon=17))
    with pytest.raises(DataError, match=r"--horizon 17 or less"):
        prepare(ForecastConfig(data=str(tmp_path / "shampoo.csv"), horizon=18))


def test_auto_max_windows_caps_a_large_panel_and_keeps_small_ones_whole():
    """max_windows=0 (auto): every window while the panel has at most WINDOW_BUDGET, else the largest per-series
    cap within it (long series capped, short ones whole), recorded in the config; -1 keeps all; a cap stays."""
    from grukit.tasks.forecast import WINDOW_BUDGET, resolve_max_windows
    assert resolve_max_windows(ForecastConfig(horizon=14), [300] * 100, 14, 36) == 0       # 100 x 237 windows
    lengths = [9000] * 10 + [120] * 400                       # 10 x 8937 + 400 x 57 = 112,170 windows
    cfg = ForecastConfig(horizon=14)
    with pytest.warns(UserWarning, match=r"410 series give 112,170 training windows; each trains on at most 2720"):
        cap = resolve_max_windows(cfg, lengths, 14, 36)
    assert cfg.max_windows == cap == 2720 and 10 * cap + 400 * 57 == WINDOW_BUDGET   # short series whole
    assert resolve_max_windows(ForecastConfig(horizon=14, max_windows=-1), lengths, 14, 36) == -1
    assert resolve_max_windows(ForecastConfig(horizon=14, max_windows=7), lengths, 14, 36) == 7
    with pytest.raises(ConfigError, match="max_windows must be >= -1"):
        ForecastConfig(max_windows=-2).validate()


def test_skipped_time_steps_are_named_not_silent(tmp_path):
    """Days left out of a daily series (or years of a yearly one) are named in one warning: the rows are read
    as consecutive steps, which shifts lags and the season after the gap. Regular series and monthly stamps
    (months of different lengths) are not gaps."""
    from grukit.data.timeseries import time_gaps
    days = pd.Series(pd.date_range("2022-01-01", periods=100, freq="D"))
    assert time_gaps(days) is None
    assert time_gaps(days.drop(index=[50, 51, 80]).reset_index(drop=True)) == (3, pd.Timestamp("2022-02-20").date())
    assert time_gaps(pd.Series(pd.date_range("2020-01", periods=40, freq="MS"))) is None
    assert time_gaps(pd.Series([1990, 1991, 1992, 1995, 1996, 1997])) == (2, 1993)
    assert time_gaps(pd.Series([1990, 1991, 1992, 1993])) is None
    t = pd.date_range("2022-01-01", periods=120, freq="D")
    frame = pd.DataFrame({"date": t, "id": "a", "y": np.arange(120.0)})
    frame = pd.concat([frame, frame.assign(id="b")]).drop(index=[30])       # both series lose 2022-01-31
    frame.to_csv(tmp_path / "gappy.csv", index=False)
    from grukit.data.panel import load_panel
    with pytest.warns(UserWarning, match=r"2 series skip time steps \(series 'a' 1 missing, the first 2022-01-31; "
                                         r"series 'b' 1 missing.*\): filled by linear interpolation"):
        series, _, _ = load_panel(str(tmp_path / "gappy.csv"), id_col="id", target=("y",))
    assert [len(s.y) for s in series] == [120, 120] and series[0].n_obs == 120     # the day is back,
    np.testing.assert_allclose(series[0].y[:, 0], np.arange(120.0))                # interpolated (29, 30, 31)
    assert series[0].times.iloc[30] == t[30]
    with pytest.warns(UserWarning, match=r"read as consecutive steps"):
        series, _, _ = load_panel(str(tmp_path / "gappy.csv"), id_col="id", target=("y",), gaps="keep")
    assert len(series[0].y) == 119
    with pytest.raises(DataError, match=r"series 'a' 1 time steps missing, the first 2022-01-31; expected one row"):
        load_panel(str(tmp_path / "gappy.csv"), id_col="id", target=("y",), gaps="error")
    # yearly numbers with two years absent and a known covariate: filled on the grid; future rows keep no target
    years = pd.DataFrame({"year": [1990, 1991, 1992, 1995, 1996, 1997, 1998], "y": [1.0, 2, 3, 6, 7, np.nan, np.nan],
                          "k": [0.0, 1, 2, 5, 6, 7, 8]})
    years.to_csv(tmp_path / "years.csv", index=False)
    with pytest.warns(UserWarning, match=r"2 missing, the first 1993"):
        (s,), _, _ = load_panel(str(tmp_path / "years.csv"), target=("y",), known=("k",), allow_future=True)
    assert s.times.tolist() == list(range(1990, 1999)) and s.n_obs == 7
    np.testing.assert_allclose(s.y[:7, 0], [1, 2, 3, 4, 5, 6, 7])
    assert np.isnan(s.y[7:]).all()
    np.testing.assert_allclose(s.known[:, 0], np.arange(9.0))



def test_empty_values_inside_a_series_are_filled_in_time_and_named(tmp_path):
    """Empty target cells between a series' values (statsmodels' weekly CO2 has 59) are interpolated in time,
    across a skipped step too, with one warning naming the series and the first line; rows before a series'
    first value (it starts later in a shared time axis) are dropped; keep drops the rows, error refuses with
    the line and the way out; covariates' empty cells are filled as well; the series' filled mask marks the
    targets that were not observed."""
    from grukit.data.panel import load_panel
    t = pd.date_range("2022-01-01", periods=40, freq="D")
    y = np.arange(40.0) * 2
    frame = pd.DataFrame({"date": t, "id": "a", "y": y, "k": np.arange(40.0)})
    late = frame.assign(id="b")
    late.loc[:9, "y"] = np.nan                                      # b starts on day 11
    frame.loc[[5, 6], "y"] = np.nan                                 # a: two empty values,
    frame.loc[12, "k"] = np.nan                                     # an empty covariate,
    frame = pd.concat([frame.drop(index=[7]), late])                # and the day after them skipped
    frame.to_csv(tmp_path / "holes.csv", index=False)
    kw = dict(id_col="id", target=("y",), known=("k",))
    with pytest.warns(UserWarning, match=r"1 series have empty values inside \(series 'a': 3 rows, the first on "
                                         r"line 7\): filled by linear interpolation"):
        a, b = load_panel(str(tmp_path / "holes.csv"), **kw)[0]
    np.testing.assert_allclose(a.y[:, 0], y)                        # 4 -> 14 over days 5-7: on the line
    np.testing.assert_allclose(a.known[:, 0], np.arange(40.0))
    assert np.flatnonzero(a.filled).tolist() == [5, 6, 7] and a.n_filled(0, 40) == 3
    assert b.n_obs == 30 and b.times.iloc[0] == t[10] and not b.filled.any()
    with pytest.warns(UserWarning, match=r"their rows dropped"):
        a, _ = load_panel(str(tmp_path / "holes.csv"), id_col="id", target=("y",), gaps="keep")[0]
    assert a.n_obs == 37 and 10.0 not in a.y[:, 0]
    with pytest.raises(DataError, match=r"line 7, column 'y': missing/NaN target value in series 'a'.*or pass "
                                        r"--gaps interpolate"):
        load_panel(str(tmp_path / "holes.csv"), gaps="error", **kw)
    # the wide layout: blanks before the start are a later start, blanks inside are filled, kept out or refused
    wide = pd.DataFrame({"id": ["A", "B"], "V1": [np.nan, 1.0], "V2": [1.0, np.nan], "V3": [2.0, 3.0],
                         "V4": [np.nan, 7.0]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    with pytest.warns(UserWarning, match=r"series 'B': 1 cells, the first in column 'V2'"):
        A, B = load_panel(str(tmp_path / "wide.csv"))[0]
    assert A.y[:, 0].tolist() == [1.0, 2.0] and B.y[:, 0].tolist() == [1.0, 2.0, 3.0, 7.0]
    assert B.filled.tolist() == [False, True, False, False]
    with pytest.warns(UserWarning, match="their rows dropped"):
        assert load_panel(str(tmp_path / "wide.csv"), gaps="keep")[0][1].y[:, 0].tolist() == [1.0, 3.0, 7.0]
    with pytest.raises(DataError, match=r"line 3, column 'V2': gap \(empty cell\) inside series 'B' at step 2"):
        load_panel(str(tmp_path / "wide.csv"), gaps="error")



def test_year_and_quarter_columns_are_one_time_axis(tmp_path):
    """statsmodels' macrodata gives the time as year and quarter columns: read as one quarterly axis (season 4,
    neither column a target), not refused for 'duplicate time stamp 1959'; year and month likewise; a run's
    evaluation re-reads the file the same way; a pair out of range, or one named as a target, is left alone."""
    from grukit.data.panel import load_panel
    from grukit.data.timeseries import period_column
    n = 40
    df = pd.DataFrame({"year": 1959.0 + np.arange(n) // 4, "quarter": 1.0 + np.arange(n) % 4,
                       "gdp": 100 + np.arange(n) + 3 * (np.arange(n) % 4 == 3), "cpi": np.linspace(20, 30, n)})
    df.to_csv(tmp_path / "macro.csv", index=False)
    (s,), roles, _ = load_panel(str(tmp_path / "macro.csv"), target=("gdp",))
    assert roles["time_col"] == "year_quarter" and s.times.iloc[0] == pd.Timestamp("1959-01-01")
    assert s.times.iloc[-1] == pd.Timestamp("1968-10-01") and len(s.y) == n
    assert load_panel(str(tmp_path / "macro.csv"))[1]["target"] == ["gdp", "cpi"]      # not year, quarter
    monthly = pd.DataFrame({"Year": 2000 + np.arange(30) // 12, "Month": 1 + np.arange(30) % 12, "v": 1.0})
    out, name = period_column(monthly)
    assert name == "Year_Month" and list(out.columns) == ["Year_Month", "v"]
    assert out["Year_Month"].iloc[13] == pd.Timestamp("2001-02-01")
    assert period_column(monthly.assign(Month=monthly.Month + 1))[1] == ""               # month 13: not a period
    names = monthly.assign(Month=pd.to_datetime(monthly.Month, format="%m").dt.strftime("%b"))   # Jan, Feb, ...
    assert period_column(names)[0]["Year_Month"].iloc[13] == pd.Timestamp("2001-02-01")
    assert period_column(df, used=["quarter"])[1] == ""
    daily = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=60), "year": 2020, "month": 1, "v": 1.0})
    assert period_column(daily)[1] == ""                                            # the date is the time
    run = fit("forecast", data=str(tmp_path / "macro.csv"), target="gdp", out=tmp_path / "run", lookback=8,
              horizon=4, **{**FAST, "evaluate": True})
    assert run.meta["season_length"] == 4
    assert (run.path / "evaluation" / "series.csv").exists()


def test_a_file_without_time_stamps_gets_its_season_from_the_values(tmp_path):
    """M4's wide files have no time stamps: the period is found in the values (the differences'
    autocorrelation peaks at it in most series; a smooth cycle's short lags do not count), with a note; a
    given --season-length wins; random walks, and series with time stamps (sunspots' years), get no guess."""
    from grukit.data.seasonal import season_from_values
    from grukit.tasks.forecast import resolve_plan
    rng = np.random.default_rng(0)
    t = np.arange(24 * 20)
    hourly = [50 + 10 * np.sin(2 * np.pi * t / 24 + k) + rng.normal(0, 1, len(t)) + 0.01 * k * t for k in range(6)]
    assert season_from_values(hourly)[0] == 24
    assert season_from_values([np.tile([1.0, 3, 2, 5], 30) + rng.normal(0, 0.3, 120)])[0] == 4
    assert season_from_values([rng.normal(size=300).cumsum() for _ in range(5)]) == (1, 0.0)
    assert season_from_values([rng.normal(size=100)]) == (1, 0.0)
    frame = pd.DataFrame([[f"H{i}", *v] for i, v in enumerate(hourly)], columns=["id", *map(str, t)])
    frame.to_csv(tmp_path / "hourly.csv", index=False)
    from grukit.data.panel import load_panel
    series = load_panel(str(tmp_path / "hourly.csv"))[0]
    with pytest.warns(UserWarning, match=r"no time column: seasonal period 24 found in the values"):
        assert resolve_plan(ForecastConfig(horizon=24), series, 24)[0] == 24
    assert resolve_plan(ForecastConfig(horizon=24, season_length=12), series, 24)[0] == 12
    sun = load_panel("sunspots")[0]
    assert resolve_plan(ForecastConfig(horizon=24), sun, 24, in_place=False)[0] == 1


def test_quarters_written_as_text_and_a_written_index_column(tmp_path):
    """aeon's Uschange.csv: an unnamed first column of row numbers (pandas' to_csv with its index) and a
    Quarter column of '1970 Q1' text, which pandas does not read as dates: the quarters are the time axis
    (season 4) and the row numbers are not a target; months as 1949M01 and ISO weeks as 2020-W05 likewise."""
    from grukit.data.panel import load_panel
    from grukit.data.timeseries import period_stamps
    q = [f"{1970 + i // 4} Q{i % 4 + 1}" for i in range(40)]
    frame = pd.DataFrame({"Quarter": q, "Consumption": np.sin(np.arange(40.0)), "Income": np.arange(40.0)})
    frame.to_csv(tmp_path / "us.csv")                                        # index written: ",Quarter,..."
    (s,), roles, _ = load_panel(str(tmp_path / "us.csv"))
    assert roles["time_col"] == "Quarter" and roles["target"] == ["Consumption", "Income"]
    assert s.times.iloc[1] == pd.Timestamp("1970-04-01") and s.times.iloc[-1] == pd.Timestamp("1979-10-01")
    got = period_stamps(pd.Series(["Q3 2001", "2001Q4", "2001-q2", "x", "2001 Q5", "1949M01", "1949-M12",
                                   "2020-W05", "2020W01", "1949M13"])).tolist()
    assert got[:3] == [pd.Timestamp("2001-07-01"), pd.Timestamp("2001-10-01"), pd.Timestamp("2001-04-01")]
    assert pd.isna(got[3]) and pd.isna(got[4]) and pd.isna(got[9])
    assert got[5:9] == [pd.Timestamp("1949-01-01"), pd.Timestamp("1949-12-01"), pd.Timestamp("2020-01-27"),
                        pd.Timestamp("2019-12-30")]                       # ISO weeks start on Monday


@pytest.mark.parametrize("fmt,sep", [("%d.%m.%Y", ";"), ("%d/%m/%Y", ","), ("%m/%d/%Y", ",")])
@pytest.mark.parametrize("freq,n", [("D", 60), ("MS", 30)])
def test_day_first_dates_and_semicolon_files(tmp_path, fmt, sep, freq, n):
    """A European spreadsheet's CSV (Datum;Umsatz, 01.02.2020;57,69) and British dd/mm/yyyy dates: pandas read
    the file as one text column, and 01/02/2020 as January 2 but 13/02/2020 as February 13, shuffling a daily
    series' days into months (219 'missing' steps, interpolated); now the separator, the decimal comma and the
    day's place are found, and the stamps come back in order; US mm/dd/yyyy stays month first."""
    from grukit.data.panel import load_panel
    t = pd.date_range("2020-01-01", periods=n, freq=freq)
    values = 50 + 10 * np.sin(np.arange(n))
    text = [f"{v:.2f}".replace(".", ",") if sep == ";" else f"{v:.2f}" for v in values]
    pd.DataFrame({"Datum": t.strftime(fmt), "Umsatz": text}).to_csv(tmp_path / "d.csv", sep=sep, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                         # no gap found, nothing filled
        (s,), roles, _ = load_panel(str(tmp_path / "d.csv"))
    assert roles["time_col"] == "Datum" and roles["target"] == ["Umsatz"]
    assert (s.times == pd.Series(t)).all()
    np.testing.assert_allclose(s.y[:, 0], values, atol=0.006)

def test_evaluation_says_when_it_scores_interpolated_values(tmp_path):
    """A held-out value that was an empty cell is scored against its interpolation, and the evaluation says
    so (how many, which series) instead of passing it off as observed."""
    from grukit.tasks.forecast_eval import cases_for
    t = pd.date_range("2022-01-01", periods=60, freq="D")
    frame = pd.DataFrame({"date": t, "y": np.sin(np.arange(60.0)) + 5})
    frame.loc[57, "y"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("forecast", data=str(tmp_path / "d.csv"), out=tmp_path / "run", lookback=12, horizon=6,
                  evaluate=False, **FAST)
    with pytest.warns(UserWarning, match=r"1 of the scored values were interpolated .*'series' \(1\)"):
        cases, _ = cases_for(run, None)
    assert [c["filled"] for c in cases] == [1]

def test_patience_counts_steps_on_a_panel_whose_epochs_are_long():
    """patience_steps (off by default): a single series' short epochs keep the patience of 30 epochs; a panel
    whose epoch is thousands of steps waits at most patience_steps steps, at least 3 epochs."""
    from grukit.tasks.forecast import resolve_patience
    steps = dict(patience_steps=3000)
    assert resolve_patience(ForecastConfig(**steps), 80) == 30              # 5 steps an epoch: 30 epochs
    assert resolve_patience(ForecastConfig(**steps), 16 * 500) == 6         # 500 steps: 3,000 steps = 6 epochs
    cfg = ForecastConfig(**steps)
    assert resolve_patience(cfg, 58_000) == 3 and cfg.patience == 3         # M4 Weekly's epochs: 3 (the least)
    assert resolve_patience(ForecastConfig(), 58_000) == 30                # off by default: epochs only
    assert resolve_patience(ForecastConfig(patience=0, **steps), 58_000) == 0   # early stopping off stays off
    with pytest.raises(ConfigError, match="patience_steps=-1"):
        ForecastConfig(patience_steps=-1).validate()
    cfg = ForecastConfig(data="airline", **steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare(cfg)
    assert cfg.patience == 30                                               # a single series keeps 30


def test_a_panel_read_without_its_id_column_names_the_column(tmp_path):
    """Three stores in one long table, --id-col not given: the duplicate-stamp error says which column would
    make the rows one per series and time; a single series with a true repeat gets no such hint."""
    from grukit.data.panel import load_panel
    t = pd.date_range("2020-01-01", periods=30)
    pd.concat([pd.DataFrame({"date": t, "store": k, "sales": np.arange(30.0) + k}) for k in (1, 2, 3)]).to_csv(
        tmp_path / "stores.csv", index=False)
    with pytest.raises(DataError, match=r"duplicate time stamp .*name their id column: --id-col store"):
        load_panel(str(tmp_path / "stores.csv"), target=("sales",))
    one = pd.DataFrame({"date": list(t) + [t[3]], "sales": np.arange(31.0)})
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match=r"sum or last$"):
        load_panel(str(tmp_path / "one.csv"))


def test_a_text_column_that_tells_the_series_apart_is_the_id(tmp_path):
    """Store names in a long table, --id-col not given: the repeating stamps and the one text column that makes
    them one per store and day give the id, with a note; the run trains on three series."""
    from grukit.data.panel import load_panel
    t = pd.date_range("2020-01-01", periods=40)
    pd.concat([pd.DataFrame({"date": t, "store": f"S{k}", "sales": np.sin(np.arange(40.0)) + k})
               for k in (1, 2, 3)]).to_csv(tmp_path / "stores.csv", index=False)
    with pytest.warns(UserWarning, match=r"column 'store' tells 3 series apart: read as the series id"):
        series, roles, _ = load_panel(str(tmp_path / "stores.csv"))
    assert roles["id_col"] == "store" and roles["target"] == ["sales"] and [s.id for s in series] == ["S1", "S2", "S3"]
