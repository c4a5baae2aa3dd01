"""weight_average (swa, ema): the weights a run keeps are the average of the steps' weights, computed here by
hand from a recording of every step; checkpoints carry the average and the current weights; config checks."""
from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from grukit.callbacks import EMA_DECAY, SWA_START
from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.runs import load_checkpoint
from grukit.train import fit


class Recorder(Callback):
    """Every optimiser step's parameters (a copy), with the step's zero-based index."""

    def __init__(self):
        self.steps, self.total, self.lrs = [], None, []

    def on_train_start(self, trainer, pl_module):
        self.total = trainer.estimated_stepping_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step - 1,
                           {k: p.detach().clone() for k, p in pl_module.named_parameters()}))
        self.lrs.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))


def _train(tmp_path, kind: str):
    rec = Recorder()
    run = fit("classify", data="gunpoint", out=tmp_path / kind, ensemble=1, train_steps=120, hidden_size=8,
              conv_channels=8, conv_branch="fcn", weight_average=kind, baselines=(), progress=False,
              evaluate=False, checkpoint_every=0, callbacks=[rec])
    kept = dict(run.models()[0].named_parameters())
    return run, rec, kept


def test_swa_keeps_the_equal_average_of_the_second_half_of_the_steps(tmp_path):
    run, rec, kept = _train(tmp_path, "swa")
    start = int(rec.total * SWA_START)
    averaged = [w for i, w in rec.steps if i >= start]
    assert rec.total == len(rec.steps) >= 24 and len(averaged) == rec.total - start >= 12   # whole epochs
    last = rec.steps[-1][1]
    for name, p in kept.items():
        want = torch.stack([w[name] for w in averaged]).mean(0)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)
    moved = [n for n in kept if not torch.allclose(kept[n].detach(), last[n])]
    assert moved, "the kept weights are the last step's, not an average"
    # the cosine learning rate falls until the average starts, then stays at its halfway value
    T = run.config.max_epochs
    hold = int(T * SWA_START)
    lr = {}
    for e, v in rec.lrs:
        lr.setdefault(e, v)                # an epoch's first step (its last may see the next epoch's rate)
    for e, v in lr.items():
        want = run.config.lr * 0.5 * (1 + math.cos(math.pi * min(e, hold) / T))
        assert v == pytest.approx(want, rel=1e-6), (e, v, want)
    assert T >= 2 and lr[T - 1] == lr[hold] < lr[0]
    ckpt = load_checkpoint(tmp_path / "swa" / "checkpoints" / "last.ckpt", "classify")
    assert "current_model_state" in ckpt and "averaging_state" in ckpt    # a resume continues both
    name = next(n for n in moved if n in ckpt["state_dict"])
    torch.testing.assert_close(ckpt["state_dict"][name], kept[name].detach())
    torch.testing.assert_close(ckpt["current_model_state"][name], last[name])


def test_ema_keeps_the_exponential_average_of_every_step(tmp_path):
    run, rec, kept = _train(tmp_path, "ema")
    for name, p in kept.items():
        ema = rec.steps[0][1][name].clone()                # the first update copies the weights
        for _, w in rec.steps[1:]:
            ema = EMA_DECAY * ema + (1 - EMA_DECAY) * w[name]
        torch.testing.assert_close(p.detach(), ema, rtol=1e-4, atol=1e-6)


def test_config_checks_weight_average():
    with pytest.raises(ConfigError, match="weight_average='sw'.*expected none, swa or ema"):
        ClassifyConfig.from_dict({"weight_average": "sw"})
    assert ClassifyConfig.from_dict({"weight_average": "ema"}).weight_average == "ema"
