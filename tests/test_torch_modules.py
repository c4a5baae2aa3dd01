"""PyTorch's generic module tests (``test/test_modules.py``, ``TestModule``) ported to grukit, over the
``ModuleInfo`` entries of ``torch.nn.GRU`` and ``torch.nn.GRUCell`` in the installed
``torch.testing._internal.common_modules`` (their sample inputs and error inputs), with ``module_cls`` set to
grukit's class. Every test also runs with torch's own class ("torch"), so a harness artefact cannot pass as a
grukit failure. Written from the upstream tests' intent, on CPU, float32 and float64.

Ported (TestModule test -> here): test_forward, test_factory_kwargs, test_repr, test_save_load (pickle),
test_check_inference_mode, test_non_contiguous_tensors, test_grad, test_gradgrad, test_if_train_and_eval_modes_differ,
test_device_ctx_init, test_to, test_to_empty, test_errors; plus a parity check against torch.nn.GRU per sample.

Not applicable (and why):
* test_multiple_device_transfer, test_cpu_gpu_parity: need a CUDA device (the CPU engine is what is tested here).
* test_memory_format: exercises channels_last layouts of 4-D/5-D inputs; GRU inputs are 2-D/3-D.
* test_cuda_* decorators of ``rnn_gru_lstm_module_info_decorators``: expected failures of cuDNN only.
"""
from __future__ import annotations

import io
import pickle
from functools import partial

import pytest
import torch
from torch.func import functional_call
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

import grukit.nn
from grukit.errors import GrukitError
from grukit.nn import backends

INFOS = {info.module_cls.__name__: info for info in module_db if info.module_cls in (torch.nn.GRU, torch.nn.GRUCell)}
CLASSES = {("torch", "GRU"): torch.nn.GRU, ("torch", "GRUCell"): torch.nn.GRUCell,
           ("grukit", "GRU"): grukit.nn.GRU, ("grukit", "GRUCell"): grukit.nn.GRUCell}
LIBS = ["torch", "grukit"]
KINDS = ["GRU", "GRUCell"]
DTYPES = [torch.float32, torch.float64]


def _samples(kind: str, dtype, requires_grad=False, training=True):
    info = INFOS[kind]
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=requires_grad,
                                        training=training))


def _build(lib: str, kind: str, sample, dtype, seed: int = 0):
    torch.manual_seed(seed)
    a = sample.constructor_input
    return CLASSES[(lib, kind)](*a.args, **a.kwargs).to(dtype)


def _ran_fused(lib, dtype) -> None:
    if lib == "grukit":                                               # the default backend is what ran
        assert backends.last_used() == "fused_cpu"


def _flat(out):
    return [t for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_forward(lib, kind, dtype):
    """Unbatched inputs give the batched reference's outputs (upstream reference_fn), and grukit's equal torch's
    on the same weights."""
    for s in _samples(kind, dtype):
        m = _build(lib, kind, s, dtype)
        args, kw = s.forward_input.args, s.forward_input.kwargs
        out = m(*args, **kw)
        if kind == "GRU":
            _ran_fused(lib, dtype)
        ref = s.reference_fn(m, *args, **kw)                          # (ModuleInput passes a copy of m on)
        for a, b in zip(_flat(out), _flat(ref)):
            torch.testing.assert_close(a, b)
        if lib == "grukit":
            twin = _build("torch", kind, s, dtype)
            twin.load_state_dict(m.state_dict())
            tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
            for a, b in zip(_flat(out), _flat(twin(*args, **kw))):
                torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_factory_kwargs(lib, kind):
    for s in _samples(kind, torch.float32):
        a = s.constructor_input
        m = CLASSES[(lib, kind)](*a.args, **{**a.kwargs, "device": "cpu", "dtype": torch.float64})
        assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in m.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_repr(lib, kind):
    for s in _samples(kind, torch.float32):
        m = _build(lib, kind, s, torch.float32)
        text = repr(m)
        a = s.constructor_input
        size = a.args[0] if a.args else a.kwargs["input_size"]
        assert text.startswith(kind + "(") and text[len(kind) + 1:].startswith(f"{size}, ")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_save_load(lib, kind):
    for s in _samples(kind, torch.float32)[:4]:
        m = _build(lib, kind, s, torch.float32)
        args = s.forward_input.args
        with torch.no_grad():
            want = m(*args)
            m(*args)                                                   # caches and fast paths built
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        for back in (torch.load(buf, weights_only=False), pickle.loads(pickle.dumps(m))):
            with torch.no_grad():
                for a, b in zip(_flat(back(*args)), _flat(want)):
                    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_check_inference_mode(lib, kind):
    for s in _samples(kind, torch.float32):
        m = _build(lib, kind, s, torch.float32)
        args = s.forward_input.args
        with torch.no_grad():
            want = m(*args)
        with torch.inference_mode():
            got = m(*args)
        for a, b in zip(_flat(got), _flat(want)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def _non_contiguous(t: torch.Tensor) -> torch.Tensor:
    nc = torch.repeat_interleave(t.detach(), 2, dim=-1)[..., ::2]      # same values, stride 2 in the last dim
    assert not nc.is_contiguous() or t.numel() <= 1
    return nc.requires_grad_(t.requires_grad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_non_contiguous_tensors(lib, kind):
    """Non-contiguous inputs and states give the contiguous call's outputs and gradients."""
    for s in _samples(kind, torch.float64, requires_grad=True):
        m = _build(lib, kind, s, torch.float64)
        args = s.forward_input.args
        results = []
        for inputs in (args, tuple(_non_contiguous(a) for a in args)):
            m.zero_grad()
            out = _flat(m(*inputs))
            sum(o.sum() for o in out).backward()
            results.append(([o.detach() for o in out], [a.grad for a in inputs],
                            [p.grad.clone() for p in m.parameters()]))
        (o1, g1, p1), (o2, g2, p2) = results
        for a, b in zip(o1 + p1, o2 + p2):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _grad_fn(m, args):
    names = [n for n, _ in m.named_parameters()]

    def f(*xs):
        inputs, params = xs[:len(args)], xs[len(args):]
        return tuple(_flat(functional_call(m, dict(zip(names, params)), inputs)))
    return f, tuple(a.detach().requires_grad_() for a in args) + tuple(p.detach().requires_grad_()
                                                                       for p in m.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_grad(lib, kind):
    """gradcheck in float64 over the inputs and every parameter."""
    for s in _samples(kind, torch.float64, requires_grad=True):
        m = _build(lib, kind, s, torch.float64)
        f, xs = _grad_fn(m, s.forward_input.args)
        assert torch.autograd.gradcheck(f, xs, fast_mode=True)
        if kind == "GRU":
            _ran_fused(lib, torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_gradgrad(lib, kind):
    """gradgradcheck in float64 over the inputs and the first recurrent weight (upstream: every parameter;
    trimmed to keep the suite fast, the other parameters go through the same backward)."""
    for s in _samples(kind, torch.float64, requires_grad=True)[::3]:
        m = _build(lib, kind, s, torch.float64)
        args = s.forward_input.args
        name = "weight_hh_l0" if kind == "GRU" else "weight_hh"

        def f(*xs):
            return tuple(_flat(functional_call(m, {name: xs[-1]}, xs[:-1])))
        xs = tuple(a.detach().requires_grad_() for a in args) + (getattr(m, name).detach().requires_grad_(),)
        assert torch.autograd.gradgradcheck(f, xs, fast_mode=True)
        if kind == "GRU":
            _ran_fused(lib, torch.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_if_train_and_eval_modes_differ(lib, kind):
    """Without dropout, training and evaluation modes give the same outputs."""
    for s in _samples(kind, torch.float32):
        m = _build(lib, kind, s, torch.float32)
        args = s.forward_input.args
        a = _flat(m.train()(*args))
        b = _flat(m.eval()(*args))
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_device_ctx_init(lib, kind):
    for s in _samples(kind, torch.float32)[:4]:
        a = s.constructor_input
        with torch.device("meta"):
            m = CLASSES[(lib, kind)](*a.args, **a.kwargs)
        cpu = _build(lib, kind, s, torch.float32)
        assert all(p.device.type == "meta" for p in m.parameters())
        assert [(n, p.shape) for n, p in m.named_parameters()] == [(n, p.shape) for n, p in cpu.named_parameters()]


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_to(lib, kind, swap):
    """.to(dtype) converts every parameter (in place or by swapping tensors) and the module runs in it."""
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        for s in _samples(kind, torch.float32)[:4]:
            m = _build(lib, kind, s, torch.float32)
            ids = [id(p) for p in m.parameters()]
            with torch.no_grad():
                m(*s.forward_input.args)
            m.to(torch.float64)
            assert all(p.dtype == torch.float64 for p in m.parameters())
            assert [id(p) for p in m.parameters()] == ids
            twin = _build("torch", kind, s, torch.float64)
            with torch.no_grad():                                      # (torch's GRU cannot be swapped into)
                for (_, a), (_, b) in zip(twin.named_parameters(), m.named_parameters()):
                    a.copy_(b)
            args = [a.double() for a in s.forward_input.args]
            with torch.no_grad():
                for x, y in zip(_flat(m(*args)), _flat(twin(*args))):
                    torch.testing.assert_close(x, y, atol=1e-12, rtol=0)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_to_empty(lib, kind):
    for s in _samples(kind, torch.float32)[:4]:
        a = s.constructor_input
        with torch.device("meta"):
            m = CLASSES[(lib, kind)](*a.args, **a.kwargs)
        m.to_empty(device="cpu")
        m.reset_parameters()
        assert all(p.device.type == "cpu" for p in m.parameters())
        with torch.no_grad():
            out = _flat(m(*s.forward_input.args))
        assert all(torch.isfinite(o).all() for o in out)


def _errors(kind: str):
    info = INFOS[kind]
    return list(info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                              training=True))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lib", LIBS)
def test_errors(lib, kind):
    """Every error input raises torch's class for it (torch: with its message; grukit: with its own, and a
    GrukitError)."""
    cases = _errors(kind)
    assert cases
    for e in cases:
        mi = e.module_error_input
        ctor = partial(CLASSES[(lib, kind)], *mi.constructor_input.args, **mi.constructor_input.kwargs)
        with pytest.raises(e.error_type) as info:
            if e.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
                ctor()
            else:
                ctor()(*mi.forward_input.args, **mi.forward_input.kwargs)
        if lib == "torch":
            assert info.match(e.error_regex)
        else:
            assert isinstance(info.value, GrukitError), (e.error_regex, info.value)
