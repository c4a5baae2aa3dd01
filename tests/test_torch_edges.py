"""Edges where grukit behaves as torch.nn.GRU / GRUCell does: empty batches, no hidden units, zero-length
sequences, the exception classes torch raises for the same mistakes (with grukit's messages), settable
``dropout``, ``_flat_weights``, and the float32 bound (within 1e-6 of torch.nn.GRU). Each case runs torch
first, so a harness artefact cannot pass as a grukit failure."""
from __future__ import annotations

import pytest
import torch

from grukit.errors import ArgumentTypeError, ConfigError, GrukitError, ShapeError, SizeMismatchError
from grukit.nn import GRU, GRUCell, backends

ENGINE = {"torch": (torch.nn.GRU, torch.nn.GRUCell), "grukit": (GRU, GRUCell)}


@pytest.mark.parametrize("lib", list(ENGINE))
@pytest.mark.parametrize("backend", ["auto", "fused_cpu", "aten", "reference"])
def test_empty_batch(lib, backend):
    gru_cls, _ = ENGINE[lib]
    if lib == "torch" and backend != "auto":
        pytest.skip("torch has one backend")
    kw = {} if lib == "torch" else {"backend": backend}
    m = gru_cls(3, 4, num_layers=2, bidirectional=True, **kw)
    x = torch.zeros(5, 0, 3, requires_grad=True)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out, h = m(x)
        assert out.shape == (5, 0, 8) and h.shape == (4, 0, 4)
    out.sum().backward() if out.requires_grad else None
    if lib == "grukit":
        with torch.no_grad():
            y, h = m.eval().step(torch.zeros(0, 3)) if not m.bidirectional else (torch.zeros(0, 4), None)
        assert y.shape == (0, 4)


@pytest.mark.parametrize("lib", list(ENGINE))
def test_empty_batch_step_and_cell(lib):
    gru_cls, cell_cls = ENGINE[lib]
    assert cell_cls(10, 4)(torch.zeros(0, 10)).shape == (0, 4)
    assert cell_cls(10, 0)(torch.zeros(2, 10)).shape == (2, 0)        # a cell with no units
    if lib == "grukit":
        y, h = gru_cls(3, 4, num_layers=2).eval().step(torch.zeros(0, 3))
        assert y.shape == (0, 4) and h.shape == (2, 0, 4)


@pytest.mark.parametrize("lib", list(ENGINE))
def test_zero_length_sequence_and_no_units(lib):
    gru_cls, _ = ENGINE[lib]
    with pytest.raises(RuntimeError):
        gru_cls(3, 4)(torch.zeros(0, 2, 3))
    with pytest.raises(ValueError):
        gru_cls(3, 0)


CONSTRUCTION = [  # (args, kwargs, the class torch raises)
    ((3, 5), dict(bias=1), TypeError), ((3.0, 5), {}, TypeError), ((3, 5), dict(batch_first=1), TypeError),
    ((3, 5), dict(num_layers=1.5), TypeError), ((3, 5), dict(proj_size=10), ValueError),
    ((3, 5), dict(num_layers=0), ValueError), ((3, 5), dict(dropout=2.0), ValueError),
    ((3, 5), dict(dropout=True), ValueError), ((3, -1), {}, ValueError), ((0, 5), {}, ValueError),
]


@pytest.mark.parametrize("args,kwargs,cls", CONSTRUCTION, ids=lambda v: repr(v)[:20])
def test_construction_errors_are_torchs_class(args, kwargs, cls):
    with pytest.raises(cls):
        torch.nn.GRU(*args, **kwargs)
    with pytest.raises(cls) as e:
        GRU(*args, **kwargs)
    assert isinstance(e.value, GrukitError) and isinstance(e.value, ConfigError)
    assert isinstance(e.value, ArgumentTypeError) == (cls is TypeError)


def _calls():
    x = torch.zeros(5, 2, 3)
    return [  # (call on a GRU(3, 4) or GRUCell(3, 4), the class torch raises, grukit's message)
        ("gru", (torch.zeros(5, 2, 4),), RuntimeError, "features per step"),
        ("gru", (x, torch.zeros(1, 3, 4)), RuntimeError, "hx must have shape"),
        ("gru", (torch.zeros(5, 2, 3, 1),), ValueError, "must be 3-D"),
        ("gru", (x.double(),), ValueError, "dtype"),
        ("gru", (torch.zeros(5, 2, 3, dtype=torch.int64),), ValueError, "floating-point"),
        ("cell", (torch.zeros(2, 4),), RuntimeError, "features"),
        ("cell", (torch.zeros(2, 3), torch.zeros(3, 4)), RuntimeError, "hx must have shape"),
        ("cell", (torch.zeros(2, 3), torch.zeros(2, 5)), RuntimeError, "hx must have shape"),
        ("cell", (torch.zeros(2, 3, 1),), ValueError, "must be"),
    ]


@pytest.mark.parametrize("case", range(len(_calls())))
def test_call_errors_are_torchs_class_with_grukits_message(case):
    kind, args, cls, msg = _calls()[case]
    ref = torch.nn.GRU(3, 4) if kind == "gru" else torch.nn.GRUCell(3, 4)
    ours = GRU(3, 4) if kind == "gru" else GRUCell(3, 4)
    with pytest.raises(cls):
        ref(*args)
    with pytest.raises(cls, match=msg) as e:
        ours(*args)
    assert isinstance(e.value, ShapeError)
    assert isinstance(e.value, SizeMismatchError) == (cls is RuntimeError)


def test_dropout_is_settable_and_checked():
    m = GRU(3, 4, num_layers=2)
    m.dropout = 0.5
    assert m.dropout == 0.5 and m.spec.dropout == 0.5
    torch.manual_seed(0)
    a = m(torch.ones(4, 2, 3))[0]
    m.dropout = 0.0
    b = m(torch.ones(4, 2, 3))[0]
    assert not torch.equal(a, b)                                       # the new value is the one that runs
    with pytest.raises(ValueError, match="dropout"):
        m.dropout = 2.0
    m.batch_first = True
    assert m(torch.zeros(2, 4, 3))[0].shape == (2, 4, 4)


def test_flat_weights_match_torch():
    ref, ours = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True), GRU(3, 4, num_layers=2, bidirectional=True)
    assert ours._flat_weights_names == ref._flat_weights_names
    assert [tuple(w.shape) for w in ours._flat_weights] == [tuple(w.shape) for w in ref._flat_weights]
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters()))


@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True), dict(bias=False)],
                         ids=["plain", "2layer_bidir", "no_bias"])
@pytest.mark.parametrize("H", [8, 64, 200])
def test_float32_within_1e6_of_torch(kw, H):
    """The README's bound: float32 results within 1e-6 of torch.nn.GRU (the compiled kernels' fast tanh and
    sigmoid differ from torch's by up to ~3e-7), forward and step, batched and not."""
    torch.manual_seed(H)
    ref = torch.nn.GRU(H, H, **kw).eval()
    ours = GRU(H, H, **kw).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(50, 3, H) * 2
    with torch.no_grad():
        want, want_h = ref(x)
        for _ in range(2):
            got, got_h = ours(x)
            assert backends.last_used() == "fused_cpu"
            assert (got - want).abs().max() <= 1e-6 and (got_h - want_h).abs().max() <= 1e-6
        if not ours.bidirectional:
            h = None
            for t in range(10):
                y, h = ours.step(x[t], h)
                assert (y - want[t, :, -H:]).abs().max() <= 1e-6
