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


@pytest.mark.parametrize("freq", ["Hourly", "Weekly"])
def test_m4_example_quick_run_writes_the_table(tmp_path, freq):
    if not (M4 / f"{freq}-train.csv").is_file():
        pytest.skip(f"M4 {freq} files not found under {M4}")
    data = tmp_path / "m4"
    data.mkdir()
    for part in ("train", "test"):
        pd.read_csv(M4 / f"{freq}-{part}.csv").iloc[:12].to_csv(data / f"{freq}-{part}.csv", index=False)
    env = {**os.environ, "M4_DATA": str(data), "GRUKIT_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "m4.py"), freq, "--quick"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "runs" / "m4" / "results.json").read_text())[f"{freq}-quick"]
    ours, naive2 = result["table"]["grukit (ours)"], result["table"]["naive2"]
    assert np.isfinite(ours["OWA"]) and ours["OWA"] > 0 and naive2["OWA"] == pytest.approx(1.0, abs=1e-3)
    assert 0 <= ours["coverage"] <= 1 and result["train_seconds"] > 0
    assert result["table"]["published: Smyl ES-RNN"]["OWA"] == {"Hourly": 0.44, "Weekly": 0.851}[freq]
