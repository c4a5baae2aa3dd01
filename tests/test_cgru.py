"""The compiled float32 kernels (``grukit/nn/backends/_fused/_cgru.c``): the panel matmul against numpy, every
spec the inference forward runs against the reference backend, bitwise equality across thread counts (batch
chunks and the hidden-unit split), the streaming step, the baseline-ISA build, the numba fallback and the
size checks at the C boundary.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from grukit.nn import GRU, backends  # noqa: E402
from grukit.errors import ShapeError  # noqa: E402
from grukit.nn.backends import fused_cpu, fused_kernels  # noqa: E402

C = fused_cpu.cgru()
needs_c = pytest.mark.skipif(C is None, reason="grukit's C extension _cgru was not built here (no C compiler at "
                                               "install time, or GRUKIT_CGRU=0): the numba kernels run instead")


def _ref_pair(I, H, **kw):
    torch.manual_seed(0)
    ref = GRU(I, H, backend="reference", **kw).eval()
    ours = GRU(I, H, backend="fused_cpu", **kw).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.fixture
def two_threads(monkeypatch):
    """torch (hence grukit) on 2 threads, with 2 cores as far as the thread policy can tell."""
    monkeypatch.setattr(fused_kernels, "cores", lambda: 2)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(prev)


@needs_c
def test_compiled_kernels_are_in_use_for_float32_inference():
    assert fused_cpu.cgru_status().startswith("compiled (")
    assert C.isa() in ("avx2", "generic")


@needs_c
@pytest.mark.parametrize("M", [0, 1, 2, 3, 4, 5, 7, 9, 13])
@pytest.mark.parametrize("K,H", [(1, 1), (5, 7), (33, 48), (64, 64), (20, 100), (129, 16), (300, 20)])
@pytest.mark.parametrize("bias", [True, False])
def test_panel_matmul_matches_numpy(M, K, H, bias):
    rng = np.random.default_rng(M * 1000 + K * 10 + H)
    w = torch.from_numpy(rng.standard_normal((3 * H, K)).astype(np.float32))
    Wp, Hp = fused_cpu._pack_panels(w, H), fused_cpu._padded(H)
    assert Wp.shape == (3 * Hp // 16, K, 16) and Hp % 16 == 0 and Hp >= H
    b = fused_cpu._pack_bias(torch.from_numpy(rng.standard_normal(3 * H).astype(np.float32)), H)
    A = rng.standard_normal((M, K)).astype(np.float32)
    out = np.full((M, 3 * Hp), np.nan, np.float32)
    C.gemm(A, M, K, Wp, 0, 3 * Hp // 16, out, 3 * Hp, b if bias else None)
    WT = np.zeros((K, 3, Hp))
    WT[:, :, :H] = w.numpy().T.reshape(K, 3, H)
    want = A.astype(np.float64) @ WT.reshape(K, 3 * Hp) + (b if bias else 0)
    np.testing.assert_allclose(out, want, atol=1e-4, rtol=0)
    assert np.all(out.reshape(M, 3, Hp)[:, :, H:] == 0)                   # padding units stay zero


@needs_c
@pytest.mark.parametrize("K", [100, 129, 300, 513])
def test_panel_matmul_rows_are_bitwise_the_same_alone_and_in_a_block(K):
    """A long K is cut into chunks with partial sums kept in C: each element must still be the one chain of
    FMAs the single-row kernel computes, so a row's result does not depend on the rows beside it."""
    rng = np.random.default_rng(K)
    H, M = 24, 11
    Wp = fused_cpu._pack_panels(torch.from_numpy(rng.standard_normal((3 * H, K)).astype(np.float32)), H)
    b = fused_cpu._pack_bias(torch.from_numpy(rng.standard_normal(3 * H).astype(np.float32)), H)
    G = 3 * fused_cpu._padded(H)
    A = rng.standard_normal((M, K)).astype(np.float32)
    block = np.empty((M, G), np.float32)
    C.gemm(A, M, K, Wp, 0, G // 16, block, G, b)
    for m in range(M):
        alone = np.empty((1, G), np.float32)
        C.gemm(np.ascontiguousarray(A[m:m + 1]), 1, K, Wp, 0, G // 16, alone, G, b)
        assert np.array_equal(alone[0], block[m]), m


SPECS = [dict(), dict(reset_after=False), dict(bidirectional=True), dict(num_layers=3),
         dict(num_layers=2, bidirectional=True, reset_after=False), dict(bias=False), dict(zoneout=0.3),
         dict(recurrent_dropout=0.2), dict(batch_first=True)]


@needs_c
@pytest.mark.parametrize("kw", SPECS, ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()) or "plain")
@pytest.mark.parametrize("H", [5, 16, 40])
@pytest.mark.parametrize("lengths", [False, True])
def test_forward_matches_reference(kw, H, lengths):
    I, T, B = 7, 9, 4
    ref, ours = _ref_pair(I, H, **kw)
    D = 2 if kw.get("bidirectional") else 1
    x = torch.randn((B, T, I) if kw.get("batch_first") else (T, B, I))
    h0 = torch.randn(kw.get("num_layers", 1) * D, B, H)
    ln = torch.tensor([9, 2, 5, 1]) if lengths else None
    with torch.no_grad():
        y_ref, h_ref = ref(x, h0, lengths=ln)
        y, h = ours(x, h0, lengths=ln)
    assert backends.last_used() == "fused_cpu"
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)


def _direct(H, B, T, reset_after, nthreads, lens=None, reverse=False, I=11, seed=0, unit_split=True):
    """One layer through ``_cgru.forward`` with ``nthreads`` threads: (out, hT)."""
    torch.manual_seed(seed)
    m = GRU(I, H, reset_after=reset_after)
    wih, bih, whh, bhh = fused_cpu._packed_layer(m.layer_params(0, 0), H)
    Hp = fused_cpu._padded(H)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    lens = np.full(B, T, np.int64) if lens is None else np.asarray(lens, np.int64)
    out = np.full((T, B, H), np.nan, np.float32)
    hT = np.full((B, H), np.nan, np.float32)
    C.forward(x, wih, bih, whh, bhh, h0, lens, out, hT, T, B, I, H, Hp, reverse, reset_after, 0.0, H, 0, nthreads,
              unit_split)
    return out, hT


@needs_c
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B,H", [(1, 5), (1, 64), (1, 130), (2, 48), (3, 40), (7, 33), (9, 24), (20, 40)])
@pytest.mark.parametrize("reverse", [False, True])
def test_results_are_bitwise_equal_for_any_thread_count(reset_after, B, H, reverse):
    """1 thread, batch chunks and the hidden-unit split (B < threads) give the same bits: every output is one
    fixed chain of multiply-adds whatever block or thread computes it. More threads than cores included (the
    split then goes solo rather than wait)."""
    T = 13
    lens = ([13, 4, 9, 1, 13, 7, 2] * 3)[:B]                  # 8+ rows: per-step projection, gathered in reverse
    base = _direct(H, B, T, reset_after, 1, lens, reverse)
    assert not np.isnan(base[0]).any() and not np.isnan(base[1]).any()
    for n in (2, 3, 5):
        got = _direct(H, B, T, reset_after, n, lens, reverse)
        assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1]), n


@needs_c
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B,lens", [(1, None), (1, [37]), (2, [50, 19]), (3, [1, 50, 33])])
@pytest.mark.parametrize("reverse", [False, True])
def test_pipelined_projection_is_bitwise_the_one_thread_call(reset_after, B, lens, reverse):
    """Fewer rows than threads and no unit split: helpers project chunks of steps ahead of the recurrence
    (claimed in the order the recurrence reads them, reverse included; a chunk nobody claimed yet is projected by
    the recurrence's thread itself). Same bits as one thread, with lengths; helpers really wrote chunks."""
    T, H = 50, 24
    base = _direct(H, B, T, reset_after, 1, lens, reverse)
    assert not np.isnan(base[0]).any() and not np.isnan(base[1]).any()
    for n in (B + 1, 5):
        for _ in range(3):
            got = _direct(H, B, T, reset_after, n, lens, reverse, unit_split=False)
            assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1]), n


@needs_c
@pytest.mark.skipif(fused_cpu.cores() < 2, reason="needs 2 cores for a helper to project alongside")
def test_pipelined_projection_really_uses_the_helpers():
    """Helpers do write chunks of a pipelined call (the bitwise test above also passes when the caller ends up
    projecting every chunk itself, as it does when a call is over before a sleeping helper wakes)."""
    base = _direct(64, 1, 400, True, 1, I=64)
    before = C.counts()["helper_chunks"]
    for _ in range(30):
        got = _direct(64, 1, 400, True, 2, I=64, unit_split=False)
        assert np.array_equal(got[0], base[0]) and np.array_equal(got[1], base[1])
        if C.counts()["helper_chunks"] > before:
            break
    assert C.counts()["helper_chunks"] > before


@needs_c
@pytest.mark.parametrize("reset_after", [True, False])
def test_split_threads_match_the_reference_module(reset_after, two_threads):
    """The module path with a hidden-unit split (B=1, 2 threads) against the reference backend."""
    H = fused_cpu.SPLIT_MIN_HIDDEN
    assert fused_cpu.compiled_threads(1, H, 20) == 2
    ref, ours = _ref_pair(9, H, reset_after=reset_after)
    x = torch.randn(20, 1, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)


@needs_c
def test_pipelined_module_call_matches_the_reference(two_threads):
    """The module path of a pipelined call (B=1, H below the unit split, 2 threads), both directions."""
    assert fused_cpu.compiled_threads(1, 48, 60, 30) == 2 and not fused_cpu.unit_split(48)
    ref, ours = _ref_pair(30, 48, bidirectional=True, num_layers=2)
    x = torch.randn(60, 1, 30)
    with torch.no_grad():
        for got, want in zip(ours(x), ref(x)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@needs_c
def test_thread_policy():
    assert fused_cpu.compiled_threads(1, 64, 100) == 1                       # split too small to pay
    assert fused_cpu.compiled_threads(64, 8, 10) == 1                        # too little work
    assert fused_cpu.compiled_threads(1, 8, 10, 8) == 1                      # too little to pipeline
    assert not fused_cpu.unit_split(fused_cpu.SPLIT_MIN_HIDDEN - 1) and fused_cpu.unit_split(512)
    n = min(torch.get_num_threads(), fused_cpu.cores())
    if n >= 2:
        assert fused_cpu.compiled_threads(1, 512, 100) == n
        assert fused_cpu.compiled_threads(64, 256, 100) == n
        assert fused_cpu.compiled_threads(1, 64, 100, 64) == n               # pipelined projection


@needs_c
@pytest.mark.parametrize("kw", [dict(), dict(reset_after=False, num_layers=3), dict(zoneout=0.25, bias=False)])
@pytest.mark.parametrize("B", [1, 5])
def test_stream_uses_the_compiled_step_and_matches_forward(kw, B):
    torch.manual_seed(0)
    gru = GRU(6, 21, **kw).eval()
    stream = gru.stream(batch_size=B)
    assert isinstance(stream, C.Stream) and stream._kernel == stream.advance
    xs = torch.randn(11, B, 6)
    with torch.no_grad():
        y_all, h_all = gru(xs)
    for t in range(11):
        y = stream(xs[t].numpy())
        np.testing.assert_allclose(y, y_all[t].numpy(), atol=1e-5, rtol=0)
    torch.testing.assert_close(stream.state, h_all, atol=1e-5, rtol=0)


@needs_c
@pytest.mark.parametrize("B", [1, 3])
def test_numpy_frames_run_in_c_and_the_rest_in_python(B, monkeypatch):
    """A float32 numpy frame of the stream's shape never reaches Python's _frame (the C call checks it, runs it,
    makes the output); torch frames, other dtypes and strided frames do, with the same results and errors."""
    from grukit.nn.stream import GRUStream
    torch.manual_seed(0)
    gru = GRU(6, 21, num_layers=2).eval()
    xs = np.random.default_rng(1).standard_normal((5, B, 6)).astype(np.float32)
    with torch.no_grad():
        want = gru(torch.from_numpy(xs))[0].numpy()                      # (T, B, H)
    seen = []
    frame = GRUStream._frame
    monkeypatch.setattr(GRUStream, "_frame", lambda self, x: seen.append(type(x)) or frame(self, x))
    s = gru.stream(batch_size=B)
    y0 = s(xs[0])
    assert type(y0) is np.ndarray and y0.shape == (B, 21) and y0.dtype == np.float32 and seen == []
    y1 = s(xs[1][0] if B == 1 else xs[1])                                  # (I,) when B == 1: gives (H,)
    assert y1.shape == ((21,) if B == 1 else (B, 21)) and seen == []
    assert not np.shares_memory(y0, s._ws)                                 # a new array, not a view of the state
    y2 = s(torch.from_numpy(xs[2]))                                        # torch: Python
    strided = np.repeat(xs[3], 2, axis=1)[:, ::2]                          # not contiguous: Python
    y3 = s(strided)
    assert seen == [torch.Tensor, np.ndarray] and isinstance(y2, torch.Tensor)
    for t, y in enumerate((y0, y1, y2.numpy(), y3)):
        np.testing.assert_allclose(np.reshape(y, (B, 21)), want[t], atol=1e-5, rtol=0)
    with pytest.raises(ShapeError, match="frame has dtype float64"):
        s(xs[4].astype(np.float64))
    with pytest.raises(ShapeError, match=r"frame must have shape \(%d, 6\)" % B):
        s(np.zeros((B, 7), np.float32))
    bare = C.Stream(s._ws, s._meta)
    with pytest.raises(ValueError, match=r"C-contiguous float32 numpy array of shape \(%d, 6\)" % B):
        bare(np.zeros((B, 7), np.float32))
    bare.release()
    with pytest.raises(ValueError, match="no packed stream"):
        bare(xs[0])


@needs_c
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B,H,L", [(1, 130, 1), (1, 40, 3), (3, 64, 2), (2, 5, 1)])
def test_stream_split_over_threads_is_bitwise_the_one_thread_stream(reset_after, B, H, L):
    """A stream frame split by hidden units over 2, 3 or 5 threads (more threads than cores, and than unit
    panels, included: a helper that does not turn up in time or a meeting that waits too long means solo) gives
    the one-thread stream's bits, frame after frame."""
    torch.manual_seed(0)
    gru = GRU(7, H, num_layers=L, reset_after=reset_after).eval()
    xs = np.random.default_rng(B * H).standard_normal((60, B, 7)).astype(np.float32)

    def run(n):
        _, ws, meta, h = fused_cpu._compiled_stream(C, gru, B)
        k = C.Stream(ws, meta, n)
        outs = []
        for x in xs:
            k(x)
            outs.append(h.copy())
        return np.stack(outs)

    base = run(1)
    assert not np.isnan(base).any()
    split_before = C.counts()["split"]
    for n in (2, 3, 5):
        assert np.array_equal(run(n), base), n
    if fused_cpu.cores() >= 2 and fused_cpu._padded(H) >= 32:   # 2+ unit panels, helpers had a core:
        deadline = time.monotonic() + 20.0                         # some frames really split (a helper that
        while C.counts()["split"] == split_before:                 # other processes keep off the cores may
            assert time.monotonic() < deadline, "no frame was split over threads in 20 s"  # miss many runs)
            assert np.array_equal(run(2), base)
    with torch.no_grad():
        _, h_all = gru(torch.from_numpy(xs))
    np.testing.assert_allclose(base[-1], h_all.numpy(), atol=1e-5, rtol=0)


@needs_c
def test_stream_thread_policy(two_threads):
    assert fused_cpu.stream_threads(fused_cpu.STREAM_SPLIT_MIN_HIDDEN - 1) == 1
    assert fused_cpu.stream_threads(fused_cpu.STREAM_SPLIT_MIN_HIDDEN) == 2
    torch.set_num_threads(1)
    assert fused_cpu.stream_threads(512) == 1


@needs_c
def test_c_boundary_checks_buffer_sizes():
    m = GRU(4, 8)
    wih, b, whh, _ = fused_cpu._packed_layer(m.layer_params(0, 0), 8)
    Hp = fused_cpu._padded(8)
    x = np.zeros((3, 2, 4), np.float32)
    h0, lens = np.zeros((2, 8), np.float32), np.full(2, 3, np.int64)
    out, hT = np.zeros((3, 2, 8), np.float32), np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="x holds 96 bytes, the call needs 120"):
        C.forward(x, wih, b, whh, b, h0, lens, out, hT, 3, 2, 5, 8, Hp, False, True, 0.0, 8, 0, 1)
    with pytest.raises(ValueError, match="length 4 of row 1"):
        C.forward(x, wih, b, whh, b, h0, np.array([3, 4]), out, hT, 3, 2, 4, 8, Hp, False, True, 0.0, 8, 0, 1)
    stream = m.eval().stream(batch_size=1)
    with pytest.raises(ValueError, match="the frame must hold 4 float32 values"):
        stream._kernel(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="the frame must hold 4 float32 values"):
        stream._kernel(np.zeros(4, np.float64)[:2])
    with pytest.raises(ValueError, match="meta does not describe ws"):
        C.Stream(stream._ws, stream._meta[:-1].copy())
    bad = stream._meta.copy()
    bad[13] = stream._ws.size                     # layer 0's W_hh offset past the end of ws
    with pytest.raises(ValueError, match="a region lies outside it"):
        C.Stream(stream._ws, bad)
    with pytest.raises(ValueError, match="3 weight arrays for 1 layers x 1 directions"):
        C.Plan([wih, b, whh], 1, 1, 4, 8, Hp, True)
    with pytest.raises(ValueError, match="weight array 0 must hold 240 float32 values"):
        C.Plan([wih, b, whh, b], 1, 1, 5, 8, Hp, True)                    # W_ih packed for I=4, not 5
    with pytest.raises(ValueError, match="weight array 2 must hold"):
        C.Plan([wih, b, whh.astype(np.float64), b], 1, 1, 4, 8, Hp, True)
    plan = C.Plan([wih, b, whh, b], 1, 1, 4, 8, Hp, True)
    with pytest.raises(ValueError, match="inconsistent sizes"):
        plan.run(x.ctypes.data, 0, 2, 0, None, 0.0, 1, 1, True)
    with pytest.raises(ValueError, match=r"lens must hold 2 int64 values in \[0, 3\]"):
        plan.run(x.ctypes.data, 3, 2, 0, np.array([3, 4]), 0.0, 1, 1, True)
    with pytest.raises(ValueError, match="inconsistent sizes"):
        plan.run(x.ctypes.data, 3, 2, 0, None, 0.0, 1, 1, True, 1, 2)                # layers [1, 2) of 1
    xt = np.zeros((4, 2, 3), np.float32).transpose(2, 1, 0)                  # right size, not C-contiguous
    with pytest.raises((BufferError, TypeError, ValueError), match="contiguous"):
        C.forward(xt, wih, b, whh, b, h0, lens, out, hT, 3, 2, 4, 8, Hp, False, True, 0.0, 8, 0, 1)


def _run_child(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


_CHILD = """
    import torch
    from grukit.nn import GRU
    from grukit.nn.backends import fused_cpu
    assert fused_cpu.cgru_status() == {status!r}, fused_cpu.cgru_status()
    from grukit.nn.stream import _CStream
    assert (_CStream is None) == ({status!r} == "numba")          # numpy frames in C, or all in Python
    for kw in [dict(), dict(reset_after=False, bidirectional=True, num_layers=2)]:
        torch.manual_seed(0)
        ref = GRU(7, 37, backend="reference", **kw).eval()
        ours = GRU(7, 37, backend="fused_cpu", **kw).eval()
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(9, 3, 7)
        with torch.no_grad():
            torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)
        if not kw:
            s = ours.stream(batch_size=3)
            assert s._fast is not None                               # a packed step kernel, not GRU.step
            for t in range(9):
                y = s(x[t].numpy())
            with torch.no_grad():
                torch.testing.assert_close(torch.from_numpy(y), ref(x)[1][-1], atol=1e-5, rtol=0)
    print("ok")
"""


@needs_c
def test_helper_spin_setting():
    """GRUKIT_SPIN_US=0: helpers sleep as soon as a job is done; split, pipelined and chunked calls still give
    the one-thread bits (a sleeping helper is woken, or its share is done by the caller). A bad value is a
    clear error naming the variable."""
    code = """
        import numpy as np, torch
        from grukit.nn import GRU
        torch.set_num_threads(2)
        torch.manual_seed(0)
        for I, H, B in [(7, 144, 1), (30, 48, 1), (7, 40, 16)]:
            gru = GRU(I, H, bidirectional=True).eval()
            x = torch.randn(60, B, I)
            with torch.no_grad():
                torch.set_num_threads(1)
                want = gru(x)[0]
                torch.set_num_threads(2)
                for _ in range(5):
                    assert torch.equal(gru(x)[0], want)
        print("ok")
    """
    r = _run_child(code, GRUKIT_SPIN_US="0")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = _run_child("from grukit.nn.backends import fused_cpu; fused_cpu.cgru()", GRUKIT_SPIN_US="lots")
    assert r.returncode != 0 and "GRUKIT_SPIN_US must be a whole number of microseconds" in r.stderr


@pytest.mark.parametrize("env,status", [
    pytest.param({"GRUKIT_CPU_ISA": "generic"}, "compiled (generic)", marks=needs_c, id="generic-isa"),
    pytest.param({"GRUKIT_CGRU": "0"}, "numba", id="numba-fallback"),
])
def test_other_kernel_builds_match_reference(env, status):
    """GRUKIT_CPU_ISA=generic: the baseline-ISA copy of the C kernels (what a CPU without AVX2 runs).
    GRUKIT_CGRU=0 (as where no C compiler was found at install time): the numba kernels run float32 inference
    and streaming."""
    r = _run_child(_CHILD.format(status=status), **env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@needs_c
@pytest.mark.parametrize("kw", [dict(), dict(reset_after=False, num_layers=2)])
def test_gru_step_runs_the_compiled_stream_kernel(kw):
    """GRU.step (inference, float32) goes through the compiled step kernel, reading the weight tensors in place
    (no packed copy is made for it), and equals forward()."""
    torch.manual_seed(0)
    gru = GRU(4, 18, **kw).eval()
    xs = torch.randn(6, 3, 4)
    h = None
    with torch.no_grad():
        y_all, h_all = gru(xs)
        for t in range(6):
            y, h = gru.step(xs[t], h)
            torch.testing.assert_close(y, y_all[t], atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_all, atol=1e-5, rtol=0)
    be = backends.get("fused_cpu")
    assert "streams" not in be.cache.peek(gru).parts and backends.last_kernel() == "fused_cpu/compiled"
    read = fused_cpu.inplace_weights(gru)
    assert read is not None and read.ptrs == tuple(p.data_ptr() for p in gru._flat_weights)


@needs_c
def test_concurrent_calls_from_python_threads(two_threads):
    """Calls release the GIL and share one helper pool: two Python threads running split (B=1) and chunked
    (B=16) calls at once still get the single-call results, bit for bit."""
    import threading

    torch.manual_seed(0)
    gru = GRU(12, 144).eval()
    xs = {1: torch.randn(40, 1, 12), 16: torch.randn(40, 16, 12)}
    with torch.no_grad():
        want = {b: gru(x)[0] for b, x in xs.items()}
    bad = []

    def work(b):
        with torch.no_grad():
            for _ in range(20):
                if not torch.equal(gru(xs[b])[0], want[b]):
                    bad.append(b)

    ts = [threading.Thread(target=work, args=(b,)) for b in (1, 16, 1, 16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def _no_general_path(monkeypatch):
    """Make fused_cpu's general forward fail: a call that still works went through GRU.forward's fast path."""
    def general(*a, **k):
        raise AssertionError("the general path ran")
    monkeypatch.setattr(fused_cpu.FusedCPUBackend, "forward", general)


@needs_c
@pytest.mark.parametrize("kw", [dict(), dict(batch_first=True), dict(reset_after=False, num_layers=2),
                                dict(bidirectional=True, num_layers=2, zoneout=0.3),
                                dict(bias=False, dropout=0.4, num_layers=3)],
                         ids=["plain", "batch_first", "cho-2", "bi-2-zoneout", "nobias-dropout"])
def test_inference_fast_path_matches_reference(kw, monkeypatch):
    """After the first no-grad call, float32 inference calls (hx omitted or given, batch_first, every layer and
    direction) skip the general path and still give the reference results."""
    torch.manual_seed(0)
    ref = GRU(5, 19, backend="reference", **kw).eval()
    ours = GRU(5, 19, **kw).eval()
    ours.load_state_dict(ref.state_dict())
    D = 2 if ours.bidirectional else 1
    x = torch.randn(4, 9, 5) if ours.batch_first else torch.randn(9, 4, 5)
    hx = torch.randn(ours.num_layers * D, 4, 19)
    with torch.no_grad():
        ours(x)                                                        # general path: chooses, builds the plan
        want = [ref(x), ref(x, hx), ref(x[:2] if ours.batch_first else x[:, :2], hx[:, :2].contiguous())]
        _no_general_path(monkeypatch)
        got = [ours(x), ours(x, hx), ours(x[:2] if ours.batch_first else x[:, :2], hx[:, :2].contiguous())]
    assert backends.last_used() == "fused_cpu"
    for (y, h), (y_ref, h_ref) in zip(got, want):
        assert y.shape == y_ref.shape and h.shape == h_ref.shape
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)


@needs_c
def test_inference_fast_path_leaves_what_it_does_not_take(monkeypatch):
    """Lengths, autograd, float64, unbatched or packed inputs, a strided or wrongly shaped hx, stale weights and a
    new training flag go through the general path (with its errors and results)."""
    torch.manual_seed(0)
    ours = GRU(5, 8).eval()
    x = torch.randn(6, 3, 5)
    with torch.no_grad():
        ours(x)
    calls = []
    general = fused_cpu.FusedCPUBackend.forward
    monkeypatch.setattr(fused_cpu.FusedCPUBackend, "forward",
                        lambda self, *a: calls.append(1) or general(self, *a))
    with torch.no_grad():
        ours(x)
        assert calls == []                                             # taken
        ours(x, lengths=[6, 2, 3])
        ours(x[:, 0])                                                  # unbatched
        ours(x, torch.randn(1, 3, 16)[..., ::2])                       # strided hx
        with pytest.raises(ShapeError, match=r"hx must have shape \(1, 3, 8\)"):
            ours(x, torch.zeros(1, 2, 8))
        with pytest.raises(ShapeError, match="features per step"):
            ours(torch.randn(6, 3, 4))
        assert len(calls) == 3
        ours.weight_hh_l0.add_(1.0)                                     # in place: the plan is stale
        y, _ = ours(x)
        assert len(calls) == 4
        ref = GRU(5, 8, backend="reference").eval()
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=0)
        ours(x)
        assert len(calls) == 4                                          # fresh plan: fast again
        ours.train()
        ours(x)
        assert len(calls) == 5                                          # a new training flag: general first,
        ours(x)
        assert len(calls) == 5                                          # then fast for that flag too
        drop = GRU(5, 8, num_layers=2, dropout=0.5).train()             # dropout between layers (training
        drop(x)                                                         # mode, no grad): always general
        drop(x)
        assert len(calls) == 7 and drop._backend_choice[("fast", "forward")][1] is not None
    ours.eval()
    y, _ = ours(x)                                                      # autograd on: the general path
    assert len(calls) == 8 and y.requires_grad


@needs_c
def test_onnx_export_after_fast_calls_traces_the_general_path(tmp_path):
    """A module whose inference calls took the fast path still exports (tracing declines the fast path) and the
    file agrees with those calls."""
    pytest.importorskip("onnxruntime")
    from grukit.export import to_onnx
    torch.manual_seed(0)
    gru = GRU(5, 12, num_layers=2).eval()
    with torch.no_grad():
        gru(torch.randn(7, 2, 5))
        gru(torch.randn(7, 2, 5))
    assert gru._backend_choice[("fast", "forward")][1] is not None
    exported = to_onnx(gru, tmp_path / "gru.onnx")
    assert exported.path.exists() and exported.max_abs_diff < 1e-4


@needs_c
@pytest.mark.parametrize("kw", [dict(), dict(reset_after=False, num_layers=3, zoneout=0.2)], ids=["plain", "cho-3"])
def test_step_fast_path_matches_forward_and_leaves_what_it_does_not_take(kw, monkeypatch):
    """After the first no-grad step, float32 frames skip GRU.step's general path and still equal forward();
    reset masks and unbatched frames take the general path; a strided state is copied by the fast path; changed
    weights are read in place by the next fast call."""
    torch.manual_seed(0)
    gru = GRU(4, 18, **kw).eval()
    xs = torch.randn(6, 3, 4)
    with torch.no_grad():
        y_all, h_all = gru(xs)
        y, h = gru.step(xs[0])                                          # general: builds the packed stream
        calls = []
        general = fused_cpu.FusedCPUBackend.step
        monkeypatch.setattr(fused_cpu.FusedCPUBackend, "step", lambda self, *a: calls.append(1) or general(self, *a))
        for t in range(1, 6):
            y, h = gru.step(xs[t], h)
            torch.testing.assert_close(y, y_all[t], atol=1e-5, rtol=0)
        assert calls == [] and backends.last_used() == "fused_cpu"
        torch.testing.assert_close(h, h_all, atol=1e-5, rtol=0)
        y0, _ = gru.step(xs[0])                                         # h omitted: from zeros
        torch.testing.assert_close(y0, y_all[0], atol=1e-5, rtol=0)
        assert calls == []
        gru.step(xs[0], h, reset=torch.tensor([True, False, True]))
        gru.step(xs[0, 0])                                             # unbatched
        strided = torch.randn(gru.num_layers, 3, 36)[..., ::2]
        torch.testing.assert_close(gru.step(xs[0], strided)[1], gru.step(xs[0], strided.contiguous())[1],
                                   atol=0, rtol=0)                     # strided state: copied, fast path
        with pytest.raises(ShapeError, match="h must have shape"):
            gru.step(xs[0], torch.zeros(1, 3, 5))
        assert len(calls) == 2
        gru.weight_ih_l0.mul_(0.5)                                      # read in place: seen by the fast path
        y_new, _ = gru.step(xs[0])
        assert len(calls) == 2
        ref = GRU(4, 18, backend="reference", **kw).eval()
        ref.load_state_dict(gru.state_dict())
        torch.testing.assert_close(y_new, ref.step(xs[0])[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the layouts Python and C exchange
@needs_c
def test_stream_meta_is_filled_by_the_c_sides_field_names():
    """A stream's meta is built from the C side's own field names (cgru.h's StreamMeta / StreamLayerMeta): each
    field holds what Python means by its name, and the Stream reads it so (the frame's state sits at off_h)."""
    from grukit.nn.backends._fused import _cgru as C
    assert C.STREAM_META[:3] == ("L", "B", "H") and "off_h" in C.STREAM_META and "off_whh" in C.STREAM_LAYER_META
    torch.manual_seed(0)
    gru = GRU(3, 20, num_layers=2).eval()
    st = fused_cpu._compiled_stream(C, gru, 2)
    head = dict(zip(C.STREAM_META, st.meta[:len(C.STREAM_META)]))
    assert (head["L"], head["B"], head["H"], head["Hp"]) == (2, 2, 20, 32)
    assert np.shares_memory(st.state, st.ws) and st.state.ctypes.data == st.ws.ctypes.data + 4 * head["off_h"]
    layer1 = dict(zip(C.STREAM_LAYER_META, st.meta[len(C.STREAM_META) + len(C.STREAM_LAYER_META):]))
    assert layer1["n_in"] == 20


@needs_c
def test_a_layout_disagreement_is_a_clear_error():
    """Python and C disagreeing on a field (an extension built from other sources) fails with an error naming the
    field and the fix, never a misread buffer: a meta field one side lacks, a constant that differs, a meta of
    the wrong size at the C boundary."""
    from types import SimpleNamespace

    from grukit.nn.backends._fused import _cgru as C
    head = dict(L=1, B=1, H=4, Hp=16, reset_after=1, off_h=0, off_gi=0, off_gh=0, off_q=0, off_zo=0)
    layer = dict(n_in=2, off_wih=0, off_bih=0, off_whh=0, off_bhh=0)
    old = SimpleNamespace(STREAM_META=C.STREAM_META[:-1], STREAM_LAYER_META=C.STREAM_LAYER_META)
    with pytest.raises(RuntimeError, match=r"StreamMeta layout: Python fills \['off_zo'\] that C does not have.*rebuild"):
        fused_kernels.stream_meta(old, head, [layer])
    new = SimpleNamespace(STREAM_META=C.STREAM_META, STREAM_LAYER_META=C.STREAM_LAYER_META + ("off_norm",))
    with pytest.raises(RuntimeError, match=r"StreamLayerMeta layout: C has \['off_norm'\] that Python does not fill"):
        fused_kernels.stream_meta(new, head, [layer])
    with pytest.raises(RuntimeError, match=r"PANEL: C 8, Python 16.*rebuild"):
        fused_kernels.check_constants(SimpleNamespace(PANEL=8, MAX_STACK_ROWS=C.MAX_STACK_ROWS))
    fused_kernels.check_constants(C)                                    # the built module agrees
    st = fused_cpu._compiled_stream(C, GRU(2, 4).eval(), 1)
    with pytest.raises(ValueError, match="not a StreamMeta and L StreamLayerMeta"):
        C.Stream(st.ws, np.concatenate([st.meta, st.meta[-5:]]))        # one layer more than L says


@needs_c
def test_in_place_step_split_over_threads_is_bitwise_one_thread():
    """From STREAM_SPLIT_MIN_HIDDEN the in-place step shares each layer's hidden units out over the threads
    (unit ranges of the row-major weights); every unit's arithmetic is the same, so the state is bit for bit the
    one-thread state, and it equals the reference."""
    torch.manual_seed(0)
    H = fused_kernels.STREAM_SPLIT_MIN_HIDDEN + 8                      # not a multiple of the panel width
    gru = GRU(7, H, num_layers=2, reset_after=False).eval()
    ref = GRU(7, H, num_layers=2, reset_after=False, backend="reference").eval()
    ref.load_state_dict(gru.state_dict())
    xs = torch.randn(5, 2, 7)
    before = torch.get_num_threads()
    got = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            h = None
            with torch.no_grad():
                for t in range(5):
                    _, h = gru.step(xs[t], h)
            got[n] = h
    finally:
        torch.set_num_threads(before)
    assert backends.last_kernel() == "fused_cpu/compiled"
    assert torch.equal(got[1], got[2])
    with torch.no_grad():
        h = None
        for t in range(5):
            _, h = ref.step(xs[t], h)
    torch.testing.assert_close(got[1], h, atol=1e-5, rtol=0)


def test_numba_step_meta_is_filled_by_name():
    """The numba packed stream's meta follows the one table STEP_META; a name it does not have is an error."""
    k = fused_kernels.kernels()
    meta = k.step_meta([3, 5], L=2, B=4, H=5, Imax=5, reset_after=1)
    assert dict(zip(k.STEP_META, meta)) == dict(L=2, B=4, H=5, Imax=5, reset_after=1)
    assert list(meta[len(k.STEP_META):]) == [3, 5]
    with pytest.raises(KeyError, match="no field \\['Hp'\\]"):
        k.step_meta([3], L=1, B=1, H=5, Imax=5, reset_after=1, Hp=16)


@needs_c
def test_held_check_identity_addresses_and_bytes():
    """``_cgru.held``, the weight cache's check in one call: ``None`` unless the tensors (a sequence, or a dict's
    entries by name) are the held objects at the held addresses; then whether their bytes are the snapshot's."""
    a, b = torch.randn(3, 4), torch.randn(5)
    snap = torch.cat([a.reshape(-1), b]).numpy().view(np.uint8)
    args = (snap.copy(), (48, 20), (a.data_ptr(), b.data_ptr()), (a, b))
    assert C.held(*args, [a, b]) is True
    assert C.held(*args, {"w": a, "b": b, "x": None}, ["w", "b"]) is True
    assert C.held(*args, [a, b.clone()]) is None                              # another object
    assert C.held(*args, {"w": a}, ["w", "b"]) is None                         # a name missing
    assert C.held(*args, [a]) is None                                          # fewer tensors
    b.data[2] += 1
    assert C.held(*args, [a, b]) is False                                      # a value written in place
    b.data = torch.randn(5)
    assert C.held(*args, [a, b]) is None                                       # moved: same object elsewhere
    with pytest.raises(ValueError, match="sizes exceed the snapshot"):
        C.held(snap[:40].copy(), (48, 20), (a.data_ptr(), a.data_ptr()), (a, a), [a, a])
    with pytest.raises(TypeError, match="held"):
        C.held(snap, [48, 20], (a.data_ptr(),), (a,), [a])
