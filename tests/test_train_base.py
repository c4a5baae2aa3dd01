"""The training base: config dataclasses and files, the registry, atomic writes, SequenceTask state carrying."""
from __future__ import annotations

import os

import pytest
import torch

from grukit.config import ClassifyConfig, ForecastConfig, load_config_file
from grukit.errors import ConfigError
from grukit.runs import atomic_write, load_weights, save_weights
from grukit.tasks import registry


def test_config_names_defaults_and_errors(tmp_path):
    c = ForecastConfig.from_dict({"hidden-size": "8", "quantiles": "0.05,0.5,0.95", "bidirectional": "true"})
    assert c.hidden_size == 8 and c.quantiles == (0.05, 0.5, 0.95) and c.bidirectional is True
    assert ForecastConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="did you mean 'lookback'"):
        ForecastConfig.from_dict({"lookbak": 3})
    with pytest.raises(ConfigError, match="2 problems") as e:
        ForecastConfig.from_dict({"lr": -1, "likelihood": "gausian"})
    assert "did you mean 'gaussian'" in str(e.value)
    for f in __import__("dataclasses").fields(ClassifyConfig):
        assert f.metadata.get("help"), f"{f.name} has no help line"


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "model:\n  hidden_size: 12\nlr: 0.01\nforecast:\n  horizon: 3\nclassify:\n  pooling: mean\n"),
    (".toml", "lr = 0.01\n[model]\nhidden_size = 12\n[forecast]\nhorizon = 3\n"),
    (".json", '{"hidden_size": 12, "lr": 0.01, "horizon": 3}'),
])
def test_config_files(tmp_path, suffix, text):
    p = tmp_path / f"c{suffix}"
    p.write_text(text)
    cfg = ForecastConfig.from_dict(load_config_file(p, "forecast"))
    assert (cfg.hidden_size, cfg.lr, cfg.horizon) == (12, 0.01, 3)


def test_registry_lists_and_rejects():
    assert {"forecast", "classify", "autoencoder"} <= set(registry.names())
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        registry.get("clasify")


def test_atomic_write_and_safetensors(tmp_path):
    p = atomic_write(tmp_path / "a" / "f.txt", "one")
    atomic_write(p, "two")
    assert p.read_text() == "two" and os.listdir(p.parent) == ["f.txt"]   # no temp files left behind
    sd = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    save_weights(sd, tmp_path / "m.safetensors")
    back = load_weights(tmp_path / "m.safetensors")
    assert all(torch.equal(sd[k], back[k]) for k in sd)


def test_carry_state_across_batches():
    from dataclasses import dataclass

    from grukit.config import TaskConfig
    from grukit.tasks.base import SequenceTask

    class Echo(SequenceTask):
        task_name = "echo"
        carry_state = True

        def build_head(self):
            return torch.nn.Linear(self.encoder_size, 1)

        def loss(self, out, y, inputs):
            return ((out.squeeze(-1) - y) ** 2).mean()

    cfg = TaskConfig(hidden_size=4, backend="aten")
    task = Echo(cfg, {"input_size": 1})
    batch = {"x": torch.randn(2, 5, 1), "y": torch.randn(2, 5)}
    out1, h1 = task(batch, task._state_for("train", 2))
    task._states["train"] = task.detach_state(h1)
    assert task._state_for("train", 2) is not None and not task._state_for("train", 2).requires_grad
    assert task._state_for("train", 3) is None               # batch size changed: start from zeros
    task.on_train_epoch_start()
    assert task._state_for("train", 2) is None


def test_infer_is_the_one_ensemble_loop():
    """infer(): eval mode, no grad, members combined by the task's rule, training flags restored."""
    from grukit.tasks.base import SequenceTask, combine, infer

    class Const(SequenceTask):
        def __init__(self, value):
            torch.nn.Module.__init__(self)
            self.value = value
            self.w = torch.nn.Parameter(torch.ones(1))
            self._states = {}

        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            assert not torch.is_grad_enabled() and not self.training
            return {"p": batch["x"] * self.value * self.w}

    members = [Const(1.0), Const(2.0), Const(6.0)]
    batches = [{"x": torch.ones(2)}, {"x": torch.full((1,), 2.0)}]
    out = infer(members, batches)
    assert torch.allclose(out[0]["p"], torch.full((2,), 3.0)) and torch.allclose(out[1]["p"], torch.tensor([6.0]))
    assert torch.allclose(infer(members, batches, rule="median")[0]["p"], torch.full((2,), 2.0))
    assert all(m.training for m in members)                       # modes restored
    assert not out[0]["p"].requires_grad
    with pytest.raises(ConfigError, match="ensemble rule"):
        infer(members, batches, rule="mode")
    assert combine([[torch.ones(1)], [torch.zeros(1)]])[0].item() == 0.5
