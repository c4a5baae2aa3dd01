"""What is specific to the fused_cpu backend: dispatch under auto, the options torch lacks against the
reference, the streaming step, gradcheck, determinism and the compiled-kernel cache.

Forward and gradient parity of the plain GRU runs in test_parity.py over the shared table.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from grukit.errors import BackendError  # noqa: E402
from grukit.nn import GRU, backends  # noqa: E402
from grukit.nn.backends import fused_cpu  # noqa: E402
from grukit.nn.spec import GRUSpec  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, T, B = 5, 6, 7, 3


def _pair(dtype, **kw):
    torch.manual_seed(0)
    ref = GRU(I, H, dtype=dtype, backend="reference", **kw)
    ours = GRU(I, H, dtype=dtype, backend="fused_cpu", **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _loss_grads(module, out, h_n, inputs):
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + \
        (h_n * torch.randn(h_n.shape, generator=g, dtype=out.dtype)).sum()
    return torch.autograd.grad(loss, inputs + list(module.parameters()))


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=0)


# ---------------------------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])
def test_auto_runs_fused_cpu_on_cpu(dtype, training):
    gru = GRU(I, H, num_layers=2, dtype=dtype).train(training)
    x = torch.randn(T, B, I, dtype=dtype)
    out, _ = gru(x)
    assert backends.last_used() == "fused_cpu"
    if training:
        out.sum().backward()
        assert backends.last_used() == "fused_cpu"
        assert all(p.grad is not None for p in gru.parameters())
    with torch.no_grad():
        gru.eval().step(x[0])
    assert backends.last_used() == "fused_cpu"


def test_fused_cpu_has_top_priority():
    assert backends.available()[0] == "fused_cpu"


@pytest.mark.parametrize("kw, training, dtype, why", [
    (dict(layer_norm=True), False, torch.float32, "layer_norm"),
    (dict(zoneout=0.2), True, torch.float32, "zoneout"),
    (dict(recurrent_dropout=0.2), True, torch.float32, "recurrent_dropout"),
    ({}, False, torch.bfloat16, "float32 and float64"),
])
def test_declines_what_it_does_not_run(kw, training, dtype, why):
    spec = GRUSpec(I, H, **kw)
    reason = backends.get("fused_cpu").supports(spec, torch.zeros(T, B, I, dtype=dtype), training)
    assert reason is not None and why in reason
    if dtype == torch.float32:                    # auto falls back honestly; a named request says what to pass
        gru = GRU(I, H, **kw).train(training)
        gru(torch.randn(T, B, I))
        assert backends.last_used() != "fused_cpu"
        named = GRU(I, H, backend="fused_cpu", **kw).train(training)
        with pytest.raises(BackendError, match="backend='auto'"):
            named(torch.randn(T, B, I))


# ---------------------------------------------------------------------------------------------- extras
EXTRAS = {
    "cho": (dict(reset_after=False), True),
    "cho-bi-L2": (dict(reset_after=False, bidirectional=True, num_layers=2), True),
    "zoneout-eval": (dict(zoneout=0.3, num_layers=2), False),
    "cho-zoneout-eval-bi": (dict(reset_after=False, zoneout=0.3, bidirectional=True), False),
    "recurrent-dropout-eval": (dict(recurrent_dropout=0.4), False),
    "dropout-train": (dict(dropout=0.5, num_layers=3, bidirectional=True), True),
    "nobias-cho": (dict(bias=False, reset_after=False, num_layers=2), True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [None, [7, 2, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(EXTRAS))
def test_extras_match_reference(name, lengths, dtype):
    kw, training = EXTRAS[name]
    ref, ours = _pair(dtype, **kw)
    ref.train(training)
    ours.train(training)
    D = 2 if ours.bidirectional else 1
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(ours.num_layers * D, B, H, dtype=dtype, requires_grad=True)
    torch.manual_seed(5)
    out_r, h_r = ref(x, h0, lengths=lengths)
    torch.manual_seed(5)
    out_o, h_o = ours(x, h0, lengths=lengths)
    assert backends.last_used() == "fused_cpu"
    _close(out_o, out_r, dtype)
    _close(h_o, h_r, dtype)
    for a, b in zip(_loss_grads(ours, out_o, h_o, [x, h0]), _loss_grads(ref, out_r, h_r, [x, h0])):
        _close(a, b, dtype)


@pytest.mark.parametrize("kw", [dict(), dict(reset_after=False), dict(bidirectional=True, num_layers=2),
                                dict(reset_after=False, zoneout=0.25)], ids=["after", "cho", "bi-L2", "cho-zo"])
def test_gradcheck_float64(kw):
    torch.manual_seed(0)
    gru = GRU(3, 4, dtype=torch.float64, backend="fused_cpu", **kw).eval()
    D = 2 if gru.bidirectional else 1
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(gru.num_layers * D, 2, 4, dtype=torch.float64, requires_grad=True)
    params = list(gru.parameters())
    names = [n for n, _ in gru.named_parameters()]

    def f(x, h0, *ps):
        out, h_n = torch.func.functional_call(gru, dict(zip(names, ps)), (x, h0), {"lengths": [5, 3]})
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *params), atol=1e-8)


# ---------------------------------------------------------------------------------------------- step
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("kw", [dict(num_layers=3), dict(reset_after=False, num_layers=2),
                                dict(zoneout=0.2, bias=False)], ids=["after-L3", "cho-L2", "zo-nobias"])
def test_step_matches_forward(kw, batch, dtype):
    ref, ours = _pair(dtype, **kw)
    ref.eval()
    ours.eval()
    x = torch.randn(T, batch, I, dtype=dtype)
    h0 = torch.randn(ours.num_layers, batch, H, dtype=dtype)
    with torch.no_grad():
        out_r, h_r = ref(x, h0)
        h = h0
        for t in range(T):
            y, h = ours.step(x[t], h)
            assert backends.last_used() == "fused_cpu"
            _close(y, out_r[t], dtype)
    _close(h, h_r, dtype)


def test_step_with_autograd_gives_reference_gradients():
    ref, ours = _pair(torch.float64, num_layers=2, reset_after=False)
    x = torch.randn(4, B, I, dtype=torch.float64)
    grads = []
    for m in (ref, ours):
        h = None
        for t in range(4):
            _, h = m.step(x[t], h)
        assert backends.last_used() == m.backend
        grads.append(torch.autograd.grad(h.square().sum(), list(m.parameters())))
    for a, b in zip(*grads):
        _close(b, a, torch.float64)


def test_step_sees_in_place_weight_updates():
    _, ours = _pair(torch.float32)
    ours.eval()
    x = torch.randn(B, I)
    with torch.no_grad():
        _, h1 = ours.step(x)
        ours.weight_hh_l0.mul_(0.5)
        ours.bias_ih_l0.add_(1.0)
        _, h2 = ours.step(x)
        ref = GRU(I, H, backend="reference").eval()
        ref.load_state_dict(ours.state_dict())
        _, h3 = ref.step(x)
    assert not torch.equal(h1, h2)
    _close(h2, h3, torch.float32)


# ---------------------------------------------------------------------------------------------- determinism
def test_deterministic_across_runs_and_thread_counts():
    """The batch is split across threads by rows; each row's arithmetic does not depend on the split."""
    torch.manual_seed(0)
    gru = GRU(16, 64, num_layers=2, bidirectional=True, deterministic=True)
    x = torch.randn(100, 16, 16)
    assert fused_cpu.threads_for(16, 64, 100) == min(2, torch.get_num_threads()) or torch.get_num_threads() < 2
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            gru.zero_grad()
            out, h_n = gru(x)
            assert backends.last_used() == "fused_cpu"
            out.square().sum().backward()
            results.append([out.detach().clone(), h_n.detach().clone()] + [p.grad.clone() for p in gru.parameters()])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_deterministic_inference_across_thread_counts():
    """Inference with deterministic=True projects the inputs inside the kernel whatever the thread count (the
    2-thread call splits rows, the 1-thread call does not): bit-identical outputs."""
    torch.manual_seed(0)
    gru = GRU(16, 64, num_layers=2, deterministic=True).eval()
    x = torch.randn(100, 16, 16)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            with torch.no_grad():
                outs.append(gru(x))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


# ---------------------------------------------------------------------------------------------- cache
def test_cache_goes_to_user_dir_when_install_is_read_only(tmp_path, monkeypatch):
    import numba

    from grukit.nn.backends import _fused

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(_fused, "_writable", lambda folder: False)
    chosen = _fused.configure_cache()
    assert chosen == str(tmp_path / "xdg" / "grukit" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == chosen and numba.config.CACHE_DIR == chosen
    assert Path(chosen).is_dir()


def test_writable_check_sees_a_read_only_folder(tmp_path):
    from grukit.nn.backends import _fused

    assert _fused._writable(tmp_path)
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; the read-only case is covered by the monkeypatched test")
    tmp_path.chmod(0o555)
    try:
        assert not _fused._writable(tmp_path)
    finally:
        tmp_path.chmod(0o755)


_CHILD = textwrap.dedent("""
    import json, torch
    from grukit.nn import GRU
    from grukit.nn.backends._fused import load
    gru = GRU(3, 4, backend="fused_cpu")
    out, _ = gru(torch.randn(5, 2, 3))
    out.sum().backward()
    k = load()
    hits = sum(len(f.stats.cache_hits) for f in (k._fwd_rows, k._bwd_rows))
    misses = sum(len(f.stats.cache_misses) for f in (k._fwd_rows, k._bwd_rows))
    print(json.dumps({"hits": hits, "misses": misses}))
""")


@pytest.mark.slow
def test_second_process_loads_compiled_kernels_from_cache(tmp_path):
    """A fresh cache dir compiles once; the next process start loads the kernels instead of compiling."""
    import json

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["misses"] > 0
    assert runs[1]["hits"] > 0 and runs[1]["misses"] == 0
    assert any((tmp_path / "cache").rglob("*.nbi"))


def test_threads_policy_small_work_stays_on_one_thread():
    assert fused_cpu.threads_for(1, 512, 100) == 1
    assert fused_cpu.threads_for(64, 8, 10) == 1
    full = fused_cpu.lens_array(None, 4, 3)
    assert full.dtype == np.int64 and full.tolist() == [4, 4, 4]
    assert fused_cpu.lens_array(torch.tensor([3, 1], dtype=torch.int32), 4, 2).tolist() == [3, 1]


def test_step_from_two_threads_at_once():
    """The step kernel releases the GIL; each Python thread gets its own scratch."""
    from concurrent.futures import ThreadPoolExecutor

    _, ours = _pair(torch.float32, num_layers=2)
    ours.eval()
    xs = torch.randn(2, 50, 2, I)

    def stream(k):
        h = None
        with torch.no_grad():
            for t in range(xs.shape[1]):
                _, h = ours.step(xs[k, t], h)
        return h

    alone = [stream(0), stream(1)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(stream, [0, 1]))
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


def test_bench_sections_agree_on_a_tiny_grid():
    from grukit import bench

    s = bench.Settings(threads=1, T=4, repeats=1, stream_steps=3)
    rows = bench.inference([(2, 8, 5)], s, peak=10.0)
    rows += bench.streaming([8], s)
    rows += bench.training([(2, 8)], s)
    for row in rows:
        assert row["backend"] == "fused_cpu"
        assert row.get("max_err", row.get("max_grad_err")) < 1e-4
    assert "x_torch" in bench.format_rows("t", rows[:1])


def test_inference_sees_replaced_and_updated_weights():
    ref, ours = _pair(torch.float32, num_layers=2)
    ref.eval()
    ours.eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        ours(x)                                                  # fills the transposed-weight cache
        for m in (ref, ours):
            m.weight_hh_l1 = torch.nn.Parameter(m.weight_hh_l1 * -1.0)
            m.weight_ih_l0.mul_(0.5)
        out_r, _ = ref(x)
        out_o, _ = ours(x)
        _, h_step = ours.step(x[0])
        _, h_ref = ref.step(x[0])
    _close(out_o, out_r, torch.float32)
    _close(h_step, h_ref, torch.float32)


def test_no_grad_training_mode_keeps_inter_layer_dropout():
    """A training-mode GRU run under no_grad (the inference path) still drops between layers, as torch does."""
    torch.manual_seed(0)
    gru = GRU(4, 8, num_layers=2, dropout=0.5, backend="fused_cpu").train()
    ref = GRU(4, 8, num_layers=2, dropout=0.5, backend="reference").train()
    ref.load_state_dict(gru.state_dict())
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        torch.manual_seed(1)
        a, _ = gru(x)
        torch.manual_seed(1)
        b, _ = ref(x)
        c, _ = gru.eval()(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_blas_matmul_path_matches_reference(threads):
    """Many rows per thread: each step's recurrent matmul (forward and BPTT) is a BLAS GEMM; outputs and every
    gradient still equal the reference backend, with lengths and both directions; deterministic=True keeps
    the fixed-order loop instead."""
    from grukit.nn.backends._fused import kernels
    B = 32 * threads
    assert kernels.use_blas(B, threads, True) and not kernels.use_blas(B, threads, False)
    assert not kernels.use_blas(B - 1, threads, True)
    torch.manual_seed(0)
    ours = GRU(6, 64, num_layers=2, bidirectional=True, backend="fused_cpu")
    ref = GRU(6, 64, num_layers=2, bidirectional=True, backend="reference")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(40, B, 6)
    lengths = torch.randint(1, 41, (B,))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        import numba
        assert fused_cpu.threads_for(B, 64, 40) == min(threads, numba.get_num_threads())   # 32 rows a thread
        outs = []
        for m in (ours, ref):
            m.zero_grad()
            y, h = m(x, lengths=lengths)
            (y.square().sum() + h.sum()).backward()
            outs.append([y.detach(), h.detach()] + [p.grad.clone() for p in m.parameters()])
        with torch.no_grad():
            ours.eval()
            y_inf, _ = ours(x, lengths=lengths)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(y_inf, outs[1][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["fused_cpu", "aten", "reference"])
def test_omitted_state_is_shared_only_without_autograd_and_stays_zero(backend):
    """forward/step without hx reuse one zero tensor per shape when autograd is off (a per-call saving); every
    backend only reads it, so it is still all zeros after the calls, and the results equal an explicit zero
    state. With autograd on, each call gets its own."""
    from grukit.nn import gru as gru_mod
    torch.manual_seed(0)
    m = GRU(I, H, num_layers=2, backend=backend).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        y1, h1 = m(x)
        _, s1 = m.step(x[0])
        y2, h2 = m(x, torch.zeros(2, B, H))
        _, s2 = m.step(x[0], torch.zeros(2, B, H))
        shared = m._check_hx(None, x, B, True)
        assert shared is m._check_hx(None, x, B, True)
    assert all(bool((z == 0).all()) for z in gru_mod._ZERO_STATES.values())
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(h1, h2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert m._check_hx(None, x, B, True) is not m._check_hx(None, x, B, True)   # autograd on: fresh zeros
