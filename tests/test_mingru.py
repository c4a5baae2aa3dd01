"""MinGRU: the parallel log-space scan equals the sequential recurrence and the streaming step."""
from __future__ import annotations

import pytest
import torch

from grukit.nn import MinGRU, equations as eq


def test_parallel_equals_sequential_long():
    torch.manual_seed(0)
    m = MinGRU(8, 16, num_layers=2)
    x = torch.randn(2048, 3, 8)
    h0 = torch.randn(2, 3, 16)
    out_p, h_p = m(x, h0)
    m.scan = "sequential"
    out_s, h_s = m(x, h0)
    torch.testing.assert_close(out_p, out_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_p, h_s, atol=1e-5, rtol=1e-5)


def test_sequential_scan_is_the_equation():
    """The scan's recurrence is mingru_step of equations.py (the only place the gate math lives)."""
    m = MinGRU(3, 4, dtype=torch.float64)
    x = torch.randn(20, 2, 3, dtype=torch.float64)
    out, _ = m(x)
    k, a = m._gates(0, x)
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(20):
        h = eq.mingru_step(k[t], a[t], h)
        torch.testing.assert_close(out[t], h, atol=1e-12, rtol=0)


def test_step_equals_forward_and_lengths():
    m = MinGRU(3, 5, num_layers=3, batch_first=True)
    x = torch.randn(2, 30, 3)
    out, h_n = m(x)
    h, ys = None, []
    for t in range(30):
        y, h = m.step(x[:, t], h)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_n, atol=1e-5, rtol=1e-5)
    out_l, h_l = m(x, lengths=[30, 12])
    torch.testing.assert_close(h_l[:, 1], m(x[1:, :12])[1][:, 0], atol=1e-5, rtol=1e-5)
    assert torch.all(out_l[1, 12:] == 0)


def test_gradcheck_parallel_scan():
    m = MinGRU(2, 3, num_layers=2, dtype=torch.float64)
    x = torch.randn(6, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h0: m(x, h0, lengths=[6, 4])[0], (x, h0))


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_finite_for_very_long_sequences(scale):
    m = MinGRU(4, 8)
    x = torch.randn(100_000, 1, 4) * scale
    out, h = m(x)
    assert torch.isfinite(out).all() and torch.isfinite(h).all()
