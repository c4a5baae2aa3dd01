"""Bad input to the engine raises a ValueError subclass that names the argument, the expectation and the value."""
from __future__ import annotations

import pytest
import torch

from grukit.errors import ConfigError, ShapeError
from grukit.nn import GRU, GRUCell, MinGRU, check_finite

I, H = 3, 4


@pytest.mark.parametrize("call,pattern", [
    (lambda g: g(torch.randn(2, 3, 4, 5)), r"input must be 3-D .* got 4-D with shape \(2, 3, 4, 5\)"),
    (lambda g: g(torch.randn(5)), r"got 1-D"),
    (lambda g: g(torch.randn(5, 2, 7)), r"7 features per step .* input_size=3"),
    (lambda g: g(torch.randint(0, 3, (5, 2, 3))), r"floating-point tensor, got dtype torch.int64"),
    (lambda g: g(torch.randn(5, 2, 3, dtype=torch.float64)), r"dtype torch.float64 .* parameters are torch.float32"),
    (lambda g: g(torch.randn(5, 2, 3), lengths=[5, 6]), r"lengths must lie in \[1, 5\].*lengths\[1\] = 6"),
    (lambda g: g(torch.randn(5, 2, 3), lengths=[0, 5]), r"lengths\[0\] = 0"),
    (lambda g: g(torch.randn(5, 2, 3), lengths=[5, 5, 5]), r"lengths must have shape \(2,\).*got shape \(3\)"),
    (lambda g: g(torch.randn(5, 2, 3), lengths=torch.tensor([1.5, 2.0])), r"lengths must hold integers"),
    (lambda g: g(torch.randn(5, 2, 3), torch.zeros(1, 2, 4)), r"hx must have shape \(2, 2, 4\).*got \(1, 2, 4\)"),
    (lambda g: g(torch.randn(5, 3), torch.zeros(2, 1, 4)), r"hx must have shape \(2, 4\)"),
    (lambda g: g(torch.randn(0, 2, 3)), r"no time steps"),
    (lambda g: g.step(torch.randn(2, 5)), r"x_t has 5 features"),
    (lambda g: g.step(torch.randn(2, 3), torch.zeros(2, 3, 4)), r"h must have shape \(2, 2, 4\)"),
    (lambda g: g.step(torch.randn(2, 3), reset=torch.tensor([1, 0])), r"reset must be a bool tensor"),
])
def test_bad_input_messages(call, pattern):
    gru = GRU(I, H, num_layers=2)
    with pytest.raises(ShapeError, match=pattern) as e:
        call(gru)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(input_size=0, hidden_size=4), r"input_size must be a positive integer, got 0"),
    (dict(input_size=3, hidden_size=4, dropout=1.5), r"dropout must be a probability in \[0, 1\], got 1.5"),
    (dict(input_size=3, hidden_size=4, zoneout=1.0), r"zoneout=1 would freeze"),
    (dict(input_size=3, hidden_size=-1, recurrent_dropout=-0.1), r"(?s)2 problems.*hidden_size.*recurrent_dropout"),
])
def test_bad_arguments_collect_problems(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        GRU(**kwargs)


def test_step_refuses_bidirectional_and_training_recurrent_dropout():
    with pytest.raises(ConfigError, match="bidirectional GRU needs the whole sequence"):
        GRU(I, H, bidirectional=True).step(torch.randn(1, I))
    with pytest.raises(ConfigError, match=r"call .eval\(\)"):
        GRU(I, H, recurrent_dropout=0.2).train().step(torch.randn(1, I))


def test_cell_and_mingru_messages():
    with pytest.raises(ShapeError, match=r"hx must have shape \(2, 4\)"):
        GRUCell(I, H)(torch.randn(2, I), torch.randn(3, H))
    with pytest.raises(ShapeError, match="7 features"):
        MinGRU(I, H)(torch.randn(5, 2, 7))
    with pytest.raises(ConfigError, match="scan must be"):
        MinGRU(I, H, scan="magic")


def test_check_finite_names_the_place():
    x = torch.zeros(4, 3)
    check_finite(x)
    x[2, 1] = float("nan")
    with pytest.raises(ShapeError, match=r"features holds 1 non-finite value\(s\) \(NaN first at index \(2, 1\)\)"):
        check_finite(x, "features")
