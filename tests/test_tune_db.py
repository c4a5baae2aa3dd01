"""The study database of grukit tune across processes: two processes share one SQLite study without
duplicating a trial number, and a search SIGKILLed in the middle of a trial continues when run again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["--set", "lookback=12", "--set", "horizon=4", "--set", "patience=0", "--set", "lr_schedule=none",
         "--set", "transform=none", "--set", "likelihood=point", "--pruner", "none", "--no-eval"]


def space_file(path: Path, max_epochs: int) -> Path:
    path.write_text(f"max_epochs: {max_epochs}\ntune:\n  hidden_size: [4, 8]\n  num_layers: 1\n  lookback: 12\n"
                    "  batch_size: 16\n  head_dropout: 0.0\n  window_norm: true\n"
                    "  lr: {low: 1.0e-3, high: 3.0e-2, log: true}\n")
    return path


def grukit_tune(data: Path, cfg: Path, out: Path, trials: int, seed: int = 0) -> list[str]:
    return [sys.executable, "-m", "grukit.cli", "tune", "forecast", "--data", str(data), "-c", str(cfg),
            "--out", str(out), "--trials", str(trials), "--seed", str(seed), *FIXED]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def sine_csv(path: Path, n: int = 120) -> Path:
    t = np.arange(n)
    pd.DataFrame({"y": 10 + 3 * np.sin(t * 2 * np.pi / 12) + 0.02 * t}).to_csv(path, index=False)
    return path


def load(out: Path):
    return optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    data, cfg, out = sine_csv(tmp_path / "s.csv"), space_file(tmp_path / "c.yaml", 8), tmp_path / "study"
    procs = [subprocess.Popen(grukit_tune(data, cfg, out, trials=8, seed=s), env=env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    trials = load(out).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == len(trials) >= 8       # never a duplicated trial number
    assert all(t.state.name == "COMPLETE" for t in trials)
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert dirs == [f"trials/{n:04d}" for n in numbers] and all((out / d / "model.safetensors").is_file() for d in dirs)
    # both processes ran trials, each printing its progress lines
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and all("trial " in log and " complete " in log for log in logs)


@pytest.mark.slow
def test_sigkill_mid_trial_then_same_command_continues(tmp_path):
    data, cfg, out = sine_csv(tmp_path / "s.csv"), space_file(tmp_path / "c.yaml", 30), tmp_path / "study"
    cmd = grukit_tune(data, cfg, out, trials=3)
    p = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = out / "trials" / "0001" / "run.json"               # trial 1 has started training
    deadline = time.time() + 240
    while not running.is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    assert p.poll() is None, "the search ended before it could be killed mid-trial"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = {t.number: t for t in load(out).get_trials()}
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING"
    assert not (out / "trials" / "0001" / "model.safetensors").is_file()
    best_before = before[0].value

    res = subprocess.run(cmd, env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    after = load(out).get_trials()
    numbers = [t.number for t in after]
    assert len(numbers) == len(set(numbers))
    by_state = {s: [t for t in after if t.state.name == s] for s in ("COMPLETE", "FAIL", "RUNNING")}
    assert len(by_state["COMPLETE"]) == 3 and not by_state["RUNNING"]        # the trial count is kept...
    assert [t.number for t in by_state["FAIL"]] == [1]                        # ...the dead trial failed...
    retried = [t for t in after if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].params == before[1].params       # ...and its setting ran again
    assert after[0].value == best_before and min(t.value for t in by_state["COMPLETE"]) <= best_before
    assert "0 of 3" not in res.stdout and "1 of 3 trials done" in res.stdout
