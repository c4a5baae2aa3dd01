"""``validate_start``: the untrained model is scored on the validation data before the first epoch and kept
unless an epoch validates better (grukit.callbacks.StartScore)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from grukit.runs import load_checkpoint
from grukit.train import fit

# the forecaster whose untrained model is the naive forecast (head_init=baseline: the GRU's part starts at zero;
# no statistical combination, so the forecast is the network's own)
NAIVE_START = dict(data="nile", head_init="baseline", skip_init="naive", hidden_size=8, progress=False,
                   baselines=("naive",), combine=("off",))


def _mase(run) -> dict:
    m = json.loads((run.path / "metrics.json").read_text())
    return {k: v["MASE"] for k, v in m.items()}


def test_a_training_that_only_worsens_validation_keeps_the_untrained_forecast(tmp_path):
    # lr=5 wrecks the model at the first step: every epoch validates worse than the untrained model
    with pytest.warns(UserWarning, match="no epoch validated better than the untrained model; the run keeps it"):
        kept = _mase(fit("forecast", out=tmp_path / "kept", lr=5.0, max_epochs=3, validate_start=True,
                         **NAIVE_START))
    assert kept["grukit"] == pytest.approx(kept["naive"], rel=1e-4)       # the untrained model: naive's forecast
    wrecked = _mase(fit("forecast", out=tmp_path / "off", lr=5.0, max_epochs=3, **NAIVE_START))
    assert wrecked["grukit"] != pytest.approx(wrecked["naive"], rel=1e-2)   # without it the best epoch is kept
    ckpt = load_checkpoint(tmp_path / "kept" / "checkpoints" / "best.ckpt", "forecast")
    assert ckpt["global_step"] == 0 and ckpt["epoch"] == 0


def test_a_training_that_validates_better_is_kept_and_not_perturbed(tmp_path):
    on = fit("forecast", out=tmp_path / "on", max_epochs=6, validate_start=True, **NAIVE_START)
    off = fit("forecast", out=tmp_path / "off", max_epochs=6, **NAIVE_START)
    assert _mase(on) == _mase(off)              # the start's scoring draws no random numbers and moves nothing
    val = pd.read_csv(on.path / "metrics.csv")["val_loss"].dropna()
    ckpt = load_checkpoint(on.path / "checkpoints" / "best.ckpt", "forecast")
    assert ckpt["global_step"] > 0                                          # an epoch beat the start here
    assert len(val) == 6                                                    # no extra row in the log


def test_a_resumed_run_keeps_the_starts_score(tmp_path):
    kw = dict(lr=5.0, validate_start=True, checkpoint_every=0, evaluate=False, **NAIVE_START)
    fit("forecast", out=tmp_path / "run", max_epochs=2, **kw)
    run = fit("forecast", out=tmp_path / "run", resume=True, max_epochs=4, **{**kw, "evaluate": True})
    m = _mase(run)
    assert m["grukit"] == pytest.approx(m["naive"], rel=1e-4)
    assert pd.read_csv(run.path / "metrics.csv")["epoch"].dropna().max() == 3
