"""The command line: help with examples, one-line errors with exit code 2, train/evaluate/predict round trip."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from grukit.cli import main


def run_cli(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("cmd", [[], ["train"], ["train", "forecast"], ["train", "classify"],
                                 ["train", "autoencoder"], ["evaluate"], ["predict"], ["datasets"],
                                 ["quickstart"], ["bench"]])
def test_help_shows_examples(capsys, cmd):
    rc, out, _ = run_cli(capsys, *cmd, "--help")
    assert rc == 0
    assert "Usage" in out
    if cmd:
        assert "Example" in out


def test_unknown_task_one_line_exit_2(capsys):
    rc, _, err = run_cli(capsys, "train", "forcast", "--data", "x.csv")
    assert rc == 2 and "unknown task 'forcast' (did you mean 'forecast'?)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["train", "forecast", "--data", "airline", "--bogus"], "No such option: --bogus"),
    (["train", "forecast", "--data", "airline", "--max-epochs", "x"], "Invalid value for '--max-epochs'"),
    (["train", "classify", "--data"], "Option '--data' requires an argument"),
    (["evaluate"], "Missing argument"),
])
def test_command_line_usage_errors_one_line_exit_2(capsys, args, message):
    """Errors the command-line parser finds (typer's own copy of click raises them from typer 0.2x on)."""
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and message in err and err.startswith("grukit: error: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_arguments_prints_help_exit_0(capsys):
    rc, out, _ = run_cli(capsys)
    assert rc == 0 and "train" in out and "serve" in out


def test_data_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    rc, _, err = run_cli(capsys, "train", "forecast", "--data", str(tmp_path / "empty.csv"), "--no-progress")
    assert rc == 2 and "empty.csv" in err and "empty" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(capsys, "train", "forecast", "--data", "airlin")
    assert rc == 2 and "did you mean 'airline'" in err
    rc, _, err = run_cli(capsys, "train", "forecast", "--data", "airline", "--hidden-size", "0")
    assert rc == 2 and "hidden_size=0" in err
    rc, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert rc == 2 and "not a grukit run directory" in err


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "e.csv").write_text("")
    p = subprocess.run([sys.executable, "-m", "grukit.cli", "train", "forecast", "--data",
                        str(tmp_path / "e.csv"), "--debug"], capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_datasets_lists_builtins(capsys):
    rc, out, _ = run_cli(capsys, "datasets")
    assert rc == 0
    for name in ("airline", "sunspots", "japanese_vowels", "kdd_tsad_135"):
        assert name in out


def test_bench_runs_the_short_bench_and_prints_its_table(capsys, monkeypatch):
    """`grukit bench` runs grukit.bench.run(short=True) and prints its rows as a table."""
    import grukit.bench
    calls = []

    def fake(short=False):
        calls.append(short)
        return {"grukit": {"ms": 1.5}, "torch.nn.GRU": {"ms": 3.25}}

    monkeypatch.setattr(grukit.bench, "run", fake)
    rc, out, _ = run_cli(capsys, "bench")
    assert rc == 0 and calls == [True]
    assert "torch.nn.GRU" in out and "3.25" in out and "1.5" in out


def test_help_lists_six_tasks_with_defaults_in_80_columns(capsys, monkeypatch):
    """`grukit --help` and `grukit train --help` name all six tasks; every `train TASK --help` shows each
    option's default and fits 80 columns (the examples aside, which are printed as written)."""
    monkeypatch.setenv("COLUMNS", "80")
    tasks = ("forecast", "classify", "autoencoder", "lm", "music", "speech")
    for cmd in ([], ["train"]):
        rc, out, _ = run_cli(capsys, *cmd, "--help")
        assert rc == 0 and all(t in out for t in tasks), out
    for t in tasks:
        rc, out, _ = run_cli(capsys, "train", t, "--help")
        body = out.split("Examples:")[0]
        assert rc == 0 and "--max-minutes" in body and "[default:" in body
        assert max(len(line) for line in body.splitlines()) <= 80, t
    _, out, _ = run_cli(capsys, "train", "music", "--help")
    assert "[default: 128]" in " ".join(out.split())                     # hidden_size of MusicConfig
    assert "--length 30s" not in out and "--seconds 30" in out             # the example that can run


def test_wide_metric_tables_turn_to_fit(capsys, monkeypatch):
    """print_table: metrics side by side when they fit; turned (a row per metric) when they do not."""
    from grukit.cli import print_table
    monkeypatch.setenv("COLUMNS", "80")
    narrow = {"grukit": {"MAE": 1.0, "RMSE": 2.0}, "naive": {"MAE": 3.0, "RMSE": 4.0}}
    print_table(narrow)
    out = capsys.readouterr().out
    assert "MAE" in out.splitlines()[1] and "RMSE" in out.splitlines()[1]    # header row holds the metrics
    wide = {"grukit": {f"metric_number_{i}": float(i) for i in range(9)}, "zscore": {"metric_number_0": 0.5}}
    print_table(wide)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "grukit" in out.splitlines()[1] and "zscore" in out.splitlines()[1]
    assert all(f"metric_number_{i}" in out for i in range(9)) and "…" not in out
    # many models and several metrics (M4's table: 14 methods x 6 metrics): fits neither way, stays unturned,
    # the narrower of the two, so the metric names stay the header
    many = {f"published: method {i}": {c: 1.0 for c in ("sMAPE", "MASE", "OWA", "MSIS", "coverage")}
            for i in range(14)}
    print_table(many)
    out = capsys.readouterr().out
    assert "sMAPE" in out.splitlines()[1] and "OWA" in out.splitlines()[1]


def test_train_evaluate_predict_round_trip(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6, 2)).astype(np.float32)
    y = (X[:, :, 0].mean(1) > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden_size: 4\ntrain:\n  max_epochs: 1\n  progress: false\n")
    rc, out, err = run_cli(capsys, "train", "classify", "--data", str(tmp_path / "d.npz"), "--config", str(cfg),
                           "--out", str(tmp_path / "run"), "--test-data", str(tmp_path / "d.npz"))
    assert rc == 0, err
    assert "accuracy" in out and "run directory" in out
    import yaml
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["hidden_size"] == 4
    rc, out, err = run_cli(capsys, "evaluate", str(tmp_path / "run"))
    assert rc == 0 and "macro_F1" in out
    rc, out, err = run_cli(capsys, "predict", str(tmp_path / "run"), "--data", str(tmp_path / "d.npz"),
                           "--out", str(tmp_path / "p.csv"))
    assert rc == 0 and (tmp_path / "p.csv").is_file()
    rc, _, err = run_cli(capsys, "train", "classify", "--data", str(tmp_path / "d.npz"), "--out",
                         str(tmp_path / "run"))
    assert rc == 2 and "already exists" in err                 # an existing run is never overwritten
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_every_environment_switch_is_documented():
    """Each environment variable grukit reads (GRUKIT_*, NUMBA_CACHE_DIR), in Python or C, has a row in the
    README's and docs/ARCHITECTURE.md's environment tables."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    found = set()
    for p in list((root / "grukit").rglob("*.py")) + list((root / "grukit").rglob("*.c")):
        found |= set(re.findall(r"\b(GRUKIT_[A-Z_]+|NUMBA_CACHE_DIR)\b", p.read_text(encoding="utf-8")))
    assert {"GRUKIT_CGRU", "GRUKIT_SPIN_US", "GRUKIT_CACHE_DIR"} <= found              # the scan finds them
    for doc in ("README.md", "docs/ARCHITECTURE.md"):
        text = (root / doc).read_text(encoding="utf-8")
        missing = sorted(v for v in found if f"`{v}" not in text)
        assert not missing, f"{doc} does not document {missing}"


def test_a_warning_text_is_printed_once_per_command():
    """Training and its evaluation read the same file; Lightning's filter changes reset Python's memory of
    shown warnings, so the CLI prints each text once itself (and a second command starts afresh)."""
    import warnings
    from grukit.cli import show_warnings_once
    before, printed = warnings.showwarning, []
    warnings.showwarning = lambda message, *a, **k: printed.append(str(message))
    try:
        for _ in range(2):
            printed.clear()
            show_warnings_once()
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                for _ in range(3):
                    warnings.warn("data.csv: 1 series have empty values inside", UserWarning)
                warnings.warn("another text", UserWarning)
            assert printed == ["data.csv: 1 series have empty values inside", "another text"]
    finally:
        warnings.showwarning = before
