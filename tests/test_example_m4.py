"""examples/m4.py runs from a checkout: its --quick smoke run on a 12-series slice of each M4 file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
M4 = REPO.parent / "shared" / "data" / "m4"


def _run_example(tmp_path, freq: str, *flags: str) -> dict:
    """examples/m4.py FREQ --quick FLAGS on a 12-series slice of the M4 file; its results.json entries."""
    if not (M4 / f"{freq}-train.csv").is_file():
        pytest.skip(f"M4 {freq} files not found under {M4}")
    data = tmp_path / "m4"
    data.mkdir()
    for part in ("train", "test"):
        pd.read_csv(M4 / f"{freq}-{part}.csv").iloc[:12].to_csv(data / f"{freq}-{part}.csv", index=False)
    env = {**os.environ, "M4_DATA": str(data), "GRUKIT_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "m4.py"), freq, "--quick", *flags],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((tmp_path / "runs" / "m4" / "results.json").read_text())


@pytest.mark.parametrize("freq", ["Hourly", "Weekly"])
def test_m4_example_quick_run_writes_the_table(tmp_path, freq):
    result = _run_example(tmp_path, freq)[f"{freq}-quick"]
    ours, naive2 = result["table"]["grukit (ours)"], result["table"]["naive2"]
    assert np.isfinite(ours["OWA"]) and ours["OWA"] > 0 and naive2["OWA"] == pytest.approx(1.0, abs=1e-3)
    assert 0 <= ours["coverage"] <= 1 and result["train_seconds"] > 0
    assert result["table"]["published: Smyl ES-RNN"]["OWA"] == {"Hourly": 0.44, "Weekly": 0.851}[freq]


def test_m4_example_defaults_run_states_only_the_horizon(tmp_path):
    """--defaults trains grukit's defaults with only the horizon given (what a new user states)."""
    result = _run_example(tmp_path, "Weekly", "--defaults")["Weekly-defaults-quick"]
    assert result["config"]["horizon"] == 13 and "hidden_size" not in result["config"]
    from grukit.runs import Run
    cfg = Run(tmp_path / result["run"]).config
    assert (cfg.hidden_size, cfg.batch_size, cfg.lookback) == (32, 16, 36)      # the defaults, lookback resolved
    assert np.isfinite(result["table"]["grukit (ours)"]["OWA"])


def test_weekly_tune_file_starts_from_the_hand_set_setup_and_refits_at_its_budget():
    """examples/m4_weekly_tune.yaml: trial 0 is examples/m4.py's hand-set Weekly setting, trials are one model
    of at most 6 minutes, and the best setting is refit at the hand-set's own budget (its ensemble and cap), so
    the tuned and hand-set rows of the README compare like with like."""
    import importlib.util

    from grukit.tasks.forecast_config import ForecastConfig
    from grukit.train import resolve_config
    from grukit.tune_space import read_tune_section, start_params, task_space

    spec = importlib.util.spec_from_file_location("m4_example", REPO / "examples" / "m4.py")
    m4 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m4)
    path = REPO / "examples" / "m4_weekly_tune.yaml"
    base = resolve_config("forecast", path)
    hand = m4.SETUPS["Weekly"]
    for name, value in hand.items():
        if name in ("n_jobs", "progress"):          # how the example runs, not what it trains
            continue
        assert getattr(base, name) == (tuple(value) if isinstance(value, list) else value), name
    dims = task_space(ForecastConfig, read_tune_section(path), base, source=str(path))
    fixed = {d.name: d.value for d in dims.values() if d.kind == "fixed"}
    assert fixed["ensemble"] == 1 and fixed["max_minutes"] == 6
    assert {"ensemble", "max_minutes"} <= set(ForecastConfig.tune_refit)
    start = start_params(dims, base)                   # trial 0: the hand-set values the space can hold
    assert start and all(getattr(base, k) == v for k, v in start.items())
    assert set(start) == {d.name for d in dims.values() if d.kind != "fixed"}   # all: trial 0 is the hand-set
    assert {d.name for d in dims.values() if d.kind != "fixed"} >= {"lr", "batch_size", "head_dropout"}
