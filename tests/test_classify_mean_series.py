"""mean_series: series that are nearly the same curve (spectra: OliveOil, Wine, Meat) are read as their departure
from the training series' mean. When auto turns it on, the mean it stores, the series the model reads at training
and at prediction time (the one inference path), the errors for series of another length, and a planted set that
the defaults only fit with it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.data.sequences import normalise_series
from grukit.errors import ConfigError, DataError, ShapeError
from grukit.runs import open_run
from grukit.tasks.base import infer
from grukit.tasks.classify import (MEAN_SERIES_RATIO, _normalise, _stats, centred, classify_sequences,
                                   mean_series_plan)
from grukit.train import fit
from tests.conftest import padded

QUICK = dict(hidden_size=8, conv_channels=8, batch_size=8, progress=False, train_steps=200, ensemble=1,
             baselines=(), lr=1e-2)


def spectra(n: int, seed: int, bump: float = 0.01, T: int = 60):
    """(X (n, T), y): one smooth curve shared by every series (an absorbance spectrum) plus noise of 0.002; class
    1 adds a bump of ``bump`` (1% of the curve's size by default) around step 40."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, T)
    base = np.exp(-((t - 0.3) / 0.15) ** 2) + 0.6 * np.exp(-((t - 0.7) / 0.1) ** 2)
    y = np.arange(n) % 2
    X = base + bump * y[:, None] * np.exp(-((np.arange(T) - 40) / 3.0) ** 2) + 0.002 * rng.normal(size=(n, T))
    return X.astype(np.float32), y


def as_seqs(X):
    return [s[:, None] for s in X]


def test_auto_centres_only_near_identical_series_of_one_length():
    X, _ = spectra(20, 0)
    plan = mean_series_plan(ClassifyConfig(), as_seqs(X))
    z = np.stack([normalise_series(s[:, None]) for s in X])
    np.testing.assert_allclose(plan["mean_series"], z.mean(0), rtol=1e-5, atol=1e-6)
    assert plan["mean_series_ratio"] < MEAN_SERIES_RATIO
    rng = np.random.default_rng(0)
    shapes = as_seqs(rng.normal(size=(20, 60)).astype(np.float32))        # unlike series: left alone
    assert mean_series_plan(ClassifyConfig(), shapes) == {}
    assert "mean_series" in mean_series_plan(ClassifyConfig(mean_series="on"), shapes)    # asked for: done
    assert mean_series_plan(ClassifyConfig(mean_series="off"), as_seqs(X)) == {}
    ragged = [s[: 50 + i % 3] for i, s in enumerate(as_seqs(X))]
    assert mean_series_plan(ClassifyConfig(), ragged) == {}               # lengths differ: auto leaves them
    with pytest.raises(DataError, match="mean_series=on needs training series of one length; they have 50 to 52"):
        mean_series_plan(ClassifyConfig(mean_series="on"), ragged)
    two = [np.concatenate([s, s], axis=1) for s in as_seqs(X)]            # several features: auto leaves them
    assert mean_series_plan(ClassifyConfig(), two) == {}
    with pytest.raises(ConfigError, match="mean_series='yes': expected one of auto, on, off"):
        ClassifyConfig(mean_series="yes").validate()


def test_centred_series_and_the_length_check():
    X, _ = spectra(10, 1)
    plan = mean_series_plan(ClassifyConfig(), as_seqs(X))
    out = centred(as_seqs(X), plan)
    mean = np.asarray(plan["mean_series"], np.float32)
    np.testing.assert_allclose(out[3], normalise_series(X[3][:, None]) - mean, atol=1e-6)
    same = as_seqs(X)
    assert centred(same, {}) is same                                       # no plan: unchanged
    with pytest.raises(ShapeError, match="sequence 1 has 59 steps; .* every series needs 60 steps"):
        centred([X[0][:, None], X[1][:59, None]], plan)


def test_a_planted_set_is_fitted_only_when_centred(tmp_path):
    """Classes differ by a bump of 0.5% of a shared curve: read raw, the small model stays at chance on the test
    series; read as departures from the mean it separates them (0.95 on this machine type), and predictions
    through classify_sequences are the model's on the centred series."""
    X, y = spectra(40, 2, bump=0.005)
    Xt, yt = spectra(40, 3, bump=0.005)
    np.savez(tmp_path / "train.npz", X=X[:, :, None], y=y.astype(str), lengths=np.full(40, 60))
    np.savez(tmp_path / "test.npz", X=Xt[:, :, None], y=yt.astype(str), lengths=np.full(40, 60))
    accs = {}
    for mode in ("auto", "off"):
        run = fit("classify", data=str(tmp_path / "train.npz"), test_data=str(tmp_path / "test.npz"),
                  out=str(tmp_path / mode), mean_series=mode, seed=0, **QUICK)
        meta = json.loads((tmp_path / mode / "meta.json").read_text())
        assert ("mean_series" in meta) == (mode == "auto")
        r = open_run(tmp_path / mode)
        p = classify_sequences(r.models(), r.meta, [s[:, None] for s in Xt])
        accs[mode] = float((p.argmax(1) == yt).mean())
        if mode == "auto":                                    # the inference path centres as training did
            dep = centred([s[:, None] for s in Xt], r.meta)
            seqs = _normalise(dep, r.meta)
            x, lengths = padded(seqs)
            stats = torch.from_numpy(_stats(dep, r.meta, norm=seqs))           # of the departures
            direct = torch.cat(infer(r.models()[0], [{"x": x, "lengths": lengths, "stats": stats}])).numpy()
            np.testing.assert_allclose(p, direct, atol=1e-5)
            with pytest.raises(ShapeError, match="every series needs 60 steps"):
                classify_sequences(r.models(), r.meta, [Xt[0][:50, None]])
    assert accs["auto"] >= 0.85 and accs["off"] <= 0.65, accs
