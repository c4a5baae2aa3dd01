"""The training base: config dataclasses and files, the registry, atomic writes, SequenceTask state carrying."""
from __future__ import annotations

import os

import pytest
import torch

from grukit.config import ClassifyConfig, load_config_file
from grukit.tasks.forecast_config import ForecastConfig
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


# ------------------------------------------------------------------ one optimiser, one time budget, one encoder
def _ae(tmp_path, n=600, **kw):
    """A tiny autoencoder run's inputs: a CSV and options (the cheapest task to train)."""
    import numpy as np
    import pandas as pd
    p = tmp_path / "s.csv"
    pd.DataFrame({"value": np.sin(np.arange(n) / 5.0)}).to_csv(p, index=False)
    return dict(data=str(p), window=8, stride=1, hidden_size=4, latent_size=2, batch_size=8, progress=False,
                **kw)


def test_max_minutes_is_every_tasks_time_budget(tmp_path):
    """max_minutes (a TaskConfig field: every task, the CLI's --max-minutes) stops training after the step that
    spends it; music's old time_limit is read as max_minutes; a negative budget is refused."""
    import warnings

    from grukit.config import AutoencoderConfig
    from grukit.tasks.language_config import LMConfig
    from grukit.tasks.music_config import MusicConfig
    from grukit.train import fit
    for cls in (ForecastConfig, ClassifyConfig, AutoencoderConfig, LMConfig, MusicConfig):
        assert "max_minutes" in cls.field_names(), cls
    assert MusicConfig.from_dict({"time_limit": 2.5}).max_minutes == 2.5
    with pytest.raises(ConfigError, match="max_minutes=-1"):
        AutoencoderConfig.from_dict({"max_minutes": -1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = fit("autoencoder", out=tmp_path / "run", max_epochs=1000, max_minutes=0.002, patience=0,
                  evaluate=False, **_ae(tmp_path))
    epochs = {r["epoch"] for r in __import__("csv").DictReader(open(run.path / "metrics.csv")) if r.get("epoch")}
    assert 1 <= len(epochs) < 1000                                              # the budget ended training
    assert load_config_file(run.path / "config.yaml")["max_minutes"] == 0.002            # recorded


def test_the_one_optimiser_builder():
    """SequenceTask.configure_optimizers builds every task's optimiser: AdamW (music too, which had Adam), SGD
    where the LM config asks, the plateau schedule's factor/patience from lr_decay/lr_patience or the defaults."""
    from grukit.tasks.language import LMTask
    from grukit.tasks.language_config import LMConfig
    from grukit.tasks.music import MusicTask
    from grukit.tasks.music_config import MusicConfig
    music = MusicTask(MusicConfig(data="x", hidden_size=4, patience=9), {"input_size": 88}).configure_optimizers()
    assert type(music["optimizer"]) is torch.optim.AdamW
    assert music["lr_scheduler"]["scheduler"].factor == 0.5 and music["lr_scheduler"]["scheduler"].patience == 3
    lm = LMTask(LMConfig(data="x", hidden_size=4, embedding_size=4, optimizer="sgd", lr_decay=0.25,
                         lr_patience=2), {"vocab_size": 9, "tokenize": "char", "input_size": 4})
    opt = lm.configure_optimizers()
    assert type(opt["optimizer"]) is torch.optim.SGD and opt["lr_scheduler"]["scheduler"].factor == 0.25
    assert opt["lr_scheduler"]["scheduler"].patience == 2
    assert lm.encoder.input_size == 4 and lm.encoder.hidden_size == 4              # build_encoder(embedding size)
    cos = MusicTask(MusicConfig(data="x", hidden_size=4, lr_schedule="cosine", max_epochs=7),
                    {"input_size": 88}).configure_optimizers()
    assert cos["lr_scheduler"].T_max == 7


def test_no_validation_data_is_said_not_silent(tmp_path):
    """val_fraction=0 with early stopping: a warning says that early stopping and the best checkpoint follow the
    training loss and how to choose otherwise; with --patience 0 and no plateau schedule nothing is said."""
    import warnings

    from grukit.train import fit
    with pytest.warns(UserWarning, match=r"no validation data \(val_fraction=0.0\): early stopping .* TRAINING "
                                         r"loss.*--patience 0"):
        fit("autoencoder", out=tmp_path / "a", max_epochs=1, val_fraction=0.0, patience=5, evaluate=False,
            **_ae(tmp_path))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit("autoencoder", out=tmp_path / "b", max_epochs=1, val_fraction=0.0, patience=0, lr_schedule="none",
            evaluate=False, **_ae(tmp_path))
    assert not [w for w in seen if "no validation data" in str(w.message)]


def test_progress_bar_epoch_restart_does_not_wait_for_its_refresh_thread(tmp_path, monkeypatch):
    """Lightning's rich bar (one line kept per epoch) stopped at every epoch and joined a refresh thread that
    sleeps 0.1 s: ~70 ms of every epoch of a small model. grukit's bar ends the thread without waiting, and
    the thread still ends (no thread left behind)."""
    import threading
    import time as _time

    pytest.importorskip("rich")
    import grukit.callbacks as callbacks
    from grukit.train import fit
    bar = callbacks.rich_progress_bar(10)
    monkeypatch.setattr(callbacks, "rich_progress_bar", lambda rate: bar)          # the bar build_trainer adds
    stop, stops, threads = bar._stop_progress, [], []

    def timed():
        live = getattr(bar.progress, "live", None)
        threads.append(getattr(live, "_refresh_thread", None))
        t0 = _time.perf_counter()
        stop()
        stops.append(_time.perf_counter() - t0)

    bar._stop_progress = timed
    fit("forecast", data="airline", out=tmp_path / "r", max_epochs=4, patience=0, hidden_size=8, evaluate=False,
        progress=True)
    assert len(stops) >= 3 and max(stops) < 0.05, stops          # a join would wait for the 0.1 s sleep
    _time.sleep(0.3)
    assert not any(t is not None and t.is_alive() for t in threads)
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_RefreshThread"]


def test_threads_is_the_runs_torch_thread_count_and_the_callers_is_restored(tmp_path):
    """`threads` (every task; 1 by default) is torch's thread count while fit() trains and evaluates, 0 leaves
    the process's own; the caller's count comes back afterwards, also when training fails; negative refused."""
    import warnings

    import lightning.pytorch as pl

    from grukit.config import AutoencoderConfig
    from grukit.train import fit, torch_threads
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(torch.get_num_threads())

    assert AutoencoderConfig().threads == 1
    with pytest.raises(ConfigError, match="threads=-1"):
        AutoencoderConfig.from_dict({"threads": -1})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit("autoencoder", out=tmp_path / "a", max_epochs=1, patience=0, evaluate=False, callbacks=[Spy()],
                **_ae(tmp_path))
            assert set(seen) == {1} and torch.get_num_threads() == 3
            seen.clear()
            fit("autoencoder", out=tmp_path / "b", max_epochs=1, patience=0, evaluate=False, callbacks=[Spy()],
                threads=0, **_ae(tmp_path))
            assert set(seen) == {3}
            seen.clear()
            fit("autoencoder", out=tmp_path / "c", max_epochs=1, patience=0, evaluate=False, callbacks=[Spy()],
                threads=2, **_ae(tmp_path))
            assert set(seen) == {2} and torch.get_num_threads() == 3
        with pytest.raises(RuntimeError, match="boom"):
            with torch_threads(2):
                assert torch.get_num_threads() == 2
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
