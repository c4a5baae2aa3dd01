"""examples/m1_yearly.py reads the Monash .tsf file, writes the wide files and prints grukit's row and the
baselines'."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
from m1_yearly import tsf_series  # noqa: E402


def test_tsf_reader(tmp_path):
    pytest.importorskip("aeon")
    f = tmp_path / "x.tsf"
    f.write_text("# comment\n@relation x\n@attribute series_name string\n@attribute start_timestamp date\n"
                 "@frequency yearly\n@horizon 2\n@missing true\n@equallength false\n@data\n"
                 "T1:1950-01-01 00-00-00:1,2,3\nT2:1960-01-01 00-00-00:4.5,?,6\n")
    assert tsf_series(f) == [("T1", [1.0, 2.0, 3.0]), ("T2", [4.5, 6.0])]


def test_m1_example_runs_with_the_automatic_lookback(tmp_path):
    aeon = pytest.importorskip("aeon")
    tsf = Path(aeon.__file__).parent / "datasets" / "data" / "m1_yearly_dataset" / "m1_yearly_dataset.tsf"
    if not tsf.is_file():
        pytest.skip(f"{tsf} is not shipped by this aeon")
    env = {**os.environ, "GRUKIT_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "m1_yearly.py"), "--set", "max_epochs=1",
                           "--set", "hidden_size=8", "--set", "baselines=naive2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "181 series, lengths 15-58, horizon 6" in proc.stdout
    row = re.search(r"seed 0: lookback (\d+) .* OWA ([\d.]+)", proc.stdout)
    assert row and row.group(1) == "4" and float(row.group(2)) > 0                  # median 15 points: 9 origins
    assert re.search(r"naive2 +sMAPE [\d.]+ +MASE [\d.]+ +OWA 1\.000", proc.stdout)
