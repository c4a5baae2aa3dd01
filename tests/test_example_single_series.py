"""examples/forecast_single_series.py runs from a checkout and writes its table and plot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_single_series_check_writes_results_and_plot(tmp_path):
    env = {**os.environ, "GRUKIT_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "forecast_single_series.py"), "--out", str(out),
                           "--only", "nile,uschange_income", "--set", "max_epochs=2", "--set", "hidden_size=8"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(out / "results.csv")
    assert list(table["series"]) == ["nile", "uschange_income"]
    for col in ("grukit", "naive", "theta", "ets", "arima"):
        assert (table[col] > 0).all(), col
    best = table[["ets", "theta"]].min(axis=1)
    pd.testing.assert_series_equal(table["relative"], table["grukit"] / best, check_names=False)
    assert (out / "scatter.png").stat().st_size > 10_000
    assert "geomean relative MASE" in proc.stdout
    config = (out / "runs" / "nile-0" / "config.yaml").read_text()
    assert "hidden_size: 8" in config and "max_epochs: 2" in config                   # --set reached the runs
