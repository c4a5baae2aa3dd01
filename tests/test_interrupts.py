"""Interrupted and failing runs: SIGKILL at any moment, SIGTERM, a loss that turns NaN."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grukit.errors import TrainingError
from grukit.runs import load_checkpoint, load_weights


def _data(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 30, 3)).astype("float32")
    np.savez(tmp / "d.npz", X=X, y=(X[:, :, 0].mean(1) > 0).astype(int))
    return tmp / "d.npz"


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "grukit.cli", "train", "classify", "--data", str(data), "--out", str(out),
            "--max-epochs", "6", "--hidden-size", "16", "--dropout", "0.2", "--num-layers", "2",
            "--batch-size", "16", "--patience", "0", "--deterministic", "--no-progress", "--no-eval",
            "--checkpoint-every", "0", *extra]


def _wait_for_epoch(ckpt: Path, proc, epoch: int, timeout: float = 240) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        if ckpt.is_file():
            try:
                if load_checkpoint(ckpt)["epoch"] >= epoch:
                    return
            except Exception:  # noqa: BLE001 - never half-written (atomic), but be patient with the race
                pass
        time.sleep(0.2)
    pytest.fail("no checkpoint appeared in time")


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path):
    data = _data(tmp_path)
    full = subprocess.run(_cmd(data, tmp_path / "full"), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    proc = subprocess.Popen(_cmd(data, tmp_path / "cut"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_epoch(tmp_path / "cut" / "checkpoints" / "last.ckpt", proc, epoch=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt", task="classify")   # still valid
    assert 2 <= ckpt["epoch"] < 6
    assert not list((tmp_path / "cut").rglob("*.tmp"))              # no half-written file left behind
    resumed = subprocess.run(_cmd(data, tmp_path / "cut", "--resume"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_weights(tmp_path / "full" / "model.safetensors")
    b = load_weights(tmp_path / "cut" / "model.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5, f"resumed run ends {diff} away from the uninterrupted one"


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(data, out, "--max-epochs", "200"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(out / "checkpoints" / "last.ckpt", proc, epoch=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped on SIGTERM" in err and "--resume" in err
    assert "Traceback" not in err
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt", task="classify")
    assert ckpt["global_step"] > 0


def test_nan_loss_stops_with_the_batch_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from grukit.tasks import classify
    from grukit.train import fit

    data = _data(tmp_path)
    original = classify.ClassifyTask.loss
    calls = {"n": 0}

    def poisoned(self, outputs, target, inputs):
        loss = original(self, outputs, target, inputs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 30:                  # epoch 1, batch 9 (320 training sequences, 20 batches)
                return loss * float("nan")
        return loss

    monkeypatch.setattr(classify.ClassifyTask, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, batch 9 .*last good checkpoint is kept"):
        fit("classify", data=str(data), out=tmp_path / "run", max_epochs=3, hidden_size=8, batch_size=16,
            progress=False, evaluate=False, schedule="manual", ensemble=1)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_exploding_gradients_warn_once_with_advice():
    from types import SimpleNamespace

    from grukit.callbacks import GradientWatch

    net = torch.nn.Linear(3, 2)
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e3)                              # norm sqrt(8) * 1e3 > 100 x clip 1.0
    trainer = SimpleNamespace(global_step=7)
    watch = GradientWatch(clip=1.0)
    with pytest.warns(RuntimeWarning, match=r"exploding gradients: norm 2\.83e\+03 at global step 7.*lower --lr"):
        watch.on_before_optimizer_step(trainer, net, None)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # warned once: silent afterwards
        watch.on_before_optimizer_step(trainer, net, None)
    calm = GradientWatch(clip=1.0)
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calm.on_before_optimizer_step(trainer, net, None)            # a normal norm says nothing
