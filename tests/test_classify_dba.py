"""Weighted DBA synthetic series (dba_augment): the Average Selected weights by hand, the barycentre of a class
against a hand case, labels, determinism with a seed, the classes left alone, and the training schedule.
Univariate series only, so aeon's numba kernels compile for one signature."""
from __future__ import annotations

import numpy as np
import pytest

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError

pytest.importorskip("aeon")
from grukit.tasks.classify_dba import average_selected_weights, dba_series  # noqa: E402


def test_average_selected_weights_by_hand():
    pos = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0])          # 8 series on a line: |i - j| distances
    dist = np.abs(pos[:, None] - pos[None, :])
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = average_selected_weights(dist, 0, rng)
        assert w[0] == 0.5 and w.sum() == pytest.approx(1.0)
        chosen = np.flatnonzero(np.isclose(w, 0.15))
        assert len(chosen) == 2 and set(chosen) <= {1, 2, 3, 4, 5}      # 2 of the 5 nearest
        rest = np.setdiff1d(np.arange(1, 8), chosen)
        np.testing.assert_allclose(w[rest], 0.2 / 5)                    # the other 5 share 0.2
    two = average_selected_weights(np.array([[0.0, 3.0], [3.0, 0.0]]), 1, rng)
    np.testing.assert_allclose(two, [0.3 / 0.8, 0.5 / 0.8])             # no rest: renormalised


@pytest.mark.slow                       # aeon's numba kernels compile on first use (about 40 s, cached after)
def test_dba_of_two_identical_shapes_is_that_shape_and_labels_follow():
    """Two series of a class that are the same shape give it back; labels and shapes follow the input."""
    t = np.linspace(0, 2 * np.pi, 40, dtype=np.float32)
    a = np.sin(t)[:, None]                                              # (40, 1)
    b = (np.sign(np.sin(3 * t)) + t / 6)[:, None].astype(np.float32)
    seqs, y = [a, a.copy(), b, b + 0.0, a[:30]], np.array(["x", "x", "y", "y", "z"])
    out, labels = dba_series(seqs, y, per_series=1, seed=0)
    assert list(labels) == ["x", "x", "y", "y"]                        # "z" has one series: left alone
    for s, c in zip(out, labels):
        assert s.shape == (40, 1) and s.dtype == np.float32
        np.testing.assert_allclose(s, a if c == "x" else b, atol=1e-5)


@pytest.mark.slow
def test_dba_blends_a_class_and_follows_the_seed():
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(25, 1)).astype(np.float32) for _ in range(6)]
    y = np.array([0, 0, 0, 1, 1, 1])
    out, labels = dba_series(seqs, y, per_series=2, seed=3)
    again, _ = dba_series(seqs, y, per_series=2, seed=3)
    assert len(out) == 12 and list(labels) == [0] * 6 + [1] * 6        # each series the anchor, twice
    for u, v in zip(out, again):
        np.testing.assert_array_equal(u, v)                             # same seed, same series
    for k, s in enumerate(out[:3]):                                     # a blend: not any real series
        assert min(np.abs(s - r).max() for r in seqs) > 1e-3
        assert np.corrcoef(s[:, 0], seqs[k][:, 0])[0, 1] > 0.5          # closest to its anchor (weight 0.5)
    with pytest.raises(ConfigError, match="dba_augment=-1"):
        ClassifyConfig.from_dict({"dba_augment": -1})
    assert ClassifyConfig().dba_augment == 0


@pytest.mark.slow
def test_prepare_adds_synthetic_series_without_more_steps(tmp_path):
    from grukit.tasks.classify import prepare
    rng = np.random.default_rng(0)
    n, T = 24, 40
    y = np.arange(n) % 3
    X = rng.normal(size=(n, T)).astype(np.float32)
    np.savez(tmp_path / "train.npz", X=X, y=y.astype(str))
    plain = prepare(ClassifyConfig(data=str(tmp_path / "train.npz")))
    cfg = ClassifyConfig(data=str(tmp_path / "train.npz"), dba_augment=1)
    aug = prepare(cfg)
    assert aug.meta["synthetic"] == n and "synthetic" not in plain.meta
    n_plain, n_aug = len(plain.train.dataset), len(aug.train.dataset)
    s0, s1 = plain.meta["schedule"], aug.meta["schedule"]
    assert n_aug // s1["repeat"] == 2 * n and n_plain // s0["repeat"] == n   # the real series and as many more
    steps = lambda s: s["batches_per_epoch"] * cfg.max_epochs                # noqa: E731
    assert s1["max_epochs"] < s0["max_epochs"] and abs(steps(s1) - 1000) <= s1["batches_per_epoch"]
    synth = [aug.train.dataset[i] for i in range(n, 2 * n)]              # after the real ones, first tile
    assert sorted(int(r["y"]) for r in synth) == sorted(y.tolist())    # each series the anchor once
    for r in synth:                                                    # z-normalised as real series are
        assert r["x"].shape == (T, 1) and abs(r["x"].mean()) < 1e-4 and abs(r["x"].std() - 1) < 1e-3
