"""Options that make ensemble members differ: the ResNet branch (conv_branch=resnet, or a per-member list such
as inception,fcn,resnet), the first-difference input (first_difference) and per-member lists of downsample:
values by hand, shapes, masks for variable lengths, determinism with a seed, config checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.tasks.classify import member_choice
from grukit.tasks.conv import FCNBranch, InceptionBranch, ResNetBranch, with_difference
from tests.conftest import (assert_model_ignores_padding_and_follows_seed, assert_padding_ignored,
                            bump_set, tiny_classifier)


def test_with_difference_by_hand():
    x = torch.tensor([[[1.0], [3.0], [2.0], [9.0]], [[0.0], [4.0], [7.0], [7.0]]])      # (2, 4, 1)
    out = with_difference(x, torch.tensor([3, 2]))                 # row 0: 3 valid steps, row 1: 2
    assert out.shape == (2, 4, 2)
    torch.testing.assert_close(out[..., 0], torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 4.0, 0.0, 0.0]]))
    # differences 0, 2, -1 (rms sqrt(5/3)) and 0, 4 (rms sqrt(8)); padded steps stay 0
    d0 = torch.tensor([0.0, 2.0, -1.0, 0.0]) / (5 / 3) ** 0.5
    d1 = torch.tensor([0.0, 4.0, 0.0, 0.0]) / 8 ** 0.5
    torch.testing.assert_close(out[..., 1], torch.stack([d0, d1]))
    flat = with_difference(torch.ones(1, 5, 2), None)               # a constant series: difference 0, not nan
    assert torch.equal(flat[..., 2:], torch.zeros(1, 5, 2))


def test_resnet_branch_shapes_and_padding():
    torch.manual_seed(0)
    b = ResNetBranch(2, 8)
    assert [blk[0][0].out_channels for blk in b.blocks] == [4, 8, 8] and b.out_size == 8
    assert [layer[0].kernel_size[0] for layer in b.blocks[0]] == [8, 5, 3]
    assert isinstance(b.shortcuts[2], torch.nn.BatchNorm1d)          # same width: the shortcut is BatchNorm only
    b(torch.randn(8, 30, 2), None)                                   # a training step so BatchNorm stats move
    b.eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (30, 7, 2)]
    assert assert_padding_ignored(b, seqs).shape == (3, 8)
    assert ResNetBranch(1, 4, pool="mean_max").out_size == 8


def test_member_choice_cycles():
    assert [member_choice("inception,fcn,resnet", i) for i in range(5)] == \
        ["inception", "fcn", "resnet", "inception", "fcn"]
    assert [member_choice("alternate", i) for i in range(3)] == ["inception", "fcn", "inception"]
    assert member_choice("off", 4) == "off" and member_choice("off, on", 3) == "on"


_model = tiny_classifier


@pytest.mark.parametrize("member", [0, 1, 2])
def test_members_differ_as_listed_and_ignore_padding(member):
    kw = dict(conv_branch="inception,fcn,resnet", first_difference="off,on", downsample="mixed,mean,fold")
    m = _model(member=member, **kw)
    assert type(m.fcn) is [InceptionBranch, FCNBranch, ResNetBranch][member]
    assert m.difference == (member == 1) and not m.streamable
    assert (m.mixed, m.fold) == [(True, True), (False, False), (False, True)][member]
    logits = assert_model_ignores_padding_and_follows_seed(lambda seed: _model(seed=seed, member=member, **kw))
    assert logits.shape == (3, 3)


def test_first_difference_doubles_the_input_features():
    on, off = _model(first_difference="on"), _model(first_difference="off")
    assert off.difference is False and ClassifyConfig().first_difference == "off,on"
    assert [_model(member=i).difference for i in range(5)] == [False, True, False, True, False]   # the default
    assert [type(_model(member=i).fcn) for i in range(5)] == \
        [InceptionBranch, FCNBranch, ResNetBranch, InceptionBranch, FCNBranch]
    # mixed: the inception branch reads window means of 2F features, the GRU patches s*2F folded features
    assert on.fcn.blocks[0].bottleneck.in_channels == 4 and off.fcn.blocks[0].bottleneck.in_channels == 2
    assert on.patch.proj.in_channels == 2 * off.patch.proj.in_channels


def test_config_checks_member_lists():
    with pytest.raises(ConfigError, match="conv_branch='resnt'.*did you mean 'resnet'"):
        ClassifyConfig.from_dict({"conv_branch": "inception,resnt"})
    with pytest.raises(ConfigError, match="first_difference='yes'"):
        ClassifyConfig.from_dict({"first_difference": "off,yes"})
    with pytest.raises(ConfigError, match="downsample='avg'"):
        ClassifyConfig.from_dict({"downsample": "mixed,avg"})
    assert ClassifyConfig.from_dict({"conv_branch": "inception,fcn,resnet"}).conv_branch == "inception,fcn,resnet"
    with pytest.raises(ConfigError, match="conv_steps=256,x: expected an integer >= 0 or a comma-separated"):
        ClassifyConfig.from_dict({"conv_steps": "256,x"})
    with pytest.raises(ConfigError, match="conv_steps=-1: expected an integer >= 0"):
        ClassifyConfig.from_dict({"conv_steps": -1})
    assert ClassifyConfig.from_dict({"conv_steps": 512}).conv_steps == "512"      # a number as before


def test_member_lists_train_end_to_end_and_reload(tmp_path):
    from grukit.runs import Run
    from grukit.tasks.classify import classify_sequences
    from grukit.train import fit
    path, X, y, lengths = bump_set(tmp_path)                          # class 1: a bump
    n = len(y)
    run = fit("classify", data=str(path), out=tmp_path / "run",
              conv_branch="inception,fcn,resnet", first_difference="on,off", conv_steps="16,64",
              conv_channels=8, hidden_size=8,
              batch_size=8, progress=False, max_epochs=12, schedule="manual", val_fraction=0.0, patience=0,
              ensemble=3, baselines=(), lr=1e-2, evaluate=False)
    again = Run(run.path)
    assert again.config.first_difference == "on,off" and again.meta["first_difference"] == "on,off"
    models = again.models()                                          # the saved run rebuilds each member
    assert [type(m.fcn) for m in models] == [InceptionBranch, FCNBranch, ResNetBranch]
    assert [m.difference for m in models] == [True, False, True]
    # conv_steps 16,64 on series of up to 60 steps: members 0 and 2 read windows of 4 steps, member 1 every step
    assert again.meta["pool_strides"] == [4, 1] and again.meta["pool_stride"] == 4
    assert [m.pool_stride for m in models] == [4, 1, 4]
    assert [m.patch.proj.in_channels for m in models] == [4 * 2, 1, 4 * 2]   # mixed: folded s*F (x2 difference)
    seqs = [X[i, :lengths[i], None] for i in range(n)]
    accs = [(classify_sequences([m], again.meta, seqs).argmax(1) == y).mean() for m in models]
    assert min(accs) >= 0.9, accs
