"""The phase of the shortening windows (window_phase): start_later by hand, a random phase per series in
training for the folded windows only (the window means and the test-time model keep phase 0), determinism with a
seed, masks for variable lengths, config checks."""
from __future__ import annotations

import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.tasks.conv import pool_time, start_later
from tests.conftest import assert_model_ignores_padding_and_follows_seed, tiny_classifier


def test_start_later_by_hand():
    x = torch.arange(1.0, 13.0).reshape(2, 6, 1)                      # rows 1..6 and 7..12
    out, n = start_later(x, torch.tensor([6, 4]), torch.tensor([2, 1]))
    assert n.tolist() == [4, 3]
    assert out[0, :, 0].tolist() == [3, 4, 5, 6, 0, 0]
    assert out[1, :, 0].tolist() == [8, 9, 10, 0, 0, 0]                # step 11 was padding: stays out
    out, n = start_later(x, None, torch.tensor([0, 5]))               # no lengths: every step valid
    assert n.tolist() == [6, 1] and out[1, :, 0].tolist() == [12, 0, 0, 0, 0, 0]


def test_config_checks_window_phase():
    with pytest.raises(ConfigError, match="window_phase='randm'.*did you mean 'random'"):
        ClassifyConfig.from_dict({"window_phase": "randm"})
    assert ClassifyConfig.from_dict({"window_phase": "fixed"}).window_phase == "fixed"


def test_phase_shifted_draws_every_phase_follows_the_seed_and_stays_inside_each_series():
    m = tiny_classifier(window_phase="random").train()                # 30 steps to 8: s = 4
    assert m.pool_stride == 4 and m.random_phase
    x = torch.randn(64, 30, 2)
    lengths = torch.cat([torch.full((62,), 30), torch.tensor([2, 1])])
    torch.manual_seed(3)
    a = m.phase_shifted({"x": x, "lengths": lengths})
    torch.manual_seed(3)
    b = m.phase_shifted({"x": x, "lengths": lengths})
    torch.testing.assert_close(a["x"], b["x"])                        # same seed, same phases
    offsets = lengths - a["lengths"]
    assert set(offsets[:62].tolist()) == {0, 1, 2, 3}                 # every phase of s = 4 drawn
    assert a["lengths"][62] >= 1 and a["lengths"][63] == 1            # never past a series' last step
    for i in range(3):
        o = int(offsets[i])
        torch.testing.assert_close(a["x"][i, :30 - o], x[i, o:])
    for i in range(62):                                               # the dropped steps' places are zeroed
        assert float(a["x"][i, 30 - int(offsets[i]):].abs().sum()) == 0


def test_random_phase_only_in_training_and_only_for_folded_windows():
    x, lengths = torch.randn(8, 30, 2), torch.tensor([30, 29, 17, 9, 5, 3, 2, 1])
    fixed, rand = tiny_classifier(window_phase="fixed"), tiny_classifier(window_phase="random")
    with torch.no_grad():                                             # eval: the same model, phase 0
        torch.testing.assert_close(rand({"x": x, "lengths": lengths})[0], fixed({"x": x, "lengths": lengths})[0])
    assert_model_ignores_padding_and_follows_seed(lambda seed: tiny_classifier(seed, window_phase="random"))
    rand.train()
    seen = []
    rand.fcn.register_forward_hook(lambda mod, args, out: seen.append(args))
    torch.manual_seed(0)
    rand.encode({"x": x, "lengths": lengths})
    means, n = pool_time(x, lengths, 4)                               # mixed: the branch reads phase-0 means
    torch.testing.assert_close(seen[0][0], means)
    assert torch.equal(seen[0][1], n)
    for kind, steps_read in (("mixed", True), ("fold", True), ("mean", False)):
        assert tiny_classifier(window_phase="random", downsample=kind).train().random_phase == steps_read
    short = tiny_classifier(window_phase="random", conv_steps=0).train()   # not shortened: s = 1
    assert short.pool_stride == 1 and not short.random_phase


def test_training_forward_follows_the_seed_with_the_difference():
    m = tiny_classifier(window_phase="random", first_difference="on").train()
    m.patch.proj.weight.data.normal_()                               # make the GRU branch's input matter
    x, lengths = torch.randn(4, 30, 2), torch.tensor([30, 20, 9, 2])

    def run(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return m.encode({"x": x, "lengths": lengths})[0]
    torch.testing.assert_close(run(5), run(5))                        # same seed, same phases
    assert not torch.allclose(run(5), run(6))                         # other phases, other GRU input
