"""series_stats: with per-series normalisation each series' mean and log standard deviation reach the
classifier head (the level and scale that normalisation removes); length_stat: its log length, read from the
lengths input. Hand computations, which statistics are kept, a planted set whose classes differ only in level
and scale, mixup mixing them alike, export, runs saved before unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.runs import Run
from grukit.tasks.classify import STATS_CLIP, _stats, length_scaling, prepare, raw_stats, stats_scaling
from grukit.train import fit
from tests.conftest import tiny_classifier

QUICK = dict(hidden_size=8, conv_channels=8, batch_size=8, progress=False, train_steps=150, ensemble=1,
             baselines=(), lr=1e-2)


def shapes(n, T, seed, level=None, scale=None):
    """Noisy sines of random phase; class k is shifted by ``level[k]`` and scaled by ``scale[k]``, so after
    per-series z-normalisation the classes look alike."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.arange(T)
    X = np.sin(2 * np.pi * t / 10 + rng.uniform(0, 2 * np.pi, (n, 1))) + 0.3 * rng.normal(size=(n, T))
    X = X * np.asarray(scale or (1, 1))[y, None] + np.asarray(level or (0, 0))[y, None]
    return X.astype(np.float32), y


def test_raw_stats_by_hand():
    a = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], np.float32)     # (3, 2): feature 1 constant
    got = raw_stats([a])
    want = [3.0, 10.0, np.log(np.std([1.0, 3.0, 5.0]) + 1e-8), np.log(1e-8)]
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_only_varying_statistics_are_kept():
    X, _ = shapes(30, 40, 0)
    z = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)          # a z-normalised archive
    assert stats_scaling(raw_stats([s[:, None] for s in z]))["stats_columns"] == []
    lv, _ = shapes(30, 40, 0, level=(0, 3))                               # levels differ, scales alike
    m = stats_scaling(raw_stats([s[:, None] for s in lv]))
    assert m["stats_columns"] == [0, 1]                                   # noise moves each std by > 1%
    st = raw_stats([s[:, None] for s in lv])
    np.testing.assert_allclose(m["stats_center"], st.mean(0))
    np.testing.assert_allclose(np.asarray(m["stats_scale"])[[0, 1]], st.std(0)[[0, 1]])
    same_scale = [np.full((40, 1), float(k), np.float32) + np.sin(np.arange(40))[:, None] for k in range(6)]
    m = stats_scaling(raw_stats(same_scale))                              # equal stds: only the mean kept
    assert m["stats_columns"] == [0]
    ragged = [np.random.default_rng(n).normal(size=(n, 2)) + n for n in (10, 20, 30)]   # (T, 2), lengths vary
    m = stats_scaling(raw_stats(ragged))
    assert m["stats_columns"] == [0, 1, 2, 3] and "length_stat" not in m      # the length is its own option
    m = length_scaling([10, 20, 30])
    np.testing.assert_allclose(m["length_stat"], [np.log([10, 20, 30]).mean(), np.log([10, 20, 30]).std()])
    assert "stats_columns" not in m and "length_stat" in m
    assert "length_stat" not in length_scaling([10, 10, 10])                  # one length: left out


def test_standardised_stats_are_clipped():
    meta = {"stats_center": [0.0, 0.0], "stats_scale": [1.0, 1.0], "stats_columns": [0, 1]}
    s = np.full((5, 1), 100.0, np.float32)
    s[0] = 101.0
    out = _stats([s], meta)
    assert out.dtype == np.float32 and out.shape == (1, 2)
    assert out[0, 0] == STATS_CLIP and abs(out[0, 1] - np.log(0.4)) < 1e-5   # std of (101, 100 x4) = 0.4
    assert _stats([s], {"stats_columns": []}) is None and _stats([s], {}) is None   # runs from before


def test_prepare_records_and_batches_the_stats(tmp_path):
    X, y = shapes(24, 30, 0, level=(0, 4))
    np.savez(tmp_path / "train.npz", X=X, y=y.astype(str))
    p = prepare(ClassifyConfig(data=str(tmp_path / "train.npz")))
    assert p.meta["stats_columns"] == [0, 1]
    batch = next(iter(p.train))
    assert batch["stats"].shape == (batch["x"].shape[0], 2) and batch["stats"].dtype == torch.float32
    off = prepare(ClassifyConfig(data=str(tmp_path / "train.npz"), series_stats=False))
    assert "stats_columns" not in off.meta and "stats" not in next(iter(off.train))
    feat = prepare(ClassifyConfig(data=str(tmp_path / "train.npz"), normalize="feature"))
    assert not feat.meta.get("stats_columns") and "length_stat" not in feat.meta   # amplitudes kept; one length
    assert "stats" not in next(iter(feat.train))
    ragged = X.copy()
    ragged[::3, 20:] = np.nan                                             # a third of the series 20 steps long
    np.savez(tmp_path / "ragged.npz", X=ragged, y=y.astype(str), lengths=np.where(np.arange(24) % 3, 30, 20))
    assert "length_stat" not in prepare(ClassifyConfig(data=str(tmp_path / "ragged.npz"))).meta   # off: default
    p = prepare(ClassifyConfig(data=str(tmp_path / "ragged.npz"), length_stat=True, series_stats=False))
    lens = np.log(np.where(np.arange(24) % 3, 30, 20))
    np.testing.assert_allclose(p.meta["length_stat"], [lens.mean(), lens.std()])
    assert not p.meta.get("stats_columns") and "stats" not in next(iter(p.train))


def test_head_reads_the_stats():
    plain = tiny_classifier()
    m = tiny_classifier(seed=0)
    m.meta = dict(m.meta, stats_columns=[0, 1])
    m.head = m.build_head()
    assert m.head.net[1].in_features == plain.head.net[1].in_features + 2
    x = torch.randn(3, 30, 2)
    a, _ = m({"x": x, "stats": torch.zeros(3, 2)})
    b, _ = m({"x": x, "stats": torch.tensor([[0.0, 0.0], [2.0, -1.0], [0.0, 0.0]])})
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]])                      # per-series: rows stay apart
    assert not torch.allclose(a[1], b[1])


def test_head_reads_the_length_from_the_lengths_input():
    """The length statistic comes from ``lengths`` (a stream's frames so far), standardised and clipped."""
    plain = tiny_classifier()
    m = tiny_classifier(seed=0)
    m.meta = dict(m.meta, length_stat=[np.log(20.0), 0.5])
    m.head = m.build_head()
    assert m.head.net[1].in_features == plain.head.net[1].in_features + 1
    seen = []
    m.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, -1].clone()))
    x = torch.randn(3, 30, 2)
    m({"x": x, "lengths": torch.tensor([30, 20, 1])})
    m({"x": x})                                                        # no padding: every series 30 steps
    want = [(np.log(30) - np.log(20)) / 0.5, 0.0, -STATS_CLIP]         # log(1) - log(20) = -3 / 0.5: clipped
    torch.testing.assert_close(seen[0], torch.tensor(want, dtype=torch.float32))
    torch.testing.assert_close(seen[1], torch.full((3,), want[0], dtype=torch.float32))


def test_mixup_mixes_stats_with_the_same_pairs():
    m = tiny_classifier(mixup=0.4)
    m.meta = dict(m.meta, stats_columns=[0])
    level = torch.tensor([1.0, 2.0, 3.0, 4.0])
    batch = {"x": level[:, None, None].expand(4, 30, 2).clone(), "stats": level[:, None].clone(),
             "y": torch.tensor([0, 1, 2, 0])}                                 # each series constant = its stat
    m.train()
    torch.manual_seed(2)
    inputs, y = m.batch_to_inputs(batch)
    torch.testing.assert_close(inputs["x"][:, 0, 0], inputs["stats"][:, 0])    # mixed with the same partner
    assert not torch.equal(inputs["stats"], batch["stats"])


@pytest.mark.slow
def test_classes_that_differ_only_in_level_and_scale(tmp_path):
    """After per-series normalisation the two classes look alike; only series_stats can tell them apart."""
    for part, seed, n in (("TRAIN", 0, 40), ("TEST", 1, 40)):
        X, y = shapes(n, 30, seed, level=(0, 2), scale=(1, 2))
        np.savez(tmp_path / f"s_{part}.npz", X=X, y=np.where(y == 1, "high", "low"))
    data, test = str(tmp_path / "s_TRAIN.npz"), str(tmp_path / "s_TEST.npz")
    on = fit("classify", data=data, test_data=test, out=tmp_path / "on", **QUICK)
    off = fit("classify", data=data, test_data=test, out=tmp_path / "off", series_stats=False, **QUICK)
    acc_on, acc_off = on.evaluate()["grukit"]["accuracy"], off.evaluate()["grukit"]["accuracy"]
    assert acc_on >= 0.95 and acc_off <= 0.75, (acc_on, acc_off)     # chance: 0.5
    meta = json.loads((on.path / "meta.json").read_text())
    assert meta["stats_columns"] == [0, 1]
    probs = Run(on.path).predict(test, tmp_path / "p.csv")                  # the one inference path
    import pandas as pd
    hits = pd.read_csv(probs[0])["predicted"] == np.where(np.arange(40) % 2, "high", "low")
    assert hits.mean() == acc_on                                         # predict reads the stats as evaluate


def test_export_carries_the_stats_input(tmp_path):
    """A run whose head reads the statistics exports with them as a graph input, verified in onnxruntime."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from grukit.export import export_run
    X, y = shapes(24, 30, 0, level=(0, 4))
    np.savez(tmp_path / "d.npz", X=X, y=y.astype(str))
    run = fit("classify", data=str(tmp_path / "d.npz"), out=tmp_path / "run", evaluate=False,
              **dict(QUICK, train_steps=20))
    res = export_run(Run(run.path))
    assert res.max_abs_diff < 1e-4
    assert [i.name for i in onnx.load(str(res.path)).graph.input] == ["x", "lengths", "stats"]
