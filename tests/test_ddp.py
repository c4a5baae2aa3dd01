"""Multi-process training through Lightning's DDP (gloo on CPU) matches one process for the same global batch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grukit.runs import load_weights

WORKER = Path(__file__).with_name("ddp_worker.py")


def _train(devices: int, batch: int, out: Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, str(WORKER), str(devices), str(batch), str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_processes_match_one(tmp_path):
    """Two gloo processes with batch 8 each end where one process with batch 16 ends."""
    one = _train(1, 16, tmp_path / "one.safetensors")
    two = _train(2, 8, tmp_path / "two.safetensors")
    assert "steps=4 world_size=1" in one and "steps=4 world_size=2" in two
    a, b = load_weights(tmp_path / "one.safetensors"), load_weights(tmp_path / "two.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, f"DDP weights differ from one process by {diff}"
    moved = float(two.split("moved=")[1].split()[0])
    assert moved > 1e-3, "training must move the weights, or the comparison proves nothing"


def test_language_model_streams_are_shared_by_rank(tmp_path):
    """lm under DDP: 2 processes x 4 streams each end where 1 process with the 8 streams ends (each rank carries
    the state of its own streams across consecutive windows; no window is skipped or reordered)."""
    text = tmp_path / "text.txt"
    text.write_text("".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "bird", "fox") * 12))
    one = _train(1, 8, tmp_path / "one.safetensors", "lm", str(text))
    two = _train(2, 8, tmp_path / "two.safetensors", "lm", str(text))
    steps = int(one.split("steps=")[1].split()[0])
    assert steps > 1 and f"steps={steps} world_size=2" in two
    a, b = load_weights(tmp_path / "one.safetensors"), load_weights(tmp_path / "two.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, f"DDP language model differs from one process by {diff}"
    assert float(two.split("moved=")[1].split()[0]) > 1e-3


def test_cli_ddp_run_writes_one_run_directory(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 8, 2)).astype("float32")
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, :, 0].mean(1) > 0).astype(int))
    proc = subprocess.run([sys.executable, "-m", "grukit.cli", "train", "classify", "--data", "d.npz",
                           "--devices", "2", "--strategy", "ddp", "--max-epochs", "1", "--hidden-size", "4",
                           "--out", "run", "--no-progress", "--no-eval"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "run"]     # no second run directory
    assert proc.stdout.count("run directory:") == 1                             # rank 0 reports, once
