"""Higher-order and batched gradients on the default backend: double backward (gradgradcheck in float64) through
the fused kernels' differentiable backward, ``is_grads_batched=True``, and the torch.func transforms (vmap,
jacrev, functional_call, stack_module_state), which GRU routes to the reference backend (torch ops)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, jacrev, stack_module_state, vmap

from grukit.nn import GRU, backends

F64 = torch.float64
EXTRAS = {"plain": {}, "cho": dict(reset_after=False), "no_bias": dict(bias=False),
          "bidir_2layers": dict(bidirectional=True, num_layers=2), "zoneout_eval": dict(zoneout=0.3),
          "recurrent_dropout_eval": dict(recurrent_dropout=0.3)}


def _model(**kw) -> GRU:
    torch.manual_seed(0)
    return GRU(3, 4, dtype=F64, **kw).eval()


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_gradgradcheck_through_the_fused_backend(extra, lengths):
    """Second derivatives with respect to the input, the state and the recurrent weights (tiny sizes: every
    gradgradcheck entry is a backward through the recomputed layer)."""
    torch.manual_seed(0)
    m = GRU(2, 2, dtype=F64, **EXTRAS[extra]).eval()
    D = 2 if m.bidirectional else 1
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    h = torch.randn(m.num_layers * D, 2, 2, dtype=F64, requires_grad=True)
    lens = torch.tensor([3, 2]) if lengths else None
    w = m.weight_hh_l0.detach().clone().requires_grad_()

    def f(x, h, w):
        return functional_call(m, {"weight_hh_l0": w}, (x, h), {"lengths": lens})

    assert torch.autograd.gradgradcheck(f, (x, h, w))
    f(x, h, w)
    assert backends.last_used() == "fused_cpu"


def test_gradient_penalty_matches_the_reference_backend():
    """A second derivative (the gradient norm's gradient) equals the reference backend's."""
    got = []
    for backend in ("fused_cpu", "reference"):
        m = _model(backend=backend)
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        out = m(x)[0]
        assert backends.last_used() == backend
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        got.append(torch.autograd.grad(gx.pow(2).sum(), list(m.parameters())))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_is_grads_batched_gives_the_jacobian():
    m = _model(bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    y = m(x)[0]
    assert backends.last_used() == "fused_cpu"
    eye = torch.eye(y.numel(), dtype=F64).view(-1, *y.shape)
    (jb,) = torch.autograd.grad(y, x, eye, is_grads_batched=True)
    want = torch.autograd.functional.jacobian(lambda x: m(x)[0], x)
    torch.testing.assert_close(jb.view(want.shape), want, atol=1e-12, rtol=0)


def test_jacrev_and_vmap_route_to_the_reference_backend():
    m = _model()
    x = torch.randn(5, 2, 3, dtype=F64)
    J = jacrev(lambda x: m(x)[0])(x)
    assert backends.last_used() == "reference"
    want = torch.autograd.functional.jacobian(lambda x: m(x)[0], x)
    torch.testing.assert_close(J, want, atol=1e-12, rtol=0)
    xs = torch.randn(3, 5, 2, 3, dtype=F64)
    ys = vmap(lambda x: m(x)[0])(xs)
    assert backends.last_used() == "reference"
    torch.testing.assert_close(ys, torch.stack([m(v)[0] for v in xs]), atol=1e-12, rtol=0)
    steps = vmap(lambda v: m.step(v)[0])(xs[:, 0])
    torch.testing.assert_close(steps, torch.stack([m.step(v)[0] for v in xs[:, 0]]), atol=1e-12, rtol=0)


def test_vmap_over_stacked_gru_weights():
    """An ensemble of GRUs run as one vmapped call (torch.func.stack_module_state); torch.nn.GRU has no batching
    rule for aten::gru (pytorch #134606)."""
    torch.manual_seed(0)
    models = [GRU(3, 4, dtype=F64).eval() for _ in range(3)]
    params, bufs = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(5, 2, 3, dtype=F64)
    out = vmap(lambda p, b: functional_call(base, (p, b), (x,))[0])(params, bufs)
    torch.testing.assert_close(out, torch.stack([m(x)[0] for m in models]), atol=1e-12, rtol=0)
    grads = torch.func.grad(lambda p: vmap(lambda q: functional_call(base, (q, {}), (x,))[0])(p).sum())(params)
    for i, m in enumerate(models):
        m.zero_grad()
        m(x)[0].sum().backward()
        torch.testing.assert_close(grads["weight_hh_l0"][i], m.weight_hh_l0.grad, atol=1e-12, rtol=0)
