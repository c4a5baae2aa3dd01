"""The GRU tests of PyTorch's ``test/test_nn.py`` (and the RNN/LSTM ones that apply to a GRU, retargeted),
ported to run on grukit's GRU/GRUCell and, as the baseline, on torch's ("torch"), so a harness artefact cannot
pass as a grukit failure. Written from the upstream tests' intent (not copied), CPU only, small sizes.

Ported (upstream name -> here): test_RNN_cell, test_RNN_cell_forward_zero_hidden_size, test_RNN_cell_no_broadcasting,
test_rnn_weight_norm (LSTM -> GRU), test_rnn_args_check, test_rnn_initial_hidden_state, test_RNN_dropout,
test_RNN_dropout_state, test_RNN_change_dropout, test_RNN_dropout_warning, test_RNN_input_size_zero,
test_variable_sequence (LSTM -> GRU), test_rnn_retain_variables, test_GRU_grad_and_gradgrad, plus
flatten_parameters as a no-op and deepcopy.

Not applicable (and why):
* test_rnn_check_device, test_RNN_cpu_vs_cudnn_no_dropout, test_RNN_cpu_vs_cudnn_with_dropout, test_rnn_fused,
  test_cudnn_weight_format, test_cudnn_weight_tying, test_cudnn_forward_exception,
  test_cudnn_rnn_dropout_states_device: need CUDA/cuDNN.
* test_projections_lstm_args_check, test_projections_lstm_initial_hidden_state,
  test_LSTM_differentiable_backward_using_oneDNN: LSTM projections / oneDNN LSTM, no GRU counterpart.
* test_RNN_nonlinearity, test_RNN_nonlinearity_passed_as_arg: the Elman RNN's ``nonlinearity`` argument.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.utils.rnn as rnn_utils

import grukit.nn
from grukit.nn import backends

GRUS = {"torch": torch.nn.GRU, "grukit": grukit.nn.GRU}
CELLS = {"torch": torch.nn.GRUCell, "grukit": grukit.nn.GRUCell}
LIBS = list(GRUS)
F64 = torch.float64


def _fused(lib: str) -> None:
    if lib == "grukit":
        assert backends.last_used() == "fused_cpu"


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lib", LIBS)
def test_RNN_cell(lib, bias):
    torch.manual_seed(0)
    cell = CELLS[lib](10, 20, bias=bias)
    x = torch.randn(3, 10)
    hx = torch.randn(3, 20, requires_grad=True)
    h = hx
    for _ in range(6):
        h = cell(x, h)
    h.sum().backward()
    assert h.shape == (3, 20) and hx.grad.shape == (3, 20) and torch.isfinite(hx.grad).all()
    if lib == "grukit":                                              # and the same numbers as torch's
        twin = torch.nn.GRUCell(10, 20, bias=bias)
        twin.load_state_dict(cell.state_dict())
        h2 = hx.detach()
        for _ in range(6):
            h2 = twin(x, h2)
        torch.testing.assert_close(h.detach(), h2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lib", LIBS)
def test_RNN_cell_forward_zero_hidden_size(lib):
    assert CELLS[lib](10, 0)(torch.randn(3, 10), torch.randn(3, 0)).shape == (3, 0)


@pytest.mark.parametrize("lib", LIBS)
def test_RNN_cell_no_broadcasting(lib):
    """Sizes that broadcasting would accept are refused with a RuntimeError."""
    cell = CELLS[lib](10, 20)
    good_x, good_h = torch.randn(3, 10), torch.randn(3, 20)
    for x, h in [(good_x, torch.randn(1, 20)), (good_x, torch.randn(3, 1)), (torch.randn(1, 10), good_h),
                 (torch.randn(3, 1), good_h)]:
        with pytest.raises(RuntimeError):
            cell(x, h)


@pytest.mark.parametrize("lib", LIBS)
def test_rnn_weight_norm(lib):
    """weight_norm turns one flat weight into a computed tensor, remove_weight_norm restores the Parameter; the
    module runs in between (on the fused backend for grukit) with the normalized weight."""
    torch.manual_seed(0)
    m = GRUS[lib](8, 8)
    x = torch.randn(4, 2, 8)
    want = m(x)[0].detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m = torch.nn.utils.weight_norm(m, name="weight_ih_l0")
    assert sum(isinstance(p, torch.nn.Parameter) for p in m._flat_weights) == 3
    torch.testing.assert_close(m(x)[0], want, atol=1e-6, rtol=0)      # w = g * v / |v| is w
    _fused(lib)
    m = torch.nn.utils.remove_weight_norm(m, name="weight_ih_l0")
    assert sum(isinstance(p, torch.nn.Parameter) for p in m._flat_weights) == 4
    assert "weight_ih_l0" in m._parameters and m._parameters["weight_ih_l0"] is not None
    assert "weight_ih_l0_v" not in m._parameters and "weight_ih_l0_g" not in m._parameters
    assert "weight_ih_l0" in dict(m.named_parameters())
    torch.testing.assert_close(m(x)[0], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lib", LIBS)
def test_rnn_args_check(lib):
    """Every wrong input or hidden size (batch, time-independent sizes, layers) raises RuntimeError."""
    I, H, L, B, T = 3, 5, 2, 4, 6
    m = GRUS[lib](I, H, L)
    good = dict(x=(T, B, I), h=(L, B, H))
    bad = [dict(good, x=(T, B, I + 4)), dict(good, h=(L, B + 3, H)), dict(good, h=(L + 1, B, H)),
           dict(good, h=(L, B, H + 2))]
    m(torch.randn(*good["x"]), torch.randn(*good["h"]))
    for case in bad:
        with pytest.raises(RuntimeError):
            m(torch.randn(*case["x"]), torch.randn(*case["h"]))


@pytest.mark.parametrize("lib", LIBS)
def test_rnn_initial_hidden_state(lib):
    torch.manual_seed(0)
    m = GRUS[lib](30, 20, 2)
    x = torch.randn(10, 32, 30)
    out1, h1 = m(x, torch.zeros(2, 32, 20))
    out2, h2 = m(x)
    torch.testing.assert_close(out1, out2, atol=0, rtol=0)
    torch.testing.assert_close(h1, h2, atol=0, rtol=0)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("lib", LIBS)
def test_RNN_dropout(lib, train):
    """Dropout sits between the layers only (upstream: an RNN with unit weights; here a GRU): p=1 in training
    feeds the second layer zeros, so (no bias, zero state) its output is exactly 0; p=0, or evaluation mode,
    changes nothing."""
    x = torch.ones(1, 1, 10)
    outs = {}
    for p in (0.0, 1.0):
        m = GRUS[lib](10, 100, 2, bias=False, dropout=p)
        with torch.no_grad():
            for w in m.parameters():
                w.fill_(0.01)
        m.train(train)
        outs[p] = m(x, torch.zeros(2, 1, 100))[0]
    if train:
        assert torch.equal(outs[1.0], torch.zeros_like(outs[1.0]))
        assert (outs[0.0] != 0).all()
    else:
        torch.testing.assert_close(outs[0.0], outs[1.0], atol=0, rtol=0)


@pytest.mark.parametrize("lib", LIBS)
def test_RNN_dropout_state(lib):
    """With dropout in training two calls differ (new masks) and equal seeds give equal results; evaluation mode
    is deterministic."""
    m = GRUS[lib](10, 50, 2, dropout=0.4)
    x = torch.randn(5, 3, 10)
    torch.manual_seed(1)
    a = m(x)[0]
    b = m(x)[0]
    torch.manual_seed(1)
    c = m(x)[0]
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=0, rtol=0)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("lib", LIBS)
def test_RNN_change_dropout(lib, train):
    """Setting ``dropout`` between calls takes effect on the next call."""
    torch.manual_seed(0)
    m = GRUS[lib](20, 20, 2, dropout=0.0).train(train)
    x = torch.randn(5, 4, 20)
    for p in (0.0, 0.5, 0.0, 0.7, 0.0, 1.0, 1.0, 0.0, 0.0):
        m.dropout = p
        a, b = m(x)[0], m(x)[0]
        if p in (0.0, 1.0) or not train:
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        else:
            assert not torch.equal(a, b)


@pytest.mark.parametrize("lib", LIBS)
def test_RNN_dropout_warning(lib):
    with pytest.warns(UserWarning, match="dropout"):
        GRUS[lib](3, 4, num_layers=1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GRUS[lib](3, 4, num_layers=2, dropout=0.5)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("lib", LIBS)
def test_RNN_input_size_zero(lib, bidirectional):
    """An empty batch runs, forward and backward, with the right shapes."""
    x = torch.zeros(5, 0, 3, requires_grad=True)
    m = GRUS[lib](3, 4, bidirectional=bidirectional)
    out, h = m(x)
    assert out.shape == (5, 0, 8 if bidirectional else 4) and h.shape == (2 if bidirectional else 1, 0, 4)
    (gx,) = torch.autograd.grad(out.sum() + h.sum(), x, allow_unused=True, materialize_grads=True)
    assert gx.shape == x.shape


@pytest.mark.parametrize("lib", LIBS)
def test_variable_sequence(lib):
    """A packed batch of sequences of different lengths gives, output by output, state by state and gradient by
    gradient, what running each sequence alone gives (upstream: an LSTM; here the GRU, 2 layers, both ways)."""
    torch.manual_seed(0)
    lengths = [10, 10, 6, 2, 2, 1, 1]
    x_leaf = torch.randn(10, len(lengths), 3, dtype=F64, requires_grad=True)
    m = GRUS[lib](3, 4, num_layers=2, bidirectional=True, dtype=F64)
    alone = copy.deepcopy(m)
    outs, hs = [], []
    for i, n in enumerate(lengths):
        o, h = alone(x_leaf[:n, i:i + 1])
        outs.append(torch.nn.functional.pad(o, (0, 0, 0, 0, 0, 10 - n)))
        hs.append(h)
    want_out, want_h = torch.cat(outs, 1), torch.cat(hs, 1)
    packed = rnn_utils.pack_padded_sequence(x_leaf, lengths)
    p_out, p_h = m(packed)
    got_out, got_lens = rnn_utils.pad_packed_sequence(p_out)
    assert got_lens.tolist() == lengths
    _fused(lib)
    torch.testing.assert_close(got_out, want_out, atol=1e-12, rtol=0)
    torch.testing.assert_close(p_h, want_h, atol=1e-12, rtol=0)
    grad_packed = torch.autograd.grad(got_out.sum() + p_h.sum(), [x_leaf, *m.parameters()])
    grad_alone = torch.autograd.grad(want_out.sum() + want_h.sum(), [x_leaf, *alone.parameters()])
    for a, b in zip(grad_packed, grad_alone):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("lib", LIBS)
def test_rnn_retain_variables(lib):
    """Backward through a retained graph gives the same gradients every time."""
    torch.manual_seed(0)
    m = GRUS[lib](10, 20, num_layers=2)
    x = torch.randn(5, 6, 10, requires_grad=True)
    out = m(x)
    out[0].sum().backward(retain_graph=True)
    first = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    for _ in range(3):
        m.zero_grad()
        x.grad.zero_()
        out[0].sum().backward(retain_graph=True)
        for a, b in zip(first, [x.grad] + [p.grad for p in m.parameters()]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lib", LIBS)
def test_GRU_grad_and_gradgrad(lib, bias):
    torch.manual_seed(0)
    H = 3
    m = GRUS[lib](H, H, bias=bias, dtype=F64)
    x = torch.rand(1, 3, H, dtype=F64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))[0]

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params), fast_mode=True)
    f(x, *params)
    _fused(lib)


@pytest.mark.parametrize("lib", LIBS)
def test_flatten_parameters_and_deepcopy(lib):
    torch.manual_seed(0)
    m = GRUS[lib](4, 6, 2, bidirectional=True)
    x = torch.randn(5, 3, 4)
    want = m(x)[0]
    m.flatten_parameters()
    torch.testing.assert_close(m(x)[0], want, atol=0, rtol=0)
    c = copy.deepcopy(m)
    torch.testing.assert_close(c(x)[0], want, atol=0, rtol=0)
    with torch.no_grad():
        c.weight_hh_l0.add_(1.0)                                      # the copy owns its weights
    torch.testing.assert_close(m(x)[0], want, atol=0, rtol=0)
    assert not torch.equal(c(x)[0], want)
