"""Weights are never stale: every route by which a parameter's values change is seen by the next ``GRU(x)`` and
``GRU.step`` call of the fused backend (whose kernels read packed copies of the weights), in float32 (the
compiled kernels and their fast paths) and float64 (numba), against torch.nn.GRU run on the module's current
weights. The GRUStream keeps its refresh() contract and warns at reset() when it is stale."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.utils.prune as prune
from torch.nn.utils import parametrizations, parameters_to_vector, vector_to_parameters

from grukit.errors import StaleWeightsWarning
from grukit.nn import GRU, backends

DTYPES = [torch.float32, torch.float64]


def _torch_twin(m: GRU) -> torch.nn.GRU:
    """A torch.nn.GRU holding copies of the weights ``m``'s forward reads now."""
    ref = torch.nn.GRU(m.input_size, m.hidden_size, m.num_layers, dtype=m._flat_weights[0].dtype).eval()
    with torch.no_grad():
        for name, t in zip(m._flat_weights_names, m._flat_weights):
            getattr(ref, name).copy_(t)
    return ref


def _check(m: GRU, x: torch.Tensor) -> None:
    """m(x) and m.step over x equal torch's on m's current weights, and the fused backend ran them. The twin is
    made after m's first call, which runs the hooks (pruning, weight_norm) that recompute m's weights."""
    tol = dict(atol=1e-6, rtol=0) if x.dtype == torch.float32 else dict(atol=1e-12, rtol=0)
    with torch.no_grad():
        first = m(x)
        assert backends.last_used() == "fused_cpu"
        want, want_h = _torch_twin(m)(x)
        for call in range(3):                                         # the first call, then the fast path
            got, got_h = first if call == 0 else m(x)
            assert backends.last_used() == "fused_cpu"
            torch.testing.assert_close(got, want, **tol)
            torch.testing.assert_close(got_h, want_h, **tol)
        h = None
        for t in range(x.shape[0]):
            y, h = m.step(x[t], h)
            assert backends.last_used() == "fused_cpu"
            torch.testing.assert_close(y, want[t], **tol)


def _warm(m: GRU, x: torch.Tensor) -> None:
    """Build every packed copy and note the fast paths (two calls of forward and of step)."""
    with torch.no_grad():
        for _ in range(2):
            m(x)
            m.step(x[0])
            m.step(x[0], None)


def _route_data_fill(m):
    m.weight_hh_l0.data.fill_(0.05)


def _route_data_assign(m):
    m.weight_ih_l0.data = torch.randn_like(m.weight_ih_l0)


def _route_vector_to_parameters(m):
    v = parameters_to_vector(m.parameters())
    vector_to_parameters(v * 0.5, m.parameters())


def _route_ema(m):
    with torch.no_grad():
        for p in m.parameters():
            p.data.mul_(0.9).add_(0.1 * torch.ones_like(p))


def _route_optimizer(m):
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.train()
    m(torch.randn(3, 2, m.input_size, dtype=m.weight_ih_l0.dtype))[0].sum().backward()
    opt.step()
    m.eval()


def _route_load_state_dict(m):
    other = GRU(m.input_size, m.hidden_size, dtype=m.weight_ih_l0.dtype)
    m.load_state_dict(other.state_dict())


def _route_numpy_view(m):
    m.bias_hh_l0.detach().numpy()[:] = 0.3                           # no version bump, same address


def _route_detached_inplace(m):
    with torch.no_grad():
        m.weight_hh_l0.mul_(-1.0)


ROUTES = {"data.fill_": _route_data_fill, "p.data = t": _route_data_assign,
          "vector_to_parameters": _route_vector_to_parameters, "ema via .data": _route_ema,
          "optimizer step": _route_optimizer, "load_state_dict": _route_load_state_dict,
          "numpy view": _route_numpy_view, "no_grad in place": _route_detached_inplace}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_of_change_is_seen(route, dtype):
    torch.manual_seed(0)
    m = GRU(8, 16, dtype=dtype).eval()
    x = torch.randn(5, 3, 8, dtype=dtype)
    _warm(m, x)
    ROUTES[route](m)
    _check(m, x)


def test_vector_alias_written_later_is_seen():
    """vector_to_parameters leaves the parameters as views of the vector: writing the vector changes them."""
    torch.manual_seed(0)
    m = GRU(8, 16).eval()
    x = torch.randn(5, 3, 8)
    v = parameters_to_vector(m.parameters()).clone()
    vector_to_parameters(v, m.parameters())
    _warm(m, x)
    v.mul_(0.25)                                                      # the parameters alias v's storage
    _check(m, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pruning_mask_written_in_place_is_seen(dtype):
    torch.manual_seed(0)
    m = GRU(8, 16, dtype=dtype).eval()
    x = torch.randn(5, 3, 8, dtype=dtype)
    prune.l1_unstructured(m, "weight_hh_l0", amount=0.3)
    _warm(m, x)
    _check(m, x)
    m.weight_hh_l0_mask.data.zero_()                                  # the next forward's hook recomputes w*mask
    _check(m, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_weight_norm_parametrization_is_seen(dtype):
    torch.manual_seed(0)
    m = GRU(8, 16, dtype=dtype).eval()
    x = torch.randn(5, 3, 8, dtype=dtype)
    parametrizations.weight_norm(m, "weight_hh_l0")
    _warm(m, x)
    _check(m, x)
    m.parametrizations.weight_hh_l0.original0.data.mul_(3.0)         # the gain, through .data
    _check(m, x)


def test_old_weight_norm_hook_is_seen():
    torch.manual_seed(0)
    m = GRU(8, 16).eval()
    x = torch.randn(5, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.weight_norm(m, "weight_ih_l0")
    _warm(m, x)
    m.weight_ih_l0_g.data.mul_(2.0)                                   # the hook recomputes the weight per call
    _check(m, x)


def test_unchanged_weights_are_packed_once():
    """The rule does not repack when nothing changed, nor when new tensors hold the same values."""
    torch.manual_seed(0)
    m = GRU(8, 16).eval()
    x = torch.randn(5, 3, 8)
    cache = backends.get("fused_cpu").cache
    _warm(m, x)
    before = cache.builds
    with torch.no_grad():
        for _ in range(5):
            m(x)
            m.step(x[0])
    assert cache.builds == before
    m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})   # same values, new bytes elsewhere? no:
    with torch.no_grad():                                                   # copied in place, same bytes
        m(x)
    assert cache.builds == before
    _route_data_fill(m)
    with torch.no_grad():
        m(x)
    assert cache.builds == before + 1


def test_stream_warns_at_reset_when_stale_and_refresh_clears_it():
    torch.manual_seed(0)
    m = GRU(8, 16).eval()
    x = torch.randn(5, 1, 8)
    stream = m.stream(batch_size=1)
    assert not stream.stale
    _route_data_fill(m)
    assert stream.stale
    with pytest.warns(StaleWeightsWarning, match="refresh"):
        stream.reset()
    stream.refresh()
    assert not stream.stale
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleWeightsWarning)
        stream.reset()
        ys = torch.stack([stream(x[t, 0]) for t in range(5)])
    with torch.no_grad():
        want = _torch_twin(m)(x)[0][:, 0]
    torch.testing.assert_close(ys, want, atol=1e-6, rtol=0)


def test_compiled_step_reads_the_weights_in_place():
    """The compiled float32 step keeps no copy: it reads the Parameters at their addresses (so a write by any
    route is seen with nothing to compare), and weights it cannot read in place (a non-contiguous tensor after
    ``p.data = t``) send the step to the packed path, with the same results."""
    from grukit.nn.backends import fused_cpu
    if fused_cpu.cgru() is None:
        pytest.skip("the C extension is not built: the numba step runs")
    torch.manual_seed(0)
    m = GRU(6, 20, 2).eval()
    x = torch.randn(4, 3, 6)
    cache = backends.get("fused_cpu").cache
    with torch.no_grad():
        m.step(x[0])
        read = fused_cpu.inplace_weights(m)
        assert read.ptrs == tuple(t.data_ptr() for t in m._flat_weights)
        before = cache.builds
        for t in range(3):
            m.weight_ih_l1.data[t] += 1.0                              # a write no version counter sees
            _check(m, x)
        assert cache.peek(m) is None or "streams" not in cache.peek(m).parts   # no packed step copy was made
        m.weight_hh_l0.data = m.weight_hh_l0.data.t().contiguous().t()   # same values, column-major
        assert fused_cpu.inplace_weights(m) is None
        _check(m, x)                                                  # the packed path, as correct
        assert cache.builds > before


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batched_step_through_packed_streams_sees_changes(dtype):
    """A batch of PACKED_STEP_MIN_ROWS rows or more steps through a packed stream (not in place): the weight
    cache's rule still sees a ``.data`` write and a ``p.data = t`` before the next step."""
    from grukit.nn.backends import fused_cpu
    torch.manual_seed(0)
    m = GRU(8, 16, dtype=dtype).eval()
    x = torch.randn(5, fused_cpu.PACKED_STEP_MIN_ROWS + 2, 8, dtype=dtype)
    _warm(m, x)
    _route_data_fill(m)
    _check(m, x)
    m.weight_ih_l0.data = torch.randn_like(m.weight_ih_l0)
    _check(m, x)
    if dtype == torch.float32 and fused_cpu.cgru() is not None:
        assert "streams" in backends.get("fused_cpu").cache.peek(m).parts
