"""GRUStream: frame-by-frame inference equals forward() for every variant it runs, on the fused kernel and on
the fallback path, with resets, state access, weight refresh and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grukit.errors import ConfigError, ShapeError
from grukit.nn import GRU, backends

VARIANTS = [dict(), dict(num_layers=3), dict(reset_after=False, num_layers=2), dict(bias=False),
            dict(zoneout=0.3), dict(input_size=5, num_layers=2, hidden_size=7)]


def _frames(gru, stream, x):
    return torch.stack([stream(x[t]) for t in range(x.shape[0])])              # (T, B, H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_stream_equals_forward(kw, dtype):
    torch.manual_seed(0)
    kw = {"input_size": 6, "hidden_size": 9, **kw}
    gru = GRU(**kw, dtype=dtype).eval()
    x = torch.randn(12, 3, kw["input_size"], dtype=dtype)
    h0 = torch.randn(gru.spec.num_layers, 3, kw["hidden_size"], dtype=dtype)
    stream = gru.stream(batch_size=3, h0=h0)
    assert stream.backend == "fused_cpu"
    with torch.no_grad():
        ref, h_n = gru(x, h0)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(_frames(gru, stream, x), ref, **tol)
    torch.testing.assert_close(stream.state, h_n, **tol)
    stream.reset()                                                               # back to h0
    torch.testing.assert_close(_frames(gru, stream, x), ref, **tol)


def test_fallback_backend_and_unbatched_frames():
    torch.manual_seed(1)
    gru = GRU(4, 5, num_layers=2, layer_norm=True).eval()                     # no fused kernel for this
    stream = gru.stream()
    assert stream.backend != "fused_cpu"
    x = torch.randn(7, 4)
    with torch.no_grad():
        ref, _ = gru(x)
    got = torch.stack([stream(x[t]) for t in range(7)])                         # (I,) frames -> (H,)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    stream.reset()
    first = stream(x[0].numpy())                                                # numpy in, numpy out
    assert isinstance(first, np.ndarray) and np.allclose(first, ref[0].numpy(), atol=1e-6)


def test_reset_mask_state_setter_and_refresh():
    torch.manual_seed(2)
    gru = GRU(3, 4).eval()
    x = torch.randn(5, 2, 3)
    stream = gru.stream(batch_size=2)
    for t in range(5):
        stream(x[t])
    before = stream.state
    stream.reset(torch.tensor([True, False]))
    after = stream.state
    assert torch.equal(after[:, 0], torch.zeros(1, 4)) and torch.equal(after[:, 1], before[:, 1])
    stream.state = before
    assert torch.equal(stream.state, before)
    with torch.no_grad():
        gru.weight_hh_l0.mul_(0.5)
        ref, _ = gru(x)
    stream.refresh()                                                            # snapshot taken again
    torch.testing.assert_close(_frames(gru, stream, x), ref, atol=1e-6, rtol=1e-6)
    assert backends.last_used() is not None


def test_stream_errors():
    gru = GRU(3, 4)
    stream = gru.stream(batch_size=2)
    with pytest.raises(ShapeError, match=r"frame must have shape \(2, 3\).*got \(2, 5\)"):
        stream(torch.zeros(2, 5))
    with pytest.raises(ShapeError, match="dtype torch.float64"):
        stream(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match="h0 must have shape"):
        gru.stream(batch_size=2, h0=torch.zeros(1, 3, 4))
    with pytest.raises(ShapeError, match="mask must be a bool tensor"):
        stream.reset(torch.tensor([1, 0]))
    with pytest.raises(ConfigError, match="bidirectional"):
        GRU(3, 4, bidirectional=True).stream()
    with pytest.raises(ConfigError, match="batch_size"):
        gru.stream(batch_size=0)


def test_numpy_frames_give_numpy_states():
    torch.manual_seed(3)
    gru = GRU(3, 4, num_layers=2).eval()
    x = torch.randn(6, 3)
    with torch.no_grad():
        ref, _ = gru(x)
    stream = gru.stream()
    got = [stream(x[t].numpy()) for t in range(6)]                              # (I,) numpy frames
    assert all(type(g) is np.ndarray and g.shape == (4,) for g in got)
    torch.testing.assert_close(torch.from_numpy(np.stack(got)), ref, atol=1e-6, rtol=1e-6)
    stream.reset()
    frame = torch.randn(3, 2).numpy()[:, 0]                                     # (3,) not C-contiguous
    first = stream(frame)
    stream.reset()
    assert np.array_equal(first, stream(frame.copy()))
    with pytest.raises(ShapeError, match="dtype float64"):
        stream(x[0].double().numpy())
