"""The phase of the shortening windows (window_phase): start_later by hand, a random phase per series in
training (determinism with a seed), every phase averaged at test (by hand, masks for variable lengths), config
checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grukit.config import ClassifyConfig
from grukit.errors import ConfigError
from grukit.tasks.conv import start_later
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
    with pytest.raises(ConfigError, match="window_phase='avg'.*did you mean 'average'"):
        ClassifyConfig.from_dict({"window_phase": "avg"})
    assert ClassifyConfig.from_dict({"window_phase": "random"}).window_phase == "random"


def test_average_is_the_mean_log_softmax_over_phases_and_ignores_padding():
    m = tiny_classifier(window_phase="average")                      # 30 steps to 8: s = 4
    assert m.pool_stride == 4 and m.phases == 4
    x = torch.randn(3, 30, 2)
    lengths = torch.tensor([30, 17, 2])
    with torch.no_grad():
        logits, _ = m({"x": x, "lengths": lengths})
        m.config.window_phase = "fixed"
        assert m.phases == 1
        by_hand = []
        for o in range(4):                                            # the length-2 series stops at offset 1
            oo = torch.minimum(torch.tensor(o), lengths - 1)
            xs, ns = start_later(x, lengths, oo)
            by_hand.append(torch.log_softmax(m({"x": xs, "lengths": ns})[0], -1))
        m.config.window_phase = "average"
    torch.testing.assert_close(logits, torch.stack(by_hand).mean(0), atol=1e-5, rtol=1e-5)
    assert_model_ignores_padding_and_follows_seed(lambda seed: tiny_classifier(seed, window_phase="average"))


def test_random_phase_in_training_only_and_follows_the_seed():
    m = tiny_classifier(window_phase="random")
    x, lengths = torch.randn(64, 30, 2), torch.full((64,), 30)
    with torch.no_grad():
        fixed = tiny_classifier(window_phase="fixed")
        torch.testing.assert_close(m({"x": x, "lengths": lengths})[0], fixed({"x": x, "lengths": lengths})[0])
        m.train()
        torch.manual_seed(3)
        a = m.phase_shifted({"x": x, "lengths": lengths})
        torch.manual_seed(3)
        b = m.phase_shifted({"x": x, "lengths": lengths})
    torch.testing.assert_close(a["x"], b["x"])                        # same seed, same phases
    offsets = 30 - a["lengths"]
    assert set(offsets.tolist()) == {0, 1, 2, 3}                      # every phase of s = 4 drawn
    for i in range(3):
        o = int(offsets[i])
        torch.testing.assert_close(a["x"][i, :30 - o], x[i, o:])


def test_short_series_are_untouched():
    m = tiny_classifier(window_phase="average", conv_steps=0)        # no shortening: s = 1
    assert m.pool_stride == 1 and m.phases == 1
    m.train()
    x = torch.randn(2, 30, 2)
    inputs = {"x": x, "lengths": torch.tensor([30, 20])}
    assert m.encode(inputs)[0].shape[0] == 2
    np.testing.assert_array_equal(m.phase_shifted(inputs, 0)["x"].numpy()[0], x.numpy()[0])
