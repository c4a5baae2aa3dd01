"""The classifier's parts: time pooling, patch front end, FCN branch (masks), augmentations, the class-keeping
split, the auto schedule, the baselines' wiring and the one inference entry point."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.data.augment import augment, jitter, scaling, window_slice, window_warp
from grukit.data.sequences import normalise_series, stratified_split
from grukit.errors import ConfigError, ShapeError
from grukit.tasks import classify_baselines as cb
from grukit.tasks.base import infer
from grukit.tasks.classify import ClassifyTask, classify_sequences, resolve_schedule
from grukit.tasks.conv import FCNBranch, PatchEmbed, fold_time, pool_time, strides
from tests.conftest import assert_padding_ignored, padded


def test_strides():
    assert strides(150, 256, 64) == (1, 3)          # no pooling; patches of 3 -> 50 GRU steps
    assert strides(2000, 256, 64) == (8, 4)         # 2000 -> 250 steps -> 63 GRU steps
    assert strides(24, 256, 64) == (1, 1)
    assert strides(5000, 0, 0) == (1, 1)            # 0 = no shortening


def test_pool_time_is_a_masked_window_mean():
    x = torch.tensor([[1., 2, 3, 4, 5], [10, 20, 30, 99, 99]]).unsqueeze(-1)     # (2, 5, 1), row 1 has 3 steps
    out, lengths = pool_time(x, torch.tensor([5, 3]), 2)
    assert lengths.tolist() == [3, 2]
    assert out[0, :, 0].tolist() == [1.5, 3.5, 5.0]             # last window holds one valid step
    assert out[1, :2, 0].tolist() == [15.0, 30.0]                # padding (99) never enters a mean
    same, L = pool_time(x, None, 1)
    assert same is x and L is None


def test_patch_embed_shapes_and_padding():
    torch.manual_seed(0)
    pe = PatchEmbed(2, 5, 3).eval()
    a, b = np.random.default_rng(0).normal(size=(7, 2)), np.random.default_rng(1).normal(size=(4, 2))
    x, lengths = padded([a, b])
    z, zl = pe(x, lengths)
    assert z.shape == (2, 3, 5) and zl.tolist() == [3, 2]        # ceil(7/3), ceil(4/3)
    alone, _ = pe(torch.as_tensor(b, dtype=torch.float32)[None], torch.tensor([4]))
    torch.testing.assert_close(z[1, :2], alone[0])


@pytest.mark.parametrize("dilation", [1, 2])
def test_fcn_branch_ignores_padding(dilation):
    torch.manual_seed(0)
    fcn = FCNBranch(3, 4, dilation)
    assert [c.dilation[0] for c in fcn.convs] == [1, dilation, dilation ** 2]
    assert ClassifyConfig().conv_dilation == 1                   # the default: the FCN as published
    assert fcn(torch.randn(2, 20, 3), None).shape == (2, 4)    # "same" padding keeps every step
    fcn(torch.randn(8, 20, 3), None)                             # a training step so BatchNorm stats move
    fcn.eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (20, 9, 13)]
    assert assert_padding_ignored(fcn, seqs).shape == (3, 4)
    if dilation == 2:                                            # a dilated kernel reads every other step
        conv = fcn.convs[1]
        h = torch.randn(1, conv.in_channels, 12)
        span = 2 * (conv.kernel_size[0] - 1)
        manual = torch.stack([(conv.weight * h[0, :, t:t + span + 1:2]).sum((1, 2)) + conv.bias
                              for t in range(12 - span)], -1)
        torch.testing.assert_close(conv(h)[0], manual, atol=1e-5, rtol=1e-5)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ClassifyConfig(hidden_size=6, conv_channels=4, **kw)
    s, r = strides(30, cfg.conv_steps, cfg.gru_steps)
    return ClassifyTask(cfg, {"input_size": 2, "classes": ["a", "b", "c"], "pool_stride": s, "patch_stride": r,
                              "normalize": "series"}).eval()


def _each_alone_as_in_the_batch(m, seqs, x, lengths):
    """The padded batch's logits are each sequence's logits alone (padding is never read)."""
    with torch.no_grad():
        logits, _ = m({"x": x, "lengths": lengths})
        assert logits.shape == (len(seqs), 3)
        for i, s in enumerate(seqs):
            alone, _ = m({"x": torch.as_tensor(s)[None], "lengths": torch.tensor([len(s)])})
            torch.testing.assert_close(logits[i], alone[0], atol=1e-5, rtol=1e-5)


def test_whole_model_variable_lengths_and_long_series():
    m = _model(conv_steps=8, gru_steps=4)                        # 30 steps -> pooled by 4, patches of 2
    assert (m.pool_stride, m.patch.r) == (4, 2)
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (30, 11, 5)]
    x, lengths = padded(seqs)
    _each_alone_as_in_the_batch(m, seqs, x, lengths)


def _stem_model(**kw):
    torch.manual_seed(0)
    cfg = ClassifyConfig(hidden_size=6, conv_channels=4, conv_steps=8, gru_steps=4, **kw)
    return ClassifyTask(cfg, {"input_size": 2, "classes": ["a", "b", "c"], "pool_stride": 4, "patch_stride": 2,
                              "normalize": "series", "downsample": cfg.downsample}).eval()


def test_fold_time_stacks_window_steps_as_features():
    x = torch.arange(1.0, 11.0).reshape(1, 5, 2)                 # steps (1,2) (3,4) (5,6) (7,8) (9,10)
    out, lengths = fold_time(x, torch.tensor([5]), 2)
    assert out.shape == (1, 3, 4) and lengths.tolist() == [3]
    assert out[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]   # the last window is zero-padded
    y = x.clone()
    y[0, 3:] = 99.0                                              # padding beyond length 3 is zeroed, never read
    assert fold_time(y, torch.tensor([3]), 2)[0][0, 1].tolist() == [5, 6, 0, 0]
    same, L = fold_time(x, None, 1)
    assert same is x and L is None


@pytest.mark.parametrize("downsample", ["fold", "conv", "mixed"])
def test_shortening_keeps_detail_that_averaging_removes(downsample):
    m = _stem_model(downsample=downsample)
    if downsample == "fold":
        assert m.fold and m.stem is None and m.fcn.convs[0].in_channels == 4 * 2   # s * F features
    elif downsample == "mixed":                                  # the default: FCN on means, GRU on folds
        assert ClassifyConfig().downsample == "mixed"
        assert m.fold and m.mixed and m.stem is None
        assert m.fcn.convs[0].in_channels == 2 and m.patch.proj.in_channels == 4 * 2
    else:
        assert m.stem is not None and m.stem.r == 4 and m.fcn.convs[0].in_channels == 4
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (30, 11, 5)]
    x, lengths = padded(seqs)
    x[2, 5:] = 1e3                                               # garbage padding must not matter
    _each_alone_as_in_the_batch(m, seqs, x, lengths)
    flat = torch.zeros(1, 32, 2)
    alt = flat + torch.tensor([1.0, -1.0]).repeat(16)[None, :, None]   # +1 -1 +1 ... : every window averages to 0
    torch.testing.assert_close(pool_time(alt, None, 4)[0], pool_time(flat, None, 4)[0])
    with torch.no_grad():
        assert not torch.allclose(m({"x": alt})[0], m({"x": flat})[0])
    old = _model(conv_steps=8, gru_steps=4)                      # a run saved before: no "downsample" in meta
    assert old.stem is None and not old.fold and old.pool_stride == 4    # -> window means, its weights still load
    mean = _stem_model(downsample="mean")
    assert mean.stem is None and not mean.fold
    with torch.no_grad():
        torch.testing.assert_close(mean({"x": alt})[0], mean({"x": flat})[0])   # averaging cannot tell them apart


def test_augmentations_shapes_determinism_and_padding():
    x = torch.randn(4, 40, 2)
    lengths = torch.tensor([40, 31, 17, 3])
    x = x * (torch.arange(40)[None, :] < lengths[:, None]).unsqueeze(-1)
    for fn in (jitter, scaling, window_slice, window_warp):
        a = fn(x, lengths, torch.Generator().manual_seed(3))
        b = fn(x, lengths, torch.Generator().manual_seed(3))
        c = fn(x, lengths, torch.Generator().manual_seed(4))
        assert a.shape == x.shape and torch.equal(a, b), fn.__name__
        assert not torch.equal(a, c), fn.__name__
        for i, n in enumerate(lengths.tolist()):
            assert a[i, n:].abs().sum() == 0, fn.__name__        # padding stays zero
    s = scaling(x, lengths, torch.Generator().manual_seed(0))
    ratio = s[0] / x[0]                                          # (T, F): one factor per series and feature
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    ramp = torch.arange(10.0).reshape(1, 10, 1)
    sl = window_slice(ramp, None, torch.Generator().manual_seed(0), ratio=0.5)
    assert sl[0, 0, 0] >= 0 and sl[0, -1, 0] <= 9 and (sl[0, -1, 0] - sl[0, 0, 0]) == pytest.approx(4.0)
    torch.manual_seed(5)
    g1 = augment(x, lengths, ("jitter", "window_warp"))
    torch.manual_seed(5)
    assert torch.equal(g1, augment(x, lengths, ("jitter", "window_warp")))


def test_training_applies_augmentation_only_when_training():
    m = _model(augment=("jitter",))
    batch = {"x": torch.zeros(2, 6, 2), "lengths": torch.tensor([6, 4]), "y": torch.tensor([0, 1])}
    inputs, _ = m.batch_to_inputs(batch)
    assert torch.equal(inputs["x"], batch["x"])                  # eval mode: untouched
    m.train()
    inputs, _ = m.batch_to_inputs(batch)
    assert not torch.equal(inputs["x"], batch["x"]) and inputs["x"][1, 4:].abs().sum() == 0


def test_loss_smooths_labels_by_default():
    assert ClassifyConfig().label_smoothing == 0.1
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 2])
    logp = torch.log_softmax(logits, -1)
    # target 0.9 + 0.1/3 on the label, 0.1/3 on each other class (Szegedy et al. 2016), averaged over the batch
    target = torch.full((2, 3), 0.1 / 3)
    target[0, 0] += 0.9
    target[1, 2] += 0.9
    expected = -(target * logp).sum(1).mean()
    torch.testing.assert_close(_model().loss(logits, y, {}), expected)
    torch.testing.assert_close(_model(label_smoothing=0.0).loss(logits, y, {}), -logp[[0, 1], [0, 2]].mean())


def test_stratified_split_keeps_every_class():
    y = np.array([0] * 10 + [1] * 3 + [2] * 2 + [3])
    train, val = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    assert set(y[train]) == {0, 1, 2, 3}                         # every class trains
    assert set(y[val]) == {0, 1, 2}                              # every class with 2+ series validates
    assert np.bincount(y[val]).tolist() == [2, 1, 1]
    t2, v2 = stratified_split(y, 0.2, seed=0)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    t0, v0 = stratified_split(y, 0.0)
    assert len(v0) == 0 and len(t0) == len(y)


def test_auto_schedule_from_training_set_size():
    small = ClassifyConfig()
    info = resolve_schedule(small, 50)
    assert small.val_fraction == 0 and small.patience == 0 and small.ensemble == 5
    repeat = 40 // math.ceil(50 / 16)                            # 4 batches of the 50 series -> repeated 10 times
    assert info["repeat"] == repeat == 10
    assert small.max_epochs == math.ceil(small.train_steps / math.ceil(50 * repeat / small.batch_size))
    assert "no validation split" in info["rule"]
    big = ClassifyConfig()
    resolve_schedule(big, 800)
    assert big.val_fraction == 0.2 and big.patience == 30 and big.ensemble == 3
    middle = ClassifyConfig()                                    # 300-499: no validation split, 3 members
    resolve_schedule(middle, 300)
    assert middle.val_fraction == 0 and middle.ensemble == 3
    below = ClassifyConfig()
    resolve_schedule(below, 299)
    assert below.ensemble == 5
    chosen = ClassifyConfig(ensemble=2)                          # a user's count is kept
    resolve_schedule(chosen, 800)
    assert chosen.ensemble == 2
    n_fit = 800 - 160                                            # 40 batches: no repetition
    assert big.max_epochs == math.ceil(big.train_steps / math.ceil(n_fit / big.batch_size))
    many = ClassifyConfig()                                      # 37 classes of about 10 series (Adiac)
    info = resolve_schedule(many, 390, classes=37)               # 25 batches an epoch
    assert many.max_epochs == math.ceil(math.ceil(100 * 390 / 16) / 25) == 98 and info["steps"] == 98 * 25
    assert "37 classes: 2438 steps" in info["rule"]                # meta.json says why it trains longer
    cricket = ClassifyConfig()                                   # 12 classes of 32: the class draws decide
    resolve_schedule(cricket, 390, classes=12)
    assert cricket.max_epochs == math.ceil(math.ceil(2000 * 12 / 16) / 25) == 60
    acsf = ClassifyConfig()                                      # 100 series: 1,000 steps are 160 passes
    resolve_schedule(acsf, 100, classes=10)
    assert acsf.max_epochs == math.ceil(1000 / math.ceil(100 * 5 / 16)) == 32     # repeated 5 times an epoch
    few = ClassifyConfig()                                       # 6 classes of 400 series: train_steps
    assert "classes" not in resolve_schedule(few, 400, classes=6)["rule"]
    assert few.max_epochs == math.ceil(1000 / 25) == 40
    off = ClassifyConfig(train_class_samples=0)
    resolve_schedule(off, 390, classes=37)
    assert off.max_epochs == 40
    with pytest.raises(ConfigError, match="train_passes=-1: expected an integer >= 0"):
        ClassifyConfig(train_passes=-1).validate()
    with pytest.raises(ConfigError, match="train_class_samples=-5: expected an integer >= 0"):
        ClassifyConfig(train_class_samples=-5).validate()
    manual = ClassifyConfig(schedule="manual", max_epochs=7, val_fraction=0.1)
    resolve_schedule(manual, 50)
    assert (manual.max_epochs, manual.val_fraction, manual.ensemble) == (7, 0.1, 1)
    validated = ClassifyConfig(schedule="validated")             # what grukit tune trains: always scored
    info = resolve_schedule(validated, 50)
    assert validated.val_fraction == 0.2 and validated.patience == 30 and validated.ensemble == 1
    assert "validation split" in info["rule"] and "no validation" not in info["rule"]


def test_tune_trials_of_a_small_set_are_validated():
    from grukit.tune_space import task_space
    space = task_space(ClassifyConfig)
    assert space["schedule"].kind == "fixed" and space["schedule"].value == "validated"


def test_config_accepts_old_boolean_normalize():
    assert ClassifyConfig.from_dict({"normalize": True}).normalize == "feature"
    assert ClassifyConfig.from_dict({"normalize": "false"}).normalize == "none"
    from grukit.errors import ConfigError
    with pytest.raises(ConfigError, match="augment='jiter'.*did you mean 'jitter'"):
        ClassifyConfig.from_dict({"augment": "jiter"})
    with pytest.raises(ConfigError, match="conv_dilation=0: expected an integer >= 1"):
        ClassifyConfig.from_dict({"conv_dilation": 0})


def _toy(n, rng, length=30):
    """Class 0: a bump early, class 1: a bump late (plus noise); lengths vary."""
    seqs, y = [], []
    for i in range(n):
        k = i % 2
        T = length + int(rng.integers(-3, 4))
        s = rng.normal(0, 0.1, size=(T, 1))
        c = T // 4 if k == 0 else 3 * T // 4
        s[c - 2:c + 3, 0] += 3
        seqs.append(s.astype(np.float32))
        y.append(f"c{k}")
    return seqs, np.array(y)


def test_baselines_wiring():
    rng = np.random.default_rng(0)
    tr, ytr = _toy(20, rng)
    te, yte = _toy(10, rng)
    threads = torch.get_num_threads()
    out = cb.fit_predict(("minirocket", "dtw"), tr, ytr, te, seed=0)
    assert torch.get_num_threads() == threads           # numba's OpenMP layer must not change torch's threads
    assert set(out) == {"majority_class", "minirocket", "dtw_1nn"}
    assert (out["dtw_1nn"][0] == yte).mean() == 1.0
    assert (out["minirocket"][0] == yte).mean() >= 0.9
    assert out["majority_class"][0].tolist() == ["c0"] * 10      # tie 10/10: the first label
    panel = cb.to_panel([np.arange(3.0)[:, None], np.arange(5.0)[:, None]], 5)
    assert panel.shape == (2, 1, 5) and panel[0, 0].tolist() == [0, 0.5, 1, 1.5, 2]
    said = []
    old = cb.DTW_MAX_CELLS
    cb.DTW_MAX_CELLS = 10
    try:
        out = cb.fit_predict(("dtw",), tr, ytr, te, log=said.append)
    finally:
        cb.DTW_MAX_CELLS = old
    assert "dtw_1nn" not in out and "1-NN DTW skipped" in said[0]


def test_classify_sequences_is_the_ensemble_mean():
    members = [_model(seed=s) for s in (0, 1)]
    rng = np.random.default_rng(0)
    seqs = [rng.normal(3, 2, size=(n, 2)) for n in (30, 12, 7)]
    meta = members[0].meta
    p = classify_sequences(members, meta, seqs)
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1, atol=1e-6)
    each = [classify_sequences([m], meta, seqs) for m in members]
    np.testing.assert_allclose(p, (each[0] + each[1]) / 2, atol=1e-6)
    x, lengths = padded([normalise_series(s.astype(np.float32)) for s in seqs])
    direct = torch.cat(infer(members[0], [{"x": x, "lengths": lengths}])).numpy()
    np.testing.assert_allclose(each[0], direct, atol=1e-5)       # raw units in, normalised inside
    with pytest.raises(ShapeError, match=r"sequence 1 has shape \(4, 3\); expected \(T, 2\)"):
        classify_sequences(members, meta, [seqs[0], np.zeros((4, 3))])
    with pytest.raises(ShapeError, match="sequence 0 has a non-finite value at step 2"):
        classify_sequences(members, meta, [np.array([[0, 0], [1, 1], [np.nan, 0]])])
