"""Numerical health of the engine: long sequences and huge inputs stay finite in float32."""
from __future__ import annotations

import pytest
import torch

from grukit.nn import GRU, backends


@pytest.mark.parametrize("backend", [b for b in backends.available() if b != "reference"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_finite_for_100k_steps_and_huge_inputs(backend, reset_after):
    gru = GRU(4, 8, reset_after=reset_after)
    x = torch.randn(100_000, 1, 4) * 1e4
    if backends.get(backend).supports(gru.spec, x, False) is not None:
        pytest.skip(f"backend {backend} does not run reset_after={reset_after}")
    gru.backend = backend
    with torch.no_grad():
        out, h = gru(x)
    assert torch.isfinite(out).all() and torch.isfinite(h).all()
    assert out.abs().max() <= 1.0                          # a GRU state is a convex mix of tanh values
    x = x[:5_000].clone().requires_grad_(True)             # gradients through a long (shorter) sequence
    out, _ = gru(x)
    out[-1].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_reference_finite_for_huge_inputs():
    gru = GRU(4, 8, layer_norm=True, zoneout=0.1, backend="reference")
    out, _ = gru(torch.randn(2_000, 2, 4) * 1e4)
    assert torch.isfinite(out).all()
