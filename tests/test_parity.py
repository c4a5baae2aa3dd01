"""Parity of every backend with torch.nn.GRU over the shared table (outputs, h_n, every gradient)."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from grukit.nn import GRU, GRUCell, backends
from grukit.nn.spec import GRUSpec

from cases import TORCH_CASES, Case, all_backends

I, H, T, B = 5, 4, 6, 3
TOL = {torch.float32: dict(out=1e-6, grad=1e-5), torch.float64: dict(out=1e-10, grad=1e-10)}


def _pair(case: Case, backend: str, dtype):
    kw = dict(num_layers=case.num_layers, bias=case.bias, batch_first=case.batch_first,
              bidirectional=case.bidirectional, dtype=dtype)
    ref = torch.nn.GRU(I, H, **kw)
    ours = GRU(I, H, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _inputs(case: Case, dtype):
    D = 2 if case.bidirectional else 1
    shape = (T, I) if case.kind == "unbatched" else ((B, T, I) if case.batch_first else (T, B, I))
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    hshape = (case.num_layers * D, H) if case.kind == "unbatched" else (case.num_layers * D, B, H)
    h0 = torch.randn(hshape, dtype=dtype, requires_grad=True) if case.h0 else None
    lengths = torch.tensor([T, 2, 4]) if case.kind in ("packed", "lengths") else None
    return x, h0, lengths


def _run(module, case: Case, x, h0, lengths, torch_side: bool):
    """Run ``module``; return padded outputs (zeros past lengths) and h_n."""
    if case.kind == "packed" or (case.kind == "lengths" and torch_side):
        packed = pack_padded_sequence(x, lengths, batch_first=case.batch_first, enforce_sorted=False)
        out, h_n = module(packed, h0)
        assert isinstance(out, PackedSequence)
        out, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=T)
        return out, h_n
    if case.kind == "lengths":
        return module(x, h0, lengths=lengths)
    return module(x, h0)


def _grads(out, h_n, tensors, weights):
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + \
        (h_n * torch.randn(h_n.shape, generator=g, dtype=out.dtype)).sum()
    return torch.autograd.grad(loss, [t for t in tensors if t is not None] + list(weights))


def _supported(backend: str, dtype) -> bool:
    x = torch.zeros(1, 1, I, dtype=dtype)
    return backends.get(backend).supports(GRUSpec(I, H), x, True) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", all_backends())
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_matches_torch_gru(case: Case, backend: str, dtype):
    if not _supported(backend, dtype):
        pytest.skip(f"backend {backend} does not run the plain GRU in {dtype}")
    ref, ours = _pair(case, backend, dtype)
    x, h0, lengths = _inputs(case, dtype)
    out_r, h_r = _run(ref, case, x, h0, lengths, torch_side=True)
    out_o, h_o = _run(ours, case, x, h0, lengths, torch_side=False)
    assert backends.last_used() == backend
    tol = TOL[dtype]
    torch.testing.assert_close(out_o, out_r, atol=tol["out"], rtol=0)
    torch.testing.assert_close(h_o, h_r, atol=tol["out"], rtol=0)
    g_r = _grads(out_r, h_r, [x, h0], ref.parameters())
    g_o = _grads(out_o, h_o, [x, h0], ours.parameters())
    for a, b in zip(g_o, g_r):
        torch.testing.assert_close(a, b, atol=tol["grad"], rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_gru_cell_matches_torch(bias: bool, batched: bool):
    ref = torch.nn.GRUCell(I, H, bias=bias)
    ours = GRUCell(I, H, bias=bias)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn((B, I) if batched else (I,), requires_grad=True)
    h = torch.randn((B, H) if batched else (H,), requires_grad=True)
    torch.testing.assert_close(ours(x, h), ref(x, h), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    g1 = torch.autograd.grad(ours(x, h).square().sum(), [x, h, *ours.parameters()])
    g2 = torch.autograd.grad(ref(x, h).square().sum(), [x, h, *ref.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,args", [(GRU, dict(num_layers=2, bidirectional=True)), (GRUCell, {})])
def test_same_init_and_state_dict_both_ways(cls, args):
    torch.manual_seed(123)
    ours = cls(I, H, **args)
    torch.manual_seed(123)
    ref = getattr(torch.nn, cls.__name__)(I, H, **args)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    # and a torch module loads ours
    ours2 = cls(I, H, **args)
    ref.load_state_dict(ours2.state_dict())
    for a, b in zip(ours2.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    ours = GRU(I, H, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, I)
    ours.eval()
    ref = torch.nn.GRU(I, H, num_layers=2, dropout=0.5).eval()
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-6, rtol=0)
    ours.train()
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.allclose(a, b), "dropout in training should make two passes differ"


def _family(backend: str, dtype, grad: bool) -> str:
    """The kernel family ``backends.last_kernel()`` must report for a call of ``backend``."""
    if backend != "fused_cpu":
        return backend
    if grad:
        return "fused_cpu/numba+autograd"
    from grukit.nn.backends.fused_cpu import cgru
    return "fused_cpu/compiled" if dtype == torch.float32 and cgru() is not None else "fused_cpu/numba"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", all_backends())
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_matches_torch_gru_without_autograd(case: Case, backend: str, dtype):
    """The same table with autograd off, so the inference kernels (the compiled C ones in float32, and their
    fast path on the second call) join the parity table; the kernel family that ran is asserted."""
    if not _supported(backend, dtype):
        pytest.skip(f"backend {backend} does not run the plain GRU in {dtype}")
    ref, ours = _pair(case, backend, dtype)
    ours.eval()
    ref.eval()
    x, h0, lengths = _inputs(case, dtype)
    tol = TOL[dtype]
    with torch.no_grad():
        out_r, h_r = _run(ref, case, x, h0, lengths, torch_side=True)
        for _ in range(2):                                            # the general path, then the fast path
            out_o, h_o = _run(ours, case, x, h0, lengths, torch_side=False)
            assert backends.last_used() == backend
            assert backends.last_kernel() == _family(backend, dtype, grad=False)
            torch.testing.assert_close(out_o, out_r, atol=tol["out"], rtol=0)
            torch.testing.assert_close(h_o, h_r, atol=tol["out"], rtol=0)
    _run(ours, case, x, h0, lengths, torch_side=False)
    assert backends.last_kernel() == _family(backend, dtype, grad=True)
