"""The opt-in ``GRU.frozen_weights()`` scope: inside it the fused backend checks its packed copy of the weights
once (on the first call) and then trusts it, so changes made inside are NOT seen; after the scope exits (also
through an exception, and only when the outermost of nested or concurrent entries exits) every call checks
again and sees them. Outputs are compared with torch.nn.GRU run on the weights that should be in use."""
from __future__ import annotations

import threading

import pytest
import torch

from grukit.errors import ConfigError
from grukit.nn import GRU, backends, frozen_weights
from grukit.nn.backends import fused_cpu
from grukit.nn.backends.weight_cache import frozen_now

DTYPES = [torch.float32, torch.float64]


def _twin(m: GRU) -> torch.nn.GRU:
    """A torch.nn.GRU holding copies of ``m``'s weights now."""
    ref = torch.nn.GRU(m.input_size, m.hidden_size, m.num_layers, dtype=m.weight_ih_l0.dtype).eval()
    with torch.no_grad():
        for name in m._flat_weights_names:
            getattr(ref, name).copy_(getattr(m, name))
    return ref


def _calls(m: GRU, x: torch.Tensor, step: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Forward twice (general then fast path) and (``step``) step over x twice (idem): the outputs (T, B, H) and
    h_n."""
    out = []
    with torch.no_grad():
        for _ in range(2):
            out.append(m(x))
            assert backends.last_used() == "fused_cpu"
        for _ in range(2 if step else 0):
            h, ys = None, []
            for t in range(x.shape[0]):
                y, h = m.step(x[t], h)
                assert backends.last_used() == "fused_cpu"
                ys.append(y)
            out.append((torch.stack(ys), h))
    return out


def _assert_like(m_calls, ref: torch.nn.GRU, x: torch.Tensor) -> None:
    tol = dict(atol=1e-6, rtol=0) if x.dtype == torch.float32 else dict(atol=1e-12, rtol=0)
    with torch.no_grad():
        want, want_h = ref(x)
    for got, got_h in m_calls:
        torch.testing.assert_close(got, want, **tol)
        torch.testing.assert_close(got_h, want_h, **tol)


def _model(dtype, layers=2):
    torch.manual_seed(0)
    m = GRU(3, 5, layers, backend="fused_cpu", dtype=dtype).eval()
    x = torch.randn(4, 2, 3, dtype=dtype)                             # (T, B, I)
    return m, x


@pytest.mark.parametrize("dtype", DTYPES)
def test_changes_inside_are_not_seen_and_seen_after_exit(dtype):
    m, x = _model(dtype)
    _calls(m, x)                                                      # packed copies built outside
    with m.frozen_weights() as got:
        assert got is m and frozen_now(m)
        with torch.no_grad():
            m.weight_hh_l0.mul_(0.5)                                  # before the first call inside: seen
        old = _twin(m)
        _assert_like(_calls(m, x), old, x)
        with torch.no_grad():
            m.weight_hh_l0.mul_(-2.0)                                 # after it: not seen by the packed copies
            m.bias_ih_l1.add_(1.0)
            m.bias_hh_l0.add_(-1.0)
        compiled_step = dtype == torch.float32 and fused_cpu.cgru() is not None
        _assert_like(_calls(m, x, step=not compiled_step), old, x)
        if compiled_step:                                             # the compiled step has no copy: seen
            _assert_like(_calls(m, x)[2:], _twin(m), x)
    assert not frozen_now(m)
    _assert_like(_calls(m, x), _twin(m), x)                           # the normal rule again


def test_each_scope_checks_again_on_entry():
    m, x = _model(torch.float32)
    with m.frozen_weights():
        _calls(m, x)
    with torch.no_grad():
        m.weight_ih_l0.add_(0.25)                                     # between two scopes
    with m.frozen_weights():
        _assert_like(_calls(m, x), _twin(m), x)


def test_nested_scopes_end_with_the_outermost():
    m, x = _model(torch.float32)
    with m.frozen_weights():
        _calls(m, x)
        old = _twin(m)
        with m.frozen_weights():
            with torch.no_grad():
                m.weight_hh_l1.mul_(3.0)
        assert frozen_now(m)                                          # the inner exit keeps the scope
        _assert_like(_calls(m, x, step=fused_cpu.cgru() is None), old, x)
    assert not frozen_now(m)
    _assert_like(_calls(m, x), _twin(m), x)


def test_an_exception_ends_the_scope():
    m, x = _model(torch.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with m.frozen_weights():
            _calls(m, x)
            with torch.no_grad():
                m.weight_hh_l0.mul_(-1.0)
            raise RuntimeError("boom")
    assert not frozen_now(m)
    _assert_like(_calls(m, x), _twin(m), x)


def test_a_scope_shared_with_a_worker_thread():
    m, x = _model(torch.float32)
    entered, leave = threading.Event(), threading.Event()

    def worker():
        with m.frozen_weights():
            entered.set()
            leave.wait(10)

    t = threading.Thread(target=worker)
    with m.frozen_weights():
        t.start()
        assert entered.wait(10)
    assert frozen_now(m)                                              # the worker is still inside
    leave.set()
    t.join(10)
    assert not frozen_now(m)
    with torch.no_grad():
        m.weight_hh_l0.mul_(0.5)
    _assert_like(_calls(m, x), _twin(m), x)


def test_frozen_weights_function_finds_every_gru_in_models():
    torch.manual_seed(1)
    a = GRU(3, 5, backend="fused_cpu").eval()
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), a)
    b = GRU(3, 4, backend="fused_cpu").eval()
    with frozen_weights(model, b, a, torch.nn.Linear(2, 2)):          # a twice, and a module without a GRU
        assert frozen_now(a) and frozen_now(b)
    assert not frozen_now(a) and not frozen_now(b)
    with pytest.raises(ConfigError, match="takes torch modules, got str"):
        with frozen_weights(a, "encoder"):
            pass
    assert not frozen_now(a)


def test_language_generate_holds_the_scope_while_it_runs():
    from grukit.data.text import Vocab
    from grukit.tasks import language as lm
    from grukit.tasks.language_config import LMConfig
    torch.manual_seed(0)
    chars = list("abc \n")
    cfg = LMConfig(data="x", hidden_size=8, embedding_size=8, num_layers=1, tokenize="char")
    model = lm.LMTask(cfg, {"vocab_size": len(chars), "tokenize": "char", "input_size": 8}).eval()
    meta = {"vocab": Vocab(kind="char", itos=chars).to_dict()}
    gen = lm.generate(model, meta, ["ab", "c"], 5, 0.0, seed=0)
    assert not frozen_now(model.encoder)
    next(gen)
    assert frozen_now(model.encoder)                                  # the token loop runs inside the scope
    gen.close()
    assert not frozen_now(model.encoder)                              # closing the generator ends it
    assert len(list(lm.generate(model, meta, ["ab"], 4, 0.0, seed=0))) == 4
    assert not frozen_now(model.encoder)
