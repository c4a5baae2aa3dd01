"""value_quantiles: the distribution of each normalised series' values (and of its first difference) joins the
classifier head's statistics. Hand computations, the scaling, the order beside series_stats, what prepare
records and batches, a planted set whose classes differ only in their value distribution, the one inference
path, bad settings."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.runs import Run
from grukit.tasks.classify import (STATS_CLIP, _stats, prepare, quantile_dropout, quantile_scaling, raw_quantiles,
                                   stats_width)
from grukit.train import fit
from tests.conftest import tiny_classifier

QUICK = dict(hidden_size=8, conv_channels=8, batch_size=8, progress=False, train_steps=150, ensemble=1,
             baselines=(), lr=1e-2)


def test_raw_quantiles_by_hand():
    a = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 0.0], [3.0, 10.0], [4.0, 10.0]])   # (T=5, F=2)
    got = raw_quantiles([a], 3)
    # feature 0: 0/50/100% of 0..4; feature 1: of (10, 10, 0, 10, 10); then the differences, scaled to unit RMS:
    # feature 0 (1, 1, 1, 1) -> 1; feature 1 (0, -10, 10, 0), RMS sqrt(50)
    r = np.sqrt(50.0)
    want = [0, 2, 4, 0, 10, 10, 1, 1, 1, -10 / r, 0, 10 / r]
    np.testing.assert_allclose(got, [want])
    one = raw_quantiles([np.array([[3.0]])], 2)                      # one step: no difference, zeros
    np.testing.assert_allclose(one, [[3, 3, 0, 0]])
    assert raw_quantiles([np.zeros((4, 1)), np.ones((9, 1))], 5).shape == (2, 10)   # any lengths


def test_quantile_scaling_and_order_beside_series_stats():
    q = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 7.0]])
    m = quantile_scaling(q, 3)
    assert m["quantiles"] == 3 and m["quantile_center"] == [1.0, 1.0, 6.0]
    assert m["quantile_scale"] == [1.0, 1.0, 1.0]                     # a constant column keeps scale 1
    s = np.array([[0.0], [0.0], [30.0]], np.float32)                  # normalised: (-0.71, -0.71, 1.41)
    meta = {"stats_center": [0.0, 0.0], "stats_scale": [1.0, 1.0], "stats_columns": [0],
            "normalize": "series", "quantiles": 2, "quantile_center": [0.0] * 4, "quantile_scale": [0.1] * 4}
    out = _stats([s], meta)
    assert stats_width(meta) == 5 and out.shape == (1, 5) and out.dtype == np.float32
    assert out[0, 0] == STATS_CLIP                                    # the series' mean 10, clipped
    np.testing.assert_allclose(out[0, 1:3], np.clip(np.array([-1, 2]) / np.sqrt(2) / 0.1, -5, 5), rtol=1e-5)
    del meta["stats_columns"]
    assert _stats([s], meta).shape == (1, 4) and stats_width(meta) == 4   # quantiles alone


def test_prepare_records_and_batches_the_quantiles(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 30))
    X = ((X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)).astype(np.float32)   # as the archive's
    np.savez(tmp_path / "train.npz", X=X, y=(np.arange(24) % 2).astype(str))
    p = prepare(ClassifyConfig(data=str(tmp_path / "train.npz"), value_quantiles=5))
    assert p.meta["quantiles"] == 5 and len(p.meta["quantile_center"]) == 10
    batch = next(iter(p.train))
    assert batch["stats"].shape == (batch["x"].shape[0], 10)          # z-normalised: no series stats kept
    off = prepare(ClassifyConfig(data=str(tmp_path / "train.npz")))
    assert "quantiles" not in off.meta and "stats" not in next(iter(off.train))   # off by default


@pytest.mark.parametrize("field,value", [("value_quantiles", -1), ("value_quantiles", 1),
                                         ("quantile_dropout", 1.0), ("quantile_dropout", -0.1)])
def test_bad_quantile_settings(field, value):
    with pytest.raises(ConfigError, match=field):
        ClassifyConfig(data="gunpoint", **{field: value}).validate()


def test_quantile_dropout_withholds_whole_rows_of_the_quantiles_only():
    stats = torch.arange(1.0, 1001.0).reshape(200, 5)                 # 2 series stats, then 3 quantiles
    torch.manual_seed(0)
    out = quantile_dropout(stats, 3, 0.5)
    torch.testing.assert_close(out[:, :2], stats[:, :2])              # series_stats untouched
    dropped = (out[:, 2:] == 0).all(1)
    kept = ~dropped
    torch.testing.assert_close(out[kept, 2:], 2 * stats[kept, 2:])    # the rest scaled by 1 / (1 - p)
    assert 70 < int(dropped.sum()) < 130                              # about half of 200
    torch.manual_seed(0)
    torch.testing.assert_close(quantile_dropout(stats, 3, 0.5), out)  # seeded: the same rows


def test_model_drops_quantiles_in_training_only():
    m = tiny_classifier(quantile_dropout=0.5)
    m.meta = dict(m.meta, quantiles=2, quantile_center=[0.0] * 4, quantile_scale=[1.0] * 4)
    batch = {"x": torch.randn(64, 30, 2), "stats": torch.ones(64, 4), "y": torch.zeros(64, dtype=torch.long)}
    m.train()
    inputs, _ = m.batch_to_inputs(batch)
    assert set(inputs["stats"][:, 0].tolist()) == {0.0, 2.0}
    m.eval()
    inputs, _ = m.batch_to_inputs(batch)
    assert torch.equal(inputs["stats"], batch["stats"])


def duty(n, T, seed):
    """Square waves of random phase and period; class 1 is 'on' 1/4 of the time, class 0 half of it: after
    per-series normalisation only how long each series spends at each level tells them apart."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(T)
    period = rng.integers(8, 20, (n, 1))
    phase = (t[None] + rng.integers(0, 20, (n, 1))) % period
    X = (phase < period * np.where(y == 1, 0.25, 0.5)[:, None]).astype(np.float32)
    return X + 0.05 * rng.normal(size=(n, T)).astype(np.float32), y


@pytest.mark.slow
def test_classes_that_differ_in_their_value_distribution(tmp_path):
    """Trained end to end with the quantiles (a GRU learns this set without them too: this checks the path,
    fit -> meta.json -> evaluate and predict reading the same statistics, not that only they can solve it)."""
    for part, seed in (("TRAIN", 0), ("TEST", 1)):
        X, y = duty(40, 60, seed)
        np.savez(tmp_path / f"d_{part}.npz", X=X, y=np.where(y == 1, "quarter", "half"))
    data, test = str(tmp_path / "d_TRAIN.npz"), str(tmp_path / "d_TEST.npz")
    run = fit("classify", data=data, test_data=test, out=tmp_path / "q", value_quantiles=11,
              **dict(QUICK, conv_channels=0))
    acc = run.evaluate()["grukit"]["accuracy"]
    assert acc >= 0.95, acc                                           # chance: 0.5
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["quantiles"] == 11
    import pandas as pd
    probs = Run(run.path).predict(test, tmp_path / "p.csv")             # the one inference path
    hits = pd.read_csv(probs[0])["predicted"] == np.where(np.arange(40) % 2, "quarter", "half")
    assert hits.mean() == acc


def test_export_and_streaming_with_quantiles(tmp_path):
    """The quantiles reach an exported graph through its stats input (verified in onnxruntime); a model that
    reads them needs the whole series, so it is not served frame by frame."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from grukit.export import export_run
    X, y = duty(24, 30, 0)
    np.savez(tmp_path / "d.npz", X=X, y=y.astype(str))
    run = fit("classify", data=str(tmp_path / "d.npz"), out=tmp_path / "run", evaluate=False, value_quantiles=3,
              **dict(QUICK, train_steps=20, conv_channels=0, gru_steps=0, conv_steps=0, normalize="feature"))
    res = export_run(Run(run.path))
    assert res.max_abs_diff < 1e-4
    assert [i.name for i in onnx.load(str(res.path)).graph.input] == ["x", "lengths", "stats"]
    assert not run.models()[0].streamable                             # a plain GRU otherwise would be
    plain = fit("classify", data=str(tmp_path / "d.npz"), out=tmp_path / "plain", evaluate=False,
                **dict(QUICK, train_steps=5, conv_channels=0, gru_steps=0, conv_steps=0, normalize="feature"))
    assert plain.models()[0].streamable
