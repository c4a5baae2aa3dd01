"""The classifier's convolutional branch options: InceptionTime modules (conv_branch=inception) and the
mean-and-max summary (conv_pool=mean_max): shapes, masks for variable lengths, determinism, a training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.tasks.classify import ClassifyTask
from grukit.tasks.conv import FCNBranch, InceptionBranch, masked_pool
from tests.conftest import assert_model_ignores_padding_and_follows_seed, bump_set, padded, tiny_classifier


def test_masked_pool_by_hand():
    h = torch.tensor([[[1.0, -2.0, 3.0, 50.0]], [[-1.0, -4.0, -7.0, -9.0]]])      # (2, 1, 4)
    m = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0]]])            # row 0: 2 valid steps
    assert masked_pool(h, m).tolist() == [[-0.5], [-5.25]]
    assert masked_pool(h, m, "mean_max").tolist() == [[-0.5, 1.0], [-5.25, -1.0]]   # 3 and 50 are padding
    assert masked_pool(h, None, "mean_max").tolist() == [[13.0, 50.0], [-5.25, -1.0]]


def test_inception_branch_shapes_and_structure():
    torch.manual_seed(0)
    b = InceptionBranch(3, 4, depth=6)
    assert [c.kernel_size[0] for c in b.blocks[0].convs] == [39, 19, 9]
    assert b.blocks[0].bottleneck.out_channels == 4 and b.blocks[1].convs[0].in_channels == 4
    assert len(b.shortcuts) == 2 and b.out_size == 16              # 4 paths of 4 filters; a shortcut per 3
    assert b(torch.randn(2, 50, 3), None).shape == (2, 16)
    one = InceptionBranch(1, 2, depth=1, pool="mean_max")          # one feature: no bottleneck, no shortcut
    assert one.blocks[0].bottleneck is None and len(one.shortcuts) == 0 and one.out_size == 16
    assert one(torch.randn(3, 7, 1), torch.tensor([7, 2, 1])).shape == (3, 16)   # shorter than any kernel


@pytest.mark.parametrize("pool", ["mean", "mean_max"])
def test_inception_branch_ignores_padding(pool):
    torch.manual_seed(0)
    b = InceptionBranch(2, 3, depth=3, pool=pool)
    b(torch.randn(8, 40, 2), None)                                  # a training step so BatchNorm stats move
    b.eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (40, 9, 23)]
    x, lengths = padded(seqs)
    x[1, 9:] = 1e3                                                  # garbage padding must not matter, even
    x[2, 23:] = -1e3                                                # where a max-pool or a max could read it
    out = b(x, lengths)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(out[i], b(torch.as_tensor(s)[None], None)[0], atol=1e-5, rtol=1e-5)


def test_fcn_branch_mean_max_ignores_padding():
    torch.manual_seed(0)
    fcn = FCNBranch(1, 4, pool="mean_max").eval()
    assert fcn.out_size == 8
    x, lengths = padded([np.ones((10, 1), np.float32), np.ones((4, 1), np.float32)])
    x[1, 4:] = 1e3
    out = fcn(x, lengths)
    torch.testing.assert_close(out[1], fcn(x[1:2, :4], None)[0])


_model = tiny_classifier


def test_whole_model_with_inception_branch_masks_and_seed():
    m = _model(conv_branch="inception", conv_pool="mean_max")
    assert isinstance(m.fcn, InceptionBranch) and m.fcn.out_size == 16     # 8 channels (4 paths of 2), x2
    assert m.head.net[1].in_features == 6 + 16                     # GRU summary beside the branch summary
    assert_model_ignores_padding_and_follows_seed(
        lambda seed: _model(seed=seed, conv_branch="inception", conv_pool="mean_max"))
    assert isinstance(_model(conv_branch="fcn").fcn, FCNBranch)
    assert isinstance(_model().fcn, InceptionBranch)                # the default cycles; member 0: inception
    assert (ClassifyConfig().conv_branch, ClassifyConfig().conv_pool) == ("inception,fcn,resnet", "mean")


def test_config_checks_branch_options():
    with pytest.raises(ConfigError, match="conv_branch='inceptoin'.*did you mean 'inception'"):
        ClassifyConfig.from_dict({"conv_branch": "inceptoin"})
    with pytest.raises(ConfigError, match="conv_pool='max'"):
        ClassifyConfig.from_dict({"conv_pool": "max"})
    with pytest.raises(ConfigError, match="conv_depth=0: expected an integer >= 1"):
        ClassifyConfig.from_dict({"conv_depth": 0})


def test_alternate_ensemble_trains_end_to_end_and_reloads(tmp_path):
    from grukit.runs import Run
    from grukit.train import fit
    path, X, y, lengths = bump_set(tmp_path)                          # class 1: a bump
    n = len(y)
    run = fit("classify", data=str(path), out=tmp_path / "run", conv_branch="alternate",
              conv_pool="mean_max", conv_channels=8, hidden_size=8, batch_size=8, progress=False, max_epochs=6,
              schedule="manual", val_fraction=0.0, patience=0, ensemble=3, baselines=(), lr=1e-2,
              evaluate=False)
    again = Run(run.path)
    assert again.config.conv_branch == "alternate" and again.config.conv_pool == "mean_max"
    models = again.models()                                          # the saved run rebuilds each member's branch
    assert [type(m.fcn) for m in models] == [InceptionBranch, FCNBranch, InceptionBranch]
    assert [m.member for m in models] == [0, 1, 2]
    from grukit.tasks.classify import classify_sequences
    seqs = [X[i, :lengths[i], None] for i in range(n)]
    for m in models:
        assert (classify_sequences([m], again.meta, seqs).argmax(1) == y).mean() >= 0.9


def test_alternate_members_build_both_branches():
    cfg = ClassifyConfig(hidden_size=6, conv_channels=8, conv_branch="alternate")
    old = {"input_size": 1, "classes": ["a", "b"], "pool_stride": 1, "patch_stride": 1, "normalize": "series"}
    meta = dict(old, conv_branch=cfg.conv_branch)                    # what prepare() records
    kinds = [type(ClassifyTask(cfg, meta, member=i).fcn) for i in range(5)]
    assert kinds == [InceptionBranch, FCNBranch, InceptionBranch, FCNBranch, InceptionBranch]
    assert type(ClassifyTask(cfg, meta).fcn) is InceptionBranch      # one model: the inception member
    assert type(ClassifyTask(cfg, old, member=0).fcn) is FCNBranch   # a run saved before the option: its FCN


def test_masked_batch_norm_uses_only_the_valid_steps_in_training():
    """MaskedBatchNorm1d in training normalises with the mean and variance of the valid steps only: its output
    there and its running estimates equal torch's BatchNorm1d run on those steps alone; with every step valid,
    no mask, or in eval mode it is torch's BatchNorm1d exactly; the state dict is BatchNorm1d's."""
    from grukit.tasks.conv import MaskedBatchNorm1d
    torch.manual_seed(0)
    x = torch.randn(3, 4, 10) * 2 + 1                                               # (B, C, T)
    lengths = torch.tensor([10, 6, 3])
    m = (torch.arange(10)[None, :] < lengths[:, None]).unsqueeze(1).float()          # (B, 1, T)
    ours, ref = MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    valid = torch.cat([x[b, :, :n] for b, n in enumerate(lengths.tolist())], 1).unsqueeze(0)   # (1, C, 19)
    out, want = ours(x, m), ref(valid)
    got = torch.cat([out[b, :, :n] for b, n in enumerate(lengths.tolist())], 1).unsqueeze(0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    plain = torch.nn.BatchNorm1d(4)
    plain.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x, torch.ones(3, 1, 10)), plain(x))                      # all valid: BatchNorm1d
    assert torch.equal(ours(x), plain(x))
    ours.eval(), plain.eval()
    assert torch.equal(ours(x, m), plain(x))                                          # eval: running estimates


@pytest.mark.parametrize("branch", ["fcn", "inception", "resnet"])
def test_training_branches_ignore_how_far_a_batch_is_padded(branch):
    """A convolutional branch in training mode gives the same features (and the same running statistics) for a
    batch of series of different lengths whether the batch is padded to its longest series or 25 steps further:
    the padding never reaches a batch normalisation's statistics."""
    from grukit.tasks.conv import ResNetBranch
    make = {"fcn": lambda: FCNBranch(2, 8), "inception": lambda: InceptionBranch(2, 2, depth=3),
            "resnet": lambda: ResNetBranch(2, 8)}[branch]
    torch.manual_seed(0)
    seqs = [torch.randn(n, 2) for n in (30, 17, 9)]
    x, lengths = padded([s.numpy() for s in seqs])                                    # (3, 30, 2)
    x = torch.as_tensor(x)
    lengths = torch.as_tensor(lengths)
    longer = torch.cat([x, torch.randn(3, 25, 2)], 1)                                 # garbage past the ends
    a, b = make(), make()
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    torch.testing.assert_close(a(x, lengths), b(longer, lengths), rtol=1e-5, atol=1e-5)
    for (name, ra), rb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(ra, rb, rtol=1e-5, atol=1e-5, msg=name)
