"""grukit tune in one process: a planted better setting is found, the test split is scored once (for the final
model only: the best trial, its refit, or the best trials' ensemble), outputs are usable (best.yaml retrains, the
ensemble forecasts as its members' mean), and bad search spaces fail in one line naming the field."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("optuna")

from grukit.config import ClassifyConfig, load_config_file  # noqa: E402
from grukit.tasks.forecast_config import ForecastConfig  # noqa: E402
from grukit.errors import ConfigError  # noqa: E402
from grukit.tune import default_study_name, parse_duration, tune  # noqa: E402
from grukit.tune_space import parse_space, start_params, task_space  # noqa: E402

FIXED = dict(lookback=12, horizon=4, hidden_size=8, batch_size=16, patience=0, max_epochs=4, lr_schedule="none",
             backtests=1, transform="none", likelihood="point")
SPACE = {"hidden_size": 8, "num_layers": 1, "lookback": 12, "batch_size": 16, "head_dropout": 0.0,
         "window_norm": True}


def sine_csv(path, n=120):
    t = np.arange(n)
    y = 10 + 3 * np.sin(t * 2 * np.pi / 12) + 0.02 * t
    pd.DataFrame({"y": y}).to_csv(path, index=False)
    return path


def scores_of_test(monkeypatch) -> list:
    """The run directories scored on the test split from now on (forecast's evaluate, counted)."""
    import grukit.tasks.forecast as forecast
    scored, real_evaluate = [], forecast.evaluate

    def counting_evaluate(run, models, data=None):
        scored.append(run.path.resolve())
        return real_evaluate(run, models, data)

    monkeypatch.setattr(forecast, "evaluate", counting_evaluate)
    return scored


def test_search_finds_planted_setting_and_scores_test_once(tmp_path, monkeypatch):
    import grukit.tasks.forecast as forecast
    data = sine_csv(tmp_path / "s.csv")
    scored = scores_of_test(monkeypatch)
    windows = []                                    # (origin, horizon) of every window a trial trains or validates on

    class RecordingWindows(forecast.WindowDataset):
        def __init__(self, zs, covs, index, L, H, *args, **kw):
            windows.extend((o, H) for _, o in index)
            super().__init__(zs, covs, index, L, H, *args, **kw)

    monkeypatch.setattr(forecast, "WindowDataset", RecordingWindows)
    # lr=1e-7 cannot move the weights in 4 epochs; lr=3e-2 fits the sine: the planted better setting
    summary = tune("forecast", data=str(data), trials=5, out=tmp_path / "study", pruner="none", seed=1, top=1,
                   space={**SPACE, "lr": [1e-7, 3e-2]}, verbose=False, **FIXED)
    df = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert len(df) == 5 and set(df["state"]) == {"COMPLETE"} and sorted(df["number"]) == list(range(5))
    assert set(df["params_lr"]) == {1e-7, 3e-2}                    # both settings were tried...
    assert summary["best_params"] == {"lr": 3e-2}                   # ...and the planted one won
    bad = df[df["params_lr"] == 1e-7]["value"]
    # 116 points before the 4 held out: 3 rolling-origin folds ending 0, 4, 8 points earlier, each a run, and
    # no window of the search (training or validation, any fold) has a target in the held-out test tail
    assert windows and max(o + h for o, h in windows) == 116
    for n in range(5):
        shifts = [yaml.safe_load((tmp_path / "study" / "trials" / f"{n:04d}{f}" / "config.yaml").read_text())
                  ["fold_shift"] for f in ("", "-fold1", "-fold2")]
        assert shifts == [0, 4, 8]
    folds = df["user_attrs_fold_values"].map(yaml.safe_load)
    assert all(len(f) == 3 and v == pytest.approx(sum(f) / 3, rel=1e-4) for f, v in zip(folds, df["value"]))
    assert summary["best_value"] == pytest.approx(df["value"].min()) and summary["best_value"] < bad.min()
    # the test split was read exactly once, for the best run, after the search
    best = (tmp_path / "study" / "best").resolve()
    assert scored == [best] and best == (tmp_path / "study" / summary["best_run"]).resolve()
    assert [p.parent.name for p in (tmp_path / "study" / "trials").glob("*/metrics.json")] == [best.name]
    assert summary["test_metrics"]["grukit"]["MAE"] > 0
    # best.yaml trains the best setting again
    cfg = load_config_file(tmp_path / "study" / "best.yaml", "forecast")
    assert cfg["lr"] == 3e-2 and cfg["lookback"] == 12 and cfg["data"] == str(data)
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (tmp_path / "study" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # the same call again: the study is complete, nothing is trained or scored again
    again = tune("forecast", data=str(data), trials=5, out=tmp_path / "study", pruner="none", seed=1, top=1,
                 space={**SPACE, "lr": [1e-7, 3e-2]}, verbose=False, **FIXED)
    assert again["best_trial"] == summary["best_trial"] and again["trials"]["complete"] == 5 and len(scored) == 1


def test_the_best_trials_are_averaged_as_one_run_and_only_it_is_scored(tmp_path, monkeypatch):
    """--top K (forecast): the K best complete trials' models, of different lookbacks and sizes, become one run
    (no retraining); each member forecasts in it exactly as in its own trial (a shorter lookback reads the end of
    the run's longer window), the run's forecast is their mean, and the test split is read once, for it."""
    import grukit.tasks.forecast as forecast
    from grukit.io import read_json
    from grukit.runs import Run
    data = sine_csv(tmp_path / "s.csv")
    scored = scores_of_test(monkeypatch)
    args = dict(data=str(data), trials=6, out=tmp_path / "study", pruner="none", seed=3, top=6, verbose=False,
                space={**SPACE, "lookback": [8, 12], "hidden_size": [8, 12], "lr": [1e-2, 3e-2]}, **FIXED)
    summary = tune("forecast", **args)
    df = pd.read_csv(tmp_path / "study" / "trials.csv").sort_values(["value", "number"])
    assert summary["ensemble_trials"] == list(df["number"])           # every trial, lowest validation value first
    top = Run(tmp_path / "study" / "top")
    assert scored == [top.path.resolve()] and not list((tmp_path / "study" / "trials").glob("*/metrics.json"))
    assert summary["test_metrics"] == read_json(top.path / "metrics.json")
    lookbacks = [m.config.lookback for m in top.models()]
    assert sorted(set(lookbacks)) == [8, 12] and top.config.lookback == 12 and top.config.ensemble == 6
    assert top.meta["ensemble_rule"] == "mean" and len(top.meta["member_configs"]) == 6
    y = pd.read_csv(data)["y"].to_numpy()[:100]
    meta = {**top.meta, "combine": []}                   # the network alone (the combination is checked elsewhere)
    points = []
    for m, a in zip(top.models(), top.meta["assembled_from"]):
        trial = Run(tmp_path / "study" / a["run"])
        own = forecast.forecast_series(trial.models(), {**trial.meta, "combine": []}, trial.config, [y])[0]["point"]
        here = forecast.forecast_series([m], meta, top.config, [y])[0]["point"]
        np.testing.assert_allclose(here, own, rtol=1e-5, atol=1e-5)
        points.append(here)
    both = forecast.forecast_series(top.models(), meta, top.config, [y])[0]["point"]
    np.testing.assert_allclose(both, np.mean(points, 0), rtol=1e-5, atol=1e-5)
    # the same call again: the same trials, so the ensemble is read back, not rebuilt or scored again
    stamp = (top.path / "model.safetensors").stat().st_mtime_ns
    again = tune("forecast", **args)
    assert again["ensemble_trials"] == summary["ensemble_trials"] and len(scored) == 1
    assert (top.path / "model.safetensors").stat().st_mtime_ns == stamp
    # other trials (here --top 5, then 6 again): the ensemble is rebuilt from them and scored once more each time
    fewer = tune("forecast", **{**args, "top": 5})
    assert fewer["ensemble_trials"] == list(df["number"][:5]) and len(scored) == 2
    assert [a["trial"] for a in Run(top.path).meta["assembled_from"]] == fewer["ensemble_trials"]
    assert tune("forecast", **args)["ensemble_trials"] == summary["ensemble_trials"] and len(scored) == 3
    assert not list((tmp_path / "study").glob(".top.*"))                # no half-built copy left beside it
    pytest.importorskip("onnxruntime", reason="the export check needs grukit[export]")
    from grukit.export import export_run
    top = Run(top.path)
    res = export_run(top, tmp_path / "short.onnx", member=lookbacks.index(8))   # on its own 8-step windows
    assert (tmp_path / "short.onnx").is_file() and res is not None


def test_config_file_tune_section_and_train_ignores_it(tmp_path):
    data = sine_csv(tmp_path / "s.csv")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": str(data), **FIXED,
                                        "tune": {**SPACE, "lr": {"low": 1e-3, "high": 3e-2, "log": True}}}))
    assert "tune" not in load_config_file(cfg_file, "forecast")   # `grukit train -c` reads the same file
    summary = tune("forecast", cfg_file, trials=2, out=tmp_path / "st", pruner="none", verbose=False,
                   evaluate=False)
    assert set(summary["best_params"]) == {"lr"} and 1e-3 <= summary["best_params"]["lr"] <= 3e-2
    assert summary["test_metrics"] is None


@pytest.mark.parametrize("spec, message", [
    ({"hiden_size": [8, 16]}, "unknown field 'hiden_size' in the search space (did you mean 'hidden_size'?)"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "field 'lr': low=0.1 is greater than high=0.01"),
    ({"hidden_size": [8, "big"]}, "field 'hidden_size': choice 'big' does not fit the field"),
    ({"lookback": {"low": 1.5, "high": 4}}, "field 'lookback': expected an integer, got 1.5"),
    ({"likelihood": {"low": 1, "high": 2}}, "field 'likelihood': a range needs a numeric field"),
    ({"lr": {"low": 0, "high": 0.1, "log": True}}, "field 'lr': a log range needs low > 0"),
    ({"dropout": {"low": 0.0, "high": 1.5}}, "field 'dropout': value 1.5 is refused by the task"),
    ({"skip_init": ["naive", "ridge"]}, "field 'skip_init': value 'ridge' is refused by the task"),
    ({"mase_loss": [True, False]}, "field 'mase_loss': it changes what the validation loss measures"),
    ({"lr": {"lo": 1e-3, "high": 1e-2}}, "field 'lr': a range needs low and high"),
])
def test_bad_search_space_is_one_line_naming_the_field(spec, message):
    with pytest.raises(ConfigError) as e:
        task_space(ForecastConfig, spec, ForecastConfig(data="x"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_loss_fields_may_be_fixed_but_not_searched():
    """A field that changes the validation loss's units or weighting can be set for every trial."""
    space = task_space(ForecastConfig, {"mase_loss": True, "transform": ["log"]}, ForecastConfig(data="x"))
    assert space["mase_loss"].kind == "fixed" and space["transform"].choices == ("log",)
    with pytest.raises(ConfigError, match="field 'label_smoothing': it changes what the validation loss"):
        task_space(ClassifyConfig, {"label_smoothing": {"low": 0.0, "high": 0.2}}, ClassifyConfig(data="x"))


def test_bad_space_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="field 'pooling': value 'max' is refused"):
        tune("classify", data="x.npz", trials=1, out=tmp_path / "st", space={"pooling": ["last", "max"]})
    assert not (tmp_path / "st").exists()


def test_cli_bad_space_one_line(tmp_path, capsys):
    from grukit.cli import main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tune:\n  hidden_size: {low: 64, high: 8}\n")
    rc = main(["tune", "forecast", "--data", "x.csv", "-c", str(cfg), "--out", str(tmp_path / "st")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "field 'hidden_size': low=64 is greater than high=8" in err


def test_default_spaces_parse_and_fit_every_task():
    from grukit.tasks import registry
    for name in registry.names():
        cls = registry.get(name).config_class()
        space = task_space(cls, None, cls(data="x"))
        assert sum(d.kind != "fixed" for d in space.values()) >= 3, name       # searched fields
        assert all(d.kind != "fixed" or name == "classify" and d.name == "schedule" for d in space.values()), name
        # every default is a value its space holds: a new study's first trial is exactly the defaults
        searched = {n for n, d in space.items() if d.kind != "fixed"}
        assert set(start_params(space, cls(data="x"))) == searched, name
    dims = parse_space(ClassifyConfig, {"bidirectional": ["true", False], "lr": {"low": 1e-4, "high": 1e-2,
                                                                             "log": "yes"}, "batch_size": "32"})
    assert dims["bidirectional"].choices == (True, False) and dims["lr"].log and dims["batch_size"].value == 32


def test_durations_and_names():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    assert parse_duration(None) is None
    with pytest.raises(ConfigError, match="--timeout 'soon'"):
        parse_duration("soon")
    assert default_study_name("forecast", "data/my sales.csv") == "forecast-my_sales"


def test_the_ensemble_passes_over_trials_that_encode_the_data_differently(tmp_path):
    """A searched field that changes the run's data state (here the season, which sets the seasonal scale and
    the skip's season in meta.json) keeps that trial out of the best trials' ensemble."""
    from grukit.runs import Run
    summary = tune("forecast", data=str(sine_csv(tmp_path / "s.csv")), trials=5, out=tmp_path / "study",
                   pruner="none", seed=0, top=5, verbose=False, space={**SPACE, "season_length": [1, 12]}, **FIXED)
    df = pd.read_csv(tmp_path / "study" / "trials.csv").sort_values(["value", "number"])
    best_season = df["params_season_length"].iloc[0]
    same = df[df["params_season_length"] == best_season]["number"].tolist()
    assert len(same) < 5 and summary["ensemble_trials"] == same
    assert Run(tmp_path / "study" / "top").meta["season_length"] == best_season


def test_top_below_one_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--top 0: each must be >= 1"):
        tune("forecast", data=str(sine_csv(tmp_path / "s.csv")), trials=2, out=tmp_path / "study", top=0,
             verbose=False, **FIXED)
    assert not (tmp_path / "study").exists()


def test_pruning_callback_reports_each_epoch_and_stops_the_run(tmp_path):
    import math

    import optuna

    from grukit.train import fit
    from grukit.tune_callbacks import TrialPruning

    class Trial:                                   # the two calls the callback makes on an optuna trial
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return self.reports[-1][0] >= 2

    trial = Trial()
    cb = TrialPruning(trial)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2: val_loss="):
        fit("forecast", data=str(sine_csv(tmp_path / "s.csv")), out=tmp_path / "run", evaluate=False,
            callbacks=[cb], progress=False, **{**FIXED, "max_epochs": 10})
    assert [s for s, _ in trial.reports] == [0, 1, 2] and cb.monitor == "val_loss" and cb.pruned_at == 2
    assert all(math.isfinite(v) for _, v in trial.reports) and cb.best == min(v for _, v in trial.reports)
    assert not (tmp_path / "run" / "model.safetensors").exists()      # a pruned run is not exported


def test_pruning_reports_a_later_fold_averaged_with_the_earlier_folds(tmp_path):
    import optuna

    from grukit.train import fit
    from grukit.tune_callbacks import TrialPruning

    class Trial:
        reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):                    # asked from the fold's epoch 1 on (warm-up 1): prune at once
            self.asked = getattr(self, "asked", 0) + 1
            return True

    trial = Trial()
    cb = TrialPruning(trial, step_offset=2 * 4, prior=[0.5, 0.25], warmup=1)     # the third fold, max_epochs 4
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1 of fold 2: val_loss="):
        fit("forecast", data=str(sine_csv(tmp_path / "s.csv")), out=tmp_path / "run", evaluate=False,
            callbacks=[cb], progress=False, **FIXED)
    assert [s for s, _ in Trial.reports] == [8, 9] and trial.asked == 1
    own = [3 * v - 0.75 for _, v in Trial.reports]                       # each report is (0.5 + 0.25 + v) / 3
    assert cb.best == pytest.approx(min(own), rel=1e-5) and all(v > 0 for v in own)


def test_too_many_validation_folds_fail_in_one_line_before_anything_is_written(tmp_path):
    data = sine_csv(tmp_path / "s.csv", n=40)           # 36 points before the 4 held out
    with pytest.raises(ConfigError) as e:
        tune("forecast", data=str(data), trials=2, out=tmp_path / "st", verbose=False, space=SPACE,
             **{**FIXED, "val_origins": 3, "val_step": 14})
    msg = str(e.value)
    assert "\n" not in msg and "has 36 points before the held-out test part" in msg
    assert "3 folds 14 apart need at least 37 points" in msg and "lower val_origins or val_step" in msg
    assert not (tmp_path / "st").exists()
    with pytest.raises(ConfigError, match="val_origins=40: .* 40 folds ending 1 point apart"):
        tune("forecast", data=str(data), trials=2, out=tmp_path / "st", verbose=False, space=SPACE,
             **{**FIXED, "val_origins": 40})
    with pytest.raises(ConfigError, match="val_origins=-1"):
        tune("forecast", data=str(data), trials=2, out=tmp_path / "st", verbose=False, space=SPACE,
             **{**FIXED, "val_origins": -1})


def test_every_setting_failing_stops_with_the_error(tmp_path):
    from grukit.errors import DataError, TrainingError
    data = tmp_path / "neg.csv"                           # readable, but every trial's prepare() refuses log
    data.write_text("y\n" + "\n".join(str(i - 30) for i in range(63)) + "\n")
    with pytest.raises(TrainingError, match="no trial of study .* completed .*first error: .*log needs positive"):
        tune("forecast", data=str(data), trials=50, out=tmp_path / "st", verbose=False, space=SPACE,
             **{**FIXED, "transform": "log"})
    df = pd.read_csv(tmp_path / "st" / "trials.csv")
    assert len(df) == 10 and set(df["state"]) == {"FAIL"}  # stopped after 10 failures in a row, not 50
    bad = tmp_path / "bad.csv"                            # unreadable data fails at once, before any trial
    bad.write_text("y\n" + "\n".join(["1", "2", "abc"] + [str(i) for i in range(60)]) + "\n")
    with pytest.raises(DataError, match="no numeric target"):
        tune("forecast", data=str(bad), trials=50, out=tmp_path / "st2", verbose=False, space=SPACE, **FIXED)
    assert not (tmp_path / "st2").exists()


def test_first_trial_is_the_starting_configuration(tmp_path, capsys):
    """trial 0 of a new study is the starting configuration (where the space holds its values), marked as such
    in the summary; --no-start leaves it to the sampler; a resumed study does not queue it again."""
    data = sine_csv(tmp_path / "s.csv")
    fixed = {k: v for k, v in FIXED.items() if k != "hidden_size"}
    space = {**SPACE, "hidden_size": [4, 8, 16], "lr": {"low": 1e-3, "high": 3e-2, "log": True},
             "head_dropout": {"low": 0.0, "high": 0.5, "step": 0.1}}
    # lr=0.0123 is in range; head_dropout 0.25 is off the 0.1 grid, so the sampler picks it
    summary = tune("forecast", data=str(data), trials=2, out=tmp_path / "st", pruner="none", verbose=True,
                   evaluate=False, space=space, hidden_size=16, lr=0.0123, head_dropout=0.25, **fixed)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("trial")]
    assert "(the starting configuration)" in lines[0] and "(the starting" not in lines[1]
    df = pd.read_csv(tmp_path / "st" / "trials.csv").sort_values("number")
    first = df.iloc[0]
    assert first["params_hidden_size"] == 16 and first["params_lr"] == 0.0123 and first["user_attrs_start"]
    assert round(first["params_head_dropout"] * 10) == pytest.approx(first["params_head_dropout"] * 10)
    assert summary["start_trial"] == 0 and summary["start_value"] == pytest.approx(first["value"])
    assert summary["best_value"] <= summary["start_value"]
    again = tune("forecast", data=str(data), trials=3, out=tmp_path / "st", pruner="none", verbose=False,
                 evaluate=False, space=space, hidden_size=16, lr=0.0123, head_dropout=0.25, **fixed)
    df = pd.read_csv(tmp_path / "st" / "trials.csv")
    assert len(df) == 3 and df["user_attrs_start"].fillna(False).astype(bool).sum() == 1
    assert again["start_trial"] == 0
    off = tune("forecast", data=str(data), trials=1, out=tmp_path / "off", pruner="none", verbose=False,
               evaluate=False, space=space, hidden_size=16, lr=0.0123, start=False, **fixed)
    df = pd.read_csv(tmp_path / "off" / "trials.csv")
    assert off["start_trial"] is None and df.iloc[0]["params_lr"] != 0.0123


def test_space_holds_only_values_a_trial_can_take():
    dims = task_space(ForecastConfig, {"hidden_size": [8, 16], "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                                       "num_layers": {"low": 1, "high": 3}, "window_norm": [True, False],
                                       "head_dropout": {"low": 0.0, "high": 0.4, "step": 0.2}})
    assert dims["hidden_size"].holds(16) and not dims["hidden_size"].holds(32)
    assert dims["lr"].holds(3e-3) and not dims["lr"].holds(0.1)
    assert dims["num_layers"].holds(2) and not dims["num_layers"].holds(2.5) and not dims["num_layers"].holds(True)
    assert dims["window_norm"].holds(False) and not dims["window_norm"].holds(0)
    assert dims["head_dropout"].holds(0.4) and not dims["head_dropout"].holds(0.3)


def test_classify_search_refits_the_best_setting_with_the_ensemble_plan(tmp_path, monkeypatch):
    """Trials are single models with a validation split (schedule=validated); the best setting is then trained
    again with the starting plan (schedule=auto: 5 members on all training series below 300) into refit/, and
    only that run is scored on test; best.yaml is the refit's configuration. Run again: nothing is retrained."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_serve_runs import _classify_npz

    import grukit.tune_report as report
    train, test = _classify_npz(tmp_path / "train.npz", n=40, T=10), _classify_npz(tmp_path / "test.npz", n=12,
                                                                                   T=10, seed=1)
    small = dict(test_data=str(test), hidden_size=8, train_steps=6, max_epochs=2, conv_channels=0, gru_steps=0,
                 conv_steps=0, batch_size=16)
    space = {"hidden_size": 8, "num_layers": 1, "bidirectional": False, "pooling": "mean", "dropout": 0.0,
             "batch_size": 16, "lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    scored = []
    real = report._score_once
    monkeypatch.setattr(report, "_score_once", lambda d, e: scored.append(Path(d).name) or real(d, e))
    summary = tune("classify", data=str(train), trials=2, out=tmp_path / "st", pruner="none", verbose=False,
                   space=space, **small)
    refit = tmp_path / "st" / "refit"
    assert summary["refit"] == {"schedule": "auto"} and summary["refit_run"] == str(refit)
    cfg = yaml.safe_load((refit / "config.yaml").read_text())
    assert cfg["schedule"] == "auto" and cfg["lr"] == pytest.approx(summary["best_params"]["lr"])
    assert len(list(refit.glob("model*.safetensors"))) == 5           # the small-set ensemble
    trial = yaml.safe_load((tmp_path / "st" / "best" / "config.yaml").read_text())
    assert trial["schedule"] == "validated"
    assert load_config_file(tmp_path / "st" / "best.yaml", "classify")["schedule"] == "auto"
    assert scored == ["refit"] and not list((tmp_path / "st" / "trials").glob("*/metrics.json"))
    assert summary["test_metrics"] == yaml.safe_load((refit / "metrics.json").read_text())
    stamp = (refit / "model.safetensors").stat().st_mtime_ns
    again = tune("classify", data=str(train), trials=2, out=tmp_path / "st", pruner="none", verbose=False,
                 space=space, **small)
    assert (refit / "model.safetensors").stat().st_mtime_ns == stamp and again["test_metrics"] == summary["test_metrics"]


def test_a_tune_section_fixing_the_ensemble_for_cheap_trials_is_undone_by_the_refit(tmp_path):
    """ensemble: 2 in the config, ensemble: 1 in its tune: section: trials train one model each, the refit two."""
    data = sine_csv(tmp_path / "s.csv")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": str(data), **FIXED, "ensemble": 2,
                                        "tune": {**SPACE, "ensemble": 1, "lr": {"low": 1e-3, "high": 3e-2}}}))
    summary = tune("forecast", cfg_file, trials=2, out=tmp_path / "st", pruner="none", verbose=False)
    assert summary["refit"] == {"ensemble": 2}
    assert len(list((tmp_path / "st" / "refit").glob("model*.safetensors"))) == 2
    assert all(len(list(d.glob("model*.safetensors"))) == 1 for d in (tmp_path / "st" / "trials").iterdir())
    assert load_config_file(tmp_path / "st" / "best.yaml", "forecast")["ensemble"] == 2
    assert summary["test_metrics"]["grukit"]["MAE"] > 0


def test_a_setting_that_leaves_an_earlier_fold_no_validation_windows_is_pruned_with_the_reason(tmp_path):
    """A 40-point series, horizon 12 (28 points before the test part; folds ending 0, 1 and 2 points earlier,
    planned for the automatic lookback 8) with a searched lookback of 12 or 13: the first two folds train and
    validate, the third has no validation window. The search used to fail such a trial with a traceback and a
    hint to set val_fraction (lynx with lookback 47-48 before its windows were filled); the setting just does
    not fit there: pruned, reason recorded."""
    import optuna

    from grukit.errors import TrainingError
    data = sine_csv(tmp_path / "s.csv", n=40)
    with pytest.raises(TrainingError, match="no trial of study .* completed .*'pruned': 2"):
        tune("forecast", data=str(data), trials=2, out=tmp_path / "st", verbose=False, pruner="none", study="s",
             space={"hidden_size": 8, "lookback": [12, 13]}, max_epochs=2, horizon=12)   # searched: folds follow
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'st' / 'study.db'}")
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.PRUNED, t.state
        assert t.user_attrs["pruned_at"].startswith("fold 2: no validation windows"), t.user_attrs
        assert t.params["lookback"] in (12, 13) and len(t.user_attrs["fold_values"]) == 2   # folds 0, 1 validated
