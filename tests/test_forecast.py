"""Forecast task on tiny synthetic data: training, predict files, checkpoints, resume, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grukit.errors import ConfigError, DataError
from grukit.runs import Run, load_checkpoint
from grukit.train import fit

TINY = dict(lookback=12, horizon=4, hidden_size=8, batch_size=16, progress=False, patience=0, lr=1e-2,
            baselines=("naive", "seasonal_naive", "naive2", "ets"))


def series_csv(path, n=80, ids=("a", "b"), known=True):
    rows = []
    for k, sid in enumerate(ids):
        t = pd.date_range("2020-01-01", periods=n, freq="D")
        y = 10 + k + np.sin(np.arange(n) * 2 * np.pi / 7) + 0.01 * np.arange(n)
        for i in range(n):
            rows.append({"date": t[i], "store": sid, "sales": y[i], "promo": float(i % 5 == 0)})
    df = pd.DataFrame(rows)
    if not known:
        df = df.drop(columns="promo")
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("fc")
    data = series_csv(d / "sales.csv")
    run = fit("forecast", data=str(data), out=d / "run", time_col="date", target="sales", id_col="store",
              known="promo", max_epochs=6, **TINY)
    return run, data


def test_loss_falls_and_run_directory(trained):
    run, _ = trained
    m = pd.read_csv(run.path / "metrics.csv")
    loss = m["train_loss_epoch"].dropna().to_numpy()
    assert len(loss) == 6 and loss[-1] < loss[0]
    for f in ("run.json", "config.yaml", "meta.json", "model.safetensors", "metrics.json",
              "checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/loss.png", "plots/forecast.png"):
        assert (run.path / f).is_file(), f
    metrics = run.evaluate()
    assert set(metrics) == {"grukit", "naive", "seasonal_naive", "naive2", "ets"}
    assert {"MAE", "RMSE", "MASE", "sMAPE", "OWA", "MSIS", "coverage"} <= set(metrics["grukit"])
    assert 0.0 <= metrics["grukit"]["coverage"] <= 1.0
    assert metrics["naive2"]["OWA"] == pytest.approx(1.0)
    per = pd.read_csv(run.path / "evaluation" / "series.csv")         # one row per series and method
    assert len(per) == 2 * 5 and set(per.series) == {"a", "b"}
    mine = per[per.method == "grukit"]
    assert mine["sMAPE"].mean() == pytest.approx(metrics["grukit"]["sMAPE"])
    assert (run.path / "plots" / "best.png").is_file() and (run.path / "plots" / "worst.png").is_file()


def test_predict_needs_known_future_rows(trained, tmp_path):
    run, data = trained
    with pytest.raises(DataError, match="need 4 future rows"):
        Run(run.path).predict(str(data), tmp_path / "fc.csv")


def test_predict_shapes_and_files(trained, tmp_path):
    run, data = trained
    df = pd.read_csv(data)
    fut = []
    for sid in ("a", "b"):
        last = pd.Timestamp(df[df.store == sid].date.max())
        for i in range(1, 5):
            fut.append({"date": last + pd.Timedelta(days=i), "store": sid, "sales": np.nan, "promo": 1.0})
    pd.concat([df, pd.DataFrame(fut)]).to_csv(tmp_path / "future.csv", index=False)
    paths = Run(run.path).predict(str(tmp_path / "future.csv"), tmp_path / "p.csv")
    pred = pd.read_csv(paths[0])
    assert len(pred) == 2 * 4                                # 2 series x horizon 4 x 1 target
    assert {"series", "time", "step", "forecast", "lower", "upper"} <= set(pred.columns)
    assert (pred["lower"] <= pred["upper"]).all()
    assert pred["time"].min() > df["date"].max()
    assert paths[1].suffix == ".png" and paths[1].stat().st_size > 1000


def test_predict_holdout_reports_actuals(trained, tmp_path):
    """--holdout N: the forecast starts N steps before the end; the CSV carries the actuals, the PNG plots them."""
    from grukit.errors import ConfigError
    run, data = trained
    df = pd.read_csv(data)
    paths = Run(run.path).predict(str(data), tmp_path / "bt.csv", holdout=4)
    pred = pd.read_csv(paths[0])
    assert len(pred) == 2 * 4 and "actual" in pred.columns
    for sid in ("a", "b"):
        tail = df[df.store == sid].tail(4)
        got = pred[pred.series == sid]
        np.testing.assert_allclose(got["actual"].to_numpy(), tail["sales"].to_numpy(), rtol=1e-6)
        assert list(pd.to_datetime(got["time"])) == list(pd.to_datetime(tail["date"]))
    assert paths[1].stat().st_size > 1000
    with pytest.raises(DataError, match="--holdout 1000 leaves"):
        Run(run.path).predict(str(data), tmp_path / "x.csv", holdout=1000)
    with pytest.raises(ConfigError, match=r"\['bogus'\] do not apply to a 'forecast' run"):
        Run(run.path).predict(str(data), tmp_path / "x.csv", bogus=1)


def test_checkpoint_round_trip_and_wrong_task(trained):
    import torch
    run, _ = trained
    ckpt = load_checkpoint(run.path / "checkpoints" / "best.ckpt", "forecast")
    assert ckpt["grukit"]["task"] == "forecast" and ckpt["grukit"]["config"]["hidden_size"] == 8
    model = Run(run.path).models()[0]
    from grukit.runs import load_weights
    w = load_weights(run.path / "model.safetensors")
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(v, w[k])
    assert set(w) == set(model.state_dict())
    with pytest.raises(ConfigError, match="holds a 'forecast' model"):
        load_checkpoint(run.path / "checkpoints" / "best.ckpt", "classify")
    from grukit.tasks.classify import ClassifyTask
    from grukit.config import ClassifyConfig
    clf = ClassifyTask(ClassifyConfig(), {"input_size": 2, "classes": ["a", "b"]})
    with pytest.raises(ConfigError, match="cannot be loaded into a 'classify' task"):
        clf.on_load_checkpoint(ckpt)


def test_resume_continues_from_last_checkpoint(tmp_path):
    data = series_csv(tmp_path / "s.csv", ids=("a",), known=False)
    kw = dict(data=str(data), target="sales", **TINY)
    fit("forecast", out=tmp_path / "run", max_epochs=2, evaluate=False, **kw)
    with pytest.raises(ConfigError, match="already exists"):
        fit("forecast", out=tmp_path / "run", max_epochs=2, **kw)
    run = fit("forecast", out=tmp_path / "run", resume=True, max_epochs=4, evaluate=False, **kw)
    epochs = pd.read_csv(run.path / "metrics.csv")["epoch"].dropna().unique()
    assert epochs.max() == 3 and 0 in epochs                 # epochs 0-1 kept, 2-3 added


BAD = [
    ("empty", lambda p: p.write_text(""), {}, "empty"),
    ("misspelled", None, {"target": "sale"}, "did you mean 'sales'"),
    ("non_numeric", lambda p: p.write_text("date,sales\n2020-01-01,1\n2020-01-02,abc\n"), {}, "line 3"),
    ("nan", lambda p: p.write_text("date,sales\n" + "".join(f"2020-01-{i + 1:02d},{'nan' if i == 5 else i}\n"
                                                               for i in range(28))), {"gaps": "error"},
     "line 7.*--gaps interpolate"),
    ("inf", lambda p: p.write_text("date,sales\n" + "".join(f"2020-01-{i + 1:02d},{'inf' if i == 3 else i}\n"
                                                               for i in range(28))), {}, "infinite"),
    ("short", lambda p: series_csv(p, n=8, ids=("a",), known=False), {}, "too short"),
    ("duplicate", lambda p: p.write_text("date,sales\n" + "".join(f"2020-01-{i % 20 + 1:02d},{i}\n"
                                                                    for i in range(28))),
     {}, "duplicate time stamp 2020-01-01.*--duplicates"),
    ("huge", lambda p: p.write_text("date,sales\n" + "".join(f"2020-01-{i + 1:02d},{1e300 * (i + 1)}\n"
                                                               for i in range(28))), {}, "values up to 2.8e\\+301"),
]


@pytest.mark.parametrize("case,write,extra,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_row_column(tmp_path, case, write, extra, match):
    p = tmp_path / "d.csv"
    if write is None:
        series_csv(p, ids=("a",), known=False)
    else:
        write(p)
    cfg = dict(TINY, max_epochs=1)
    with pytest.raises(DataError, match=match) as e:
        fit("forecast", data=str(p), out=tmp_path / "run", **{**cfg, "target": "sales", **extra})
    assert str(p) in str(e.value)
    assert not (tmp_path / "run").exists()                    # nothing written for bad input


def test_a_folder_named_like_a_builtin_does_not_hide_it(tmp_path, monkeypatch):
    """`grukit tune forecast --data nile --out nile` made a folder nile in the working directory, and every
    trial then read that folder as the data ("is a directory"): a folder is never a forecasting table, so the
    built-in set is meant."""
    from grukit.data.timeseries import load_table_or_builtin
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nile").mkdir()
    df, defaults, name = load_table_or_builtin("nile", "forecast")
    assert name == "nile" and len(df) == 100 and defaults["target"]
    with pytest.raises(DataError, match="is a directory"):
        (tmp_path / "mine").mkdir()
        load_table_or_builtin("mine", "forecast")
