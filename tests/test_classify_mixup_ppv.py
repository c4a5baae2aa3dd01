"""Two classifier training options: mixup (Zhang et al. 2018) on training batches and the soft proportion of
positive values (conv_pool=ppv / mean_ppv, ROCKET's PPV made differentiable): hand computations, masks for
variable lengths, determinism with a seed, the loss on mixed targets, config checks, a training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grukit.config import ClassifyConfig
from grukit.data.augment import mixup
from grukit.errors import ConfigError
from grukit.tasks.conv import FCNBranch, InceptionBranch, ResNetBranch, masked_pool
from tests.conftest import assert_model_ignores_padding_and_follows_seed, assert_padding_ignored, bump_set, \
    tiny_classifier


# ---------------------------------------------------------------------------------------------- mixup
def test_mixup_by_hand_with_lengths():
    x = torch.arange(1.0, 13.0).reshape(3, 4, 1)                       # (3, 4, 1): 1..4, 5..8, 9..12
    x[1, 2:] = 99.0                                                    # padding of row 1 (length 2)
    lengths, y = torch.tensor([4, 2, 3]), torch.tensor([0, 2, 1])
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(5))
    mixed, n, target = mixup(x, lengths, y, 3, alpha=0.2, lam=0.7, generator=torch.Generator().manual_seed(5))
    clean = x.clone()
    clean[1, 2:] = 0.0                                                 # padding reads as zeros
    clean[2, 3:] = 0.0
    for i in range(3):
        j = int(perm[i])
        torch.testing.assert_close(mixed[i], 0.7 * clean[i] + 0.3 * clean[j])
        assert int(n[i]) == max(int(lengths[i]), int(lengths[j]))
        want = torch.zeros(3)
        want[y[i]] += 0.7
        want[y[j]] += 0.3
        torch.testing.assert_close(target[i], want)
    torch.testing.assert_close(target.sum(1), torch.ones(3))
    assert not torch.equal(perm, torch.arange(3))                      # the seed mixes rows for real


def test_mixup_draws_lambda_from_beta_and_follows_the_seed():
    x, y = torch.randn(6, 5, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(3)
    a = mixup(x, None, y, 3, alpha=0.4)
    torch.manual_seed(3)
    b = mixup(x, None, y, 3, alpha=0.4)
    assert a[1] is None and a[0].shape == (6, 5, 2) and a[2].shape == (6, 3)
    for u, v in zip((a[0], a[2]), (b[0], b[2])):
        torch.testing.assert_close(u, v)                               # same seed, same batch
    torch.testing.assert_close(a[2].sum(1), torch.ones(6))
    torch.manual_seed(0)                                               # lambda ~ Beta(0.2, 0.2): mostly near 0 or 1
    lams = []
    for _ in range(200):
        _, _, t = mixup(torch.zeros(2, 1, 1), None, torch.tensor([0, 1]), 2, alpha=0.2)
        lams.append(float(t[0, 0]) if float(t[1, 1]) != 1.0 else float("nan"))   # row 0 mixed with row 1
    lams = np.array([v for v in lams if v == v])
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.6 and 0 <= lams.min() and lams.max() <= 1


def test_mixed_targets_give_the_mixed_smoothed_loss():
    """Cross-entropy on the mixed target equals lam*CE(y_i) + (1-lam)*CE(y_j), each label-smoothed."""
    torch.manual_seed(0)
    m = tiny_classifier(mixup=0.4, label_smoothing=0.1)
    logits, yi, yj, lam = torch.randn(4, 3), torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 0, 2]), 0.35
    target = lam * F.one_hot(yi, 3).float() + (1 - lam) * F.one_hot(yj, 3).float()
    want = lam * F.cross_entropy(logits, yi, label_smoothing=0.1) + \
        (1 - lam) * F.cross_entropy(logits, yj, label_smoothing=0.1)
    torch.testing.assert_close(m.loss(logits, target, {}), want)


def test_model_mixes_only_in_training():
    m = tiny_classifier(mixup=0.4)
    batch = {"x": torch.randn(4, 30, 2), "lengths": torch.tensor([30, 20, 12, 30]), "y": torch.tensor([0, 1, 2, 0])}
    inputs, y = m.batch_to_inputs(batch)                                # eval mode: untouched
    assert inputs["x"] is batch["x"] and y is batch["y"]
    m.train()
    torch.manual_seed(1)
    inputs, y = m.batch_to_inputs(batch)
    assert y.shape == (4, 3) and inputs["x"].shape == (4, 30, 2)
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    assert (inputs["lengths"] >= batch["lengths"]).all()
    assert ClassifyConfig().mixup == 0.0


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_config_refuses_bad_mixup(bad):
    with pytest.raises(ConfigError, match="mixup="):
        ClassifyConfig.from_dict({"mixup": bad})


# ---------------------------------------------------------------------------------------------- ppv pooling
def test_ppv_pool_by_hand_with_masks():
    pre = torch.tensor([[[2.0, -1.0, 0.0, 30.0]], [[-3.0, 1.0, 0.5, -2.0]]])    # (2, 1, 4) pre-activations
    h = torch.relu(pre)
    m = torch.tensor([[[1.0, 1.0, 1.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]]])            # row 0: 3 valid steps
    s = torch.sigmoid
    ppv0 = (s(torch.tensor(2.0)) + s(torch.tensor(-1.0)) + 0.5) / 3                # 30 is padding
    ppv1 = (s(torch.tensor(-3.0)) + s(torch.tensor(1.0)) + s(torch.tensor(0.5)) + s(torch.tensor(-2.0))) / 4
    torch.testing.assert_close(masked_pool(h, m, "ppv", pre), torch.stack([ppv0, ppv1])[:, None])
    both = masked_pool(h, m, "mean_ppv", pre)                                    # (2, 2): mean of h, then ppv
    torch.testing.assert_close(both, torch.tensor([[2.0 / 3, float(ppv0)], [1.5 / 4, float(ppv1)]]))
    no_mask = masked_pool(h, None, "ppv", pre)[0, 0]
    by_hand = (s(torch.tensor(2.0)) + s(torch.tensor(-1.0)) + 0.5 + s(torch.tensor(30.0))) / 4   # 30 counts now
    torch.testing.assert_close(no_mask, by_hand)
    torch.testing.assert_close(masked_pool(pre, m, "ppv"), masked_pool(h, m, "ppv", pre))   # pre defaults to h


@pytest.mark.parametrize("pool", ["ppv", "mean_ppv"])
@pytest.mark.parametrize("make", [lambda p: FCNBranch(2, 4, pool=p), lambda p: ResNetBranch(2, 4, pool=p),
                                  lambda p: InceptionBranch(2, 2, depth=3, pool=p)])
def test_branches_with_ppv_ignore_padding(make, pool):
    torch.manual_seed(0)
    b = make(pool)
    b(torch.randn(8, 40, 2), None)                                   # a training step moves BatchNorm's stats
    b.eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (40, 9, 23)]
    out = assert_padding_ignored(b, seqs)
    assert out.shape == (3, b.out_size) and b.out_size == (8 if pool == "mean_ppv" else 4) * \
        (2 if isinstance(b, InceptionBranch) else 1)
    ppv = out[:, -out.shape[1] // (2 if pool == "mean_ppv" else 1):]
    assert ((ppv > 0) & (ppv < 1)).all()                             # proportions
    if pool == "mean_ppv":
        assert not torch.allclose(ppv, out[:, :ppv.shape[1]])


def test_default_pooling_is_unchanged_by_the_preactivation_split():
    """The inception module's forward is still relu of its pre-activation (the default path did not move)."""
    torch.manual_seed(0)
    b = InceptionBranch(2, 2, depth=1).eval()
    x = torch.randn(3, 20, 2)
    h = x.transpose(1, 2)
    torch.testing.assert_close(b(x, None), torch.relu(b.blocks[0].preactivation(h, None)).mean(2))


def test_whole_model_with_ppv_masks_and_seed():
    m = tiny_classifier(conv_pool="mean_ppv")
    assert m.head.net[1].in_features == 6 + 16                      # GRU summary beside mean and ppv of 8
    assert_model_ignores_padding_and_follows_seed(lambda seed: tiny_classifier(seed=seed, conv_pool="ppv"))
    with pytest.raises(ConfigError, match="conv_pool='ppx'"):
        ClassifyConfig.from_dict({"conv_pool": "ppx"})


def test_mixup_and_ppv_train_end_to_end(tmp_path):
    from grukit.tasks.classify import classify_sequences
    from grukit.train import fit
    path, X, y, lengths = bump_set(tmp_path)                           # class 1: a bump, variable lengths
    seqs = [X[i, :lengths[i], None] for i in range(len(y))]
    probs = []
    for k in range(2):
        run = fit("classify", data=str(path), out=tmp_path / f"run{k}", mixup=0.4, conv_pool="mean_ppv",
                  conv_branch="fcn", conv_channels=8, hidden_size=8, batch_size=8, progress=False, max_epochs=8,
                  schedule="manual", val_fraction=0.0, patience=0, ensemble=1, baselines=(), lr=1e-2,
                  evaluate=False, seed=4)
        probs.append(classify_sequences(run.models(), run.meta, seqs))
    assert run.config.mixup == 0.4 and run.config.conv_pool == "mean_ppv"
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)          # the same seed trains the same model
    assert (probs[0].argmax(1) == y).mean() >= 0.9
