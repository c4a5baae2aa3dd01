"""The extras torch lacks: gradcheck per backend, step() == forward(), and each extra against an
independent reference (torch.nn.GRUCell, F.layer_norm, per-sequence runs)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grukit.nn import GRU, backends
from grukit.nn.spec import GRUSpec

from cases import EXTRAS, all_backends

I, H, T, B = 3, 4, 5, 3
VARIANTS = {"plain": {}, **EXTRAS}


def _supports(backend: str, gru: GRU, x, training=True) -> bool:
    return backends.get(backend).supports(gru.spec, x, training) is None


@pytest.mark.parametrize("layout", ["uni", "bi-lengths"])
@pytest.mark.parametrize("extra", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("backend", all_backends())
def test_gradcheck_float64(backend, extra, layout):
    bi = layout == "bi-lengths"
    gru = GRU(I, H, num_layers=2, bidirectional=bi, dtype=torch.float64, backend="auto", **VARIANTS[extra])
    x = torch.randn(4, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 * (2 if bi else 1), B, H, dtype=torch.float64, requires_grad=True)
    if not _supports(backend, gru, x):
        pytest.skip(f"backend {backend} does not run {extra}")
    gru.backend = backend
    lengths = torch.tensor([4, 2, 3]) if bi else None
    params = list(gru.parameters())

    def f(x, h0, *ps):
        torch.manual_seed(7)  # the same dropout / zoneout masks at every evaluation
        with torch.nn.utils.stateless._reparametrize_module(gru, dict(zip(dict(gru.named_parameters()), ps))):
            out, h_n = gru(x, h0, lengths=lengths)
        return out, h_n

    # fast_mode checks random vector-Jacobian products against finite differences (torch's gradcheck docs)
    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-6, fast_mode=True)
    assert backends.last_used() == backend


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
@pytest.mark.parametrize("backend", all_backends())
def test_step_equals_forward(backend, variant):
    gru = GRU(I, H, num_layers=2, **VARIANTS[variant]).eval()
    x = torch.randn(T, B, I)
    if backends.get(backend).supports_step(gru.spec, x[0], False) is not None:
        pytest.skip(f"backend {backend} has no step for {variant}")
    h0 = torch.randn(2, B, H)
    with torch.no_grad():
        out, h_n = gru(x, h0)
        gru.backend = backend
        h, ys = h0, []
        for t in range(T):
            y, h = gru.step(x[t], h)
            ys.append(y)
    assert backends.last_used() == backend
    torch.testing.assert_close(torch.stack(ys), out, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, h_n, atol=1e-6, rtol=0)


def test_full_gradcheck_small():
    """One exhaustive (slow-mode) gradcheck of every extra together, on a tiny GRU."""
    gru = GRU(2, 2, bidirectional=True, dtype=torch.float64, **EXTRAS["all"])
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in gru.named_parameters()]

    def f(x, *ps):
        torch.manual_seed(7)
        with torch.nn.utils.stateless._reparametrize_module(gru, dict(zip(names, ps))):
            return gru(x, lengths=torch.tensor([3, 2]))

    assert torch.autograd.gradcheck(f, (x, *gru.parameters()), eps=1e-6, atol=1e-6)


def test_step_reset_mask_and_unbatched():
    gru = GRU(I, H, num_layers=2).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        h = None
        for t in range(3):
            _, h = gru.step(x[t], h)
        reset = torch.tensor([True, False, True])
        y, h2 = gru.step(x[3], h, reset=reset)
        y_fresh, _ = gru.step(x[3])                 # from zeros
        y_cont, _ = gru.step(x[3], h)
        torch.testing.assert_close(y[reset], y_fresh[reset])
        torch.testing.assert_close(y[~reset], y_cont[~reset])
        y1, h1 = gru.step(x[0, 0])                   # unbatched (I,)
        torch.testing.assert_close(y1, gru(x[:1, :1])[0][0, 0])
        assert h1.shape == (2, H)


@pytest.mark.parametrize("extra", list(EXTRAS), ids=list(EXTRAS))
def test_lengths_equal_separate_runs(extra):
    """h_n at each sequence's last valid step and zero outputs past it, for every extra (eval mode)."""
    gru = GRU(I, H, num_layers=2, bidirectional=True, **EXTRAS[extra]).eval()
    x = torch.randn(T, B, I)
    lengths = torch.tensor([T, 2, 4])
    with torch.no_grad():
        out, h_n = gru(x, lengths=lengths)
        for b in range(B):
            n = int(lengths[b])
            o_b, h_b = gru(x[:n, b:b + 1])
            torch.testing.assert_close(out[:n, b], o_b[:, 0], atol=1e-6, rtol=0)
            assert torch.all(out[n:, b] == 0)
            torch.testing.assert_close(h_n[:, b], h_b[:, 0], atol=1e-6, rtol=0)


def _torch_cell(gru: GRU) -> torch.nn.GRUCell:
    cell = torch.nn.GRUCell(gru.input_size, gru.hidden_size)
    p = gru.layer_params(0, 0)
    cell.load_state_dict({"weight_ih": p.w_ih, "weight_hh": p.w_hh, "bias_ih": p.b_ih, "bias_hh": p.b_hh})
    return cell


def test_zoneout_against_torch_cell():
    gru = GRU(I, H, zoneout=0.3)
    cell = _torch_cell(gru)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        gru.eval()
        out, _ = gru(x)
        h, expect = torch.zeros(B, H), []
        for t in range(T):
            h = 0.3 * h + 0.7 * cell(x[t], h)    # eval: the expectation of the zoneout mask
            expect.append(h)
        torch.testing.assert_close(out, torch.stack(expect), atol=1e-6, rtol=0)
        gru.train()
        out, _ = gru(x)
        h, kept = torch.zeros(B, H), 0
        for t in range(T):
            upd = cell(x[t], h)
            keep = torch.isclose(out[t], h, atol=1e-7, rtol=0)
            take = torch.isclose(out[t], upd, atol=1e-6, rtol=0)
            assert torch.all(keep | take), "each unit either keeps h_{t-1} or takes the GRU update"
            kept += int((keep & ~take).sum())
            h = out[t]
        assert 0 < kept < T * B * H


def test_recurrent_dropout_is_one_mask_per_sequence():
    """Changing column j of W_hh leaves exactly the sequences whose mask drops unit j unchanged, at all steps."""
    torch.manual_seed(0)
    gru = GRU(I, H, recurrent_dropout=0.5)
    x = torch.randn(50, 16, I)
    torch.manual_seed(3)
    out1, _ = gru(x)
    with torch.no_grad():
        gru.weight_hh_l0[:, 0] += 1.0
    torch.manual_seed(3)
    out2, _ = gru(x)
    same = (out1 - out2).abs().amax(dim=(0, 2)) == 0            # (B,)
    assert 0 < int(same.sum()) < 16, "some sequences drop unit 0 for all steps, others keep it"
    gru.eval()                                                  # off in eval: equals the plain GRU
    ref = torch.nn.GRU(I, H)
    ref.load_state_dict(gru.state_dict())
    torch.testing.assert_close(gru(x)[0], ref(x)[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("reset_after", [True, False])
def test_layer_norm_against_hand_loop(reset_after):
    gru = GRU(I, H, layer_norm=True, reset_after=reset_after)
    with torch.no_grad():
        for name, p in gru.named_parameters():
            if name.startswith("layer_norm"):
                p.normal_()
    x = torch.randn(T, B, I)
    p = gru.layer_params(0, 0)

    def ln(v, w, b):  # v (B, H), one gate
        return F.layer_norm(v, (H,), w, b)

    h, outs = torch.zeros(B, H), []
    W_i, W_h, b_i, b_h = [t.chunk(3) for t in (p.w_ih, p.w_hh, p.b_ih, p.b_hh)]
    for t in range(T):
        gi = [ln(x[t] @ W_i[k].T + b_i[k], p.ln_ih_w[k], p.ln_ih_b[k]) for k in range(3)]
        gh = [ln(h @ W_h[k].T + b_h[k], p.ln_hh_w[k], p.ln_hh_b[k]) for k in range(3)]
        r = torch.sigmoid(gi[0] + gh[0])
        z = torch.sigmoid(gi[1] + gh[1])
        if reset_after:
            n = torch.tanh(gi[2] + r * gh[2])
        else:
            n = torch.tanh(gi[2] + ln((r * h) @ W_h[2].T + b_h[2], p.ln_hh_w[2], p.ln_hh_b[2]))
        h = (1 - z) * n + z * h
        outs.append(h)
    torch.testing.assert_close(gru(x)[0], torch.stack(outs), atol=1e-6, rtol=0)


def test_dispatch_fires():
    x = torch.randn(T, B, I)
    GRU(I, H)(x)
    fastest_plain = next(n for n in backends.available()
                         if backends.get(n).supports(GRUSpec(I, H), x, True) is None)
    assert backends.last_used() == fastest_plain
    assert fastest_plain != "reference"
    GRU(I, H, layer_norm=True)(x)
    assert backends.last_used() == next(n for n in backends.available()
                                        if backends.get(n).supports(GRUSpec(I, H, layer_norm=True), x, True)
                                        is None)
    GRU(I, H, backend="aten")(x)
    assert backends.last_used() == "aten"
    GRU(I, H, zoneout=0.1, backend="reference")(x)
    assert backends.last_used() == "reference"


def test_named_backend_that_cannot_run_says_what_to_pass():
    gru = GRU(I, H, layer_norm=True, backend="aten")
    with pytest.raises(ValueError, match=r"backend='aten' cannot run.*layer_norm.*pass backend='auto'"):
        gru(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="unknown"):
        GRU(I, H, backend="cudnn9")


@pytest.mark.parametrize("extra", ["plain", "all"])
def test_deterministic_bit_identical(extra):
    kw = {} if extra == "plain" else EXTRAS["all"]
    gru = GRU(8, 16, num_layers=2, deterministic=True, **kw)
    x = torch.randn(20, 4, 8, requires_grad=True)
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        out, h = gru(x)
        g = torch.autograd.grad(out.sum() + h.sum(), [x, *gru.parameters()])
        results.append((out, h, *g))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_pickle_and_deepcopy_round_trip_after_streaming():
    import copy
    import pickle
    gru = GRU(I, H, num_layers=2).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        gru.step(x[0])                                   # fills step()'s backend cache
        for clone in (pickle.loads(pickle.dumps(gru)), copy.deepcopy(gru)):
            torch.testing.assert_close(clone(x)[0], gru(x)[0])
            torch.testing.assert_close(clone.step(x[0])[0], gru.step(x[0])[0])
        gru.double()                                     # dtype change: the step backend is chosen again
        assert gru.step(x[0].double())[0].dtype == torch.float64
