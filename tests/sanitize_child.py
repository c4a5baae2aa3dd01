"""The child process of ``tests/test_sanitizers.py``: every entry point of grukit's C kernels, run from a build
made with AddressSanitizer and UndefinedBehaviorSanitizer, checked against the reference backend.

    python tests/sanitize_child.py MODULE_NAME SO_PATH [overflow]

loads ``SO_PATH`` as ``MODULE_NAME`` (``grukit.nn.backends._fused._cgru``) before grukit is imported, so every
grukit path that asks for the compiled kernels gets the sanitized build. It runs: the panel matmul (``gemm``); one
layer and direction (``forward``) on 1, 2 and 3 threads, batch chunks, hidden-unit split and pipelined, with
padded lengths (a zero length included), reverse, zoneout and an interleaved output; whole GRUs (``Plan.run``)
through ``GRU.forward`` (general and fast paths, 1 and 2 torch threads) and directly with every thread choice and
layer range; streams (``Stream``: numpy frames in C, torch frames through ``GRUStream._frame``, ``advance``, one
row and several, 1 to 3 threads), ``GRU.step``, ``same`` (stale weights), the size checks at the C boundary,
two Python threads sharing a plan and a stream's pool, and a fork after the helpers started. Results must equal
the reference backend within 1e-5 and be bitwise equal across thread counts. Prints ``sanitize-child: ok``
and a summary, or the mismatches (exit 1); a sanitizer error aborts the process with its report on stderr.

``overflow`` instead makes one deliberate out-of-bounds read (``Plan.run`` trusts the input address it is given:
here an array half the size the call reads), so the test can see that the build and the preload really catch
one: AddressSanitizer must abort it with a heap-buffer-overflow report.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time

name, path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(name, path)
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)
sys.modules[name] = C                                  # grukit's ``from ._fused import _cgru`` now finds this build

import numpy as np  # noqa: E402

if sys.argv[3:] == ["overflow"]:
    I, H, Hp, T, B = 4, 8, 16, 50, 2
    w = [np.zeros(n, np.float32) for n in (I * 3 * Hp, 3 * Hp, H * 3 * Hp, 3 * Hp)]
    x = np.zeros(T * B * I // 2, np.float32)           # half of the (T, B, I) input the call reads
    C.Plan(w, 1, 1, I, H, Hp, True).run(x.ctypes.data, T, B, 0, None, 0.0, 1, 1, True)
    print("sanitize-child: the overflow went unnoticed")
    sys.exit(0)
import torch  # noqa: E402

from grukit.nn import GRU  # noqa: E402
from grukit.nn.backends import fused_cpu, fused_kernels  # noqa: E402

assert fused_cpu.cgru() is C, "grukit did not pick up the sanitized build"
torch.set_num_threads(1)
fused_kernels.cores = lambda: 2                        # the thread policy may pick 2 threads on any machine
ATOL = 1e-5
failures: list[str] = []
checks = 0


def close(got, want, what: str, atol: float = ATOL) -> None:
    global checks
    checks += 1
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        failures.append(f"{what}: shape {got.shape} != {want.shape}")
    elif not np.all(np.abs(got - want) <= atol):
        failures.append(f"{what}: max |diff| {np.nanmax(np.abs(got - want)):.3g} > {atol}")


def same_bits(got, want, what: str) -> None:
    global checks
    checks += 1
    if not np.array_equal(np.asarray(got), np.asarray(want)):
        failures.append(f"{what}: not bitwise equal")


def raises(fn, what: str) -> None:
    global checks
    checks += 1
    try:
        fn()
    except (ValueError, TypeError):
        return
    failures.append(f"{what}: no error")


def pair(I, H, **kw):
    torch.manual_seed(I * 100 + H)
    ref = GRU(I, H, backend="reference", **kw).eval()
    ours = GRU(I, H, backend="fused_cpu", **kw).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


rng = np.random.default_rng(0)

# ---------------------------------------------------------------- gemm: the panel matmul
for M, K, H in [(0, 5, 7), (1, 1, 1), (5, 33, 48), (13, 129, 16), (3, 300, 20)]:
    w = torch.from_numpy(rng.standard_normal((3 * H, K)).astype(np.float32))
    Wp, Hp = fused_cpu._pack_panels(w, H), fused_cpu._padded(H)
    P = 3 * Hp // 16
    b = fused_cpu._pack_bias(torch.from_numpy(rng.standard_normal(3 * H).astype(np.float32)), H)
    A = rng.standard_normal((M, K)).astype(np.float32)
    WT = np.zeros((K, 3, Hp))
    WT[:, :, :H] = w.numpy().T.reshape(K, 3, H)
    want = A.astype(np.float64) @ WT.reshape(K, 3 * Hp) + b
    out = np.full((M, 3 * Hp), np.nan, np.float32)
    C.gemm(A, M, K, Wp, 0, P, out, 3 * Hp, b)
    close(out, want, f"gemm M={M} K={K} H={H}", 1e-4)     # float32 sums of up to 300 terms
    part = np.full((M, 16 * (P - 1)), np.nan, np.float32)            # panels 1.. only, no bias
    C.gemm(A, M, K, Wp, 1, P - 1, part, 16 * (P - 1), None)
    close(part, want[:, 16:] - b[16:], f"gemm p0=1 M={M} K={K} H={H}", 1e-4)

# ---------------------------------------------------------------- forward: one layer and direction
# (B, H, I, T): one row (split / pipelined on several threads), rows >= threads (batch chunks), several H
for B, H, I, T in [(1, 5, 3, 13), (1, 40, 7, 24), (1, 130, 9, 17), (2, 48, 4, 11), (3, 24, 11, 9), (9, 16, 4, 7)]:
    for reset_after in (True, False):
        zo = 0.3 if H == 24 else 0.0
        ref, _ = pair(I, H, reset_after=reset_after, bidirectional=True, zoneout=zo)
        x = torch.randn(T, B, I)
        h0 = torch.randn(2, B, H)
        lens = torch.tensor([T - (b * 5) % T for b in range(B)])     # padded rows (the first one full)
        with torch.no_grad():
            y_ref, h_ref = ref(x, h0, lengths=lens)
        packs = [fused_cpu._packed_layer(ref.layer_params(0, d), H) for d in range(2)]
        Hp = fused_cpu._padded(H)
        lens_np = lens.numpy().astype(np.int64)
        runs = {}
        for n, split in [(1, True), (2, True), (2, False), (3, True), (3, False)]:
            out = np.full((T, B, 2 * H), np.nan, np.float32)
            hT = np.full((2, B, H), np.nan, np.float32)
            for d in range(2):
                C.forward(x.numpy(), *packs[d], h0[d].numpy(), lens_np, out, hT[d], T, B, I, H, Hp, d == 1,
                          reset_after, zo, 2 * H, d * H, n, split)
            tag = f"forward B={B} H={H} I={I} T={T} reset_after={reset_after} threads={n} split={split}"
            close(out, y_ref, tag)
            close(hT, h_ref, tag + " hT")
            runs[(n, split)] = (out, hT)
            same_bits(out, runs[(1, True)][0], tag + " vs 1 thread")
            same_bits(hT, runs[(1, True)][1], tag + " hT vs 1 thread")
        zl = lens_np.copy()
        zl[-1] = 0                                                   # a row of length 0: h0 out, zeros
        for n, split in [(1, True), (2, True), (2, False)]:
            out = np.full((T, B, H), np.nan, np.float32)
            hT = np.full((B, H), np.nan, np.float32)
            C.forward(x.numpy(), *packs[0], h0[0].numpy(), zl, out, hT, T, B, I, H, Hp, False, reset_after, zo, H, 0,
                      n, split)
            same_bits(hT[-1], h0[0, -1].numpy(), f"forward zero-length row threads={n}")
            same_bits(out[:, -1], np.zeros((T, H), np.float32), f"forward zero-length row output threads={n}")

# ---------------------------------------------------------------- Plan: whole GRUs
SPECS = [dict(), dict(reset_after=False), dict(bidirectional=True), dict(num_layers=3),
         dict(num_layers=2, bidirectional=True, reset_after=False), dict(bias=False), dict(zoneout=0.3),
         dict(batch_first=True)]
for kw in SPECS:
    # on 2 torch threads the thread policy itself picks: one thread, pipelined (T=40, H=48), batch rows, unit split
    for T, B, I, H in [(9, 1, 7, 5), (40, 1, 40, 48), (12, 4, 7, 40), (20, 3, 5, 130), (8, 1, 5, 130)]:
        ref, ours = pair(I, H, **kw)
        L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
        bf = kw.get("batch_first", False)
        x = torch.randn((B, T, I) if bf else (T, B, I))
        h0 = torch.randn(L * D, B, H)
        lens = torch.tensor([T - (b * 3) % T for b in range(B)])
        tag = f"GRU {kw} T={T} B={B} I={I} H={H}"
        calls = {"": ((x, h0), {}), " no h0": ((x,), {}), " lengths": ((x, h0), dict(lengths=lens))}
        with torch.no_grad():
            refs = {what: ref(*a, **k) for what, (a, k) in calls.items()}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                for what in ["", " no h0", "", " lengths"]:                  # the second "" takes the fast path
                    a, k = calls[what]
                    got = ours(*a, **k)
                    close(got[0], refs[what][0], f"{tag}{what} threads={threads}")
                    close(got[1], refs[what][1], f"{tag}{what} h_n threads={threads}")
        torch.set_num_threads(1)
        plan = fused_cpu.compiled_plan(C, ours)
        xt = (x.transpose(0, 1) if bf else x).contiguous()
        zo = kw.get("zoneout", 0.0)
        one = plan.run(xt.data_ptr(), T, B, h0.data_ptr(), lens.numpy(), zo, 1, 1, True)
        close(one[0], refs[" lengths"][0].transpose(0, 1) if bf else refs[" lengths"][0], f"{tag} plan.run")
        close(one[1], refs[" lengths"][1], f"{tag} plan.run h_n")
        for n0, n1, split in [(2, 2, True), (2, 2, False), (3, 2, True), (2, 3, False)]:
            got = plan.run(xt.data_ptr(), T, B, h0.data_ptr(), lens.numpy(), zo, n0, n1, split)
            same_bits(got[0], one[0], f"{tag} plan.run threads={n0},{n1} split={split}")
            same_bits(got[1], one[1], f"{tag} plan.run h_n threads={n0},{n1} split={split}")
        if L > 1:                                                    # layer by layer (dropout's path)
            layer_in, hs = xt, []
            for layer in range(L):
                out, h = plan.run(layer_in.data_ptr(), T, B, h0[layer * D].data_ptr(), lens.numpy(), zo, 2, 2,
                                  layer % 2 == 0, layer, layer + 1)
                hs.append(h)
                layer_in = torch.from_numpy(out)
            same_bits(layer_in.numpy(), one[0], f"{tag} plan.run layer by layer")
            same_bits(np.concatenate(hs), one[1], f"{tag} plan.run layer by layer h_n")
            torch.manual_seed(0)
            drop = GRU(I, H, dropout=0.5, **kw).train()
            with torch.no_grad():
                y, _ = drop(x, h0)                                   # training mode, no grad: per-layer runs
            checks += 1
            if not (y.shape == refs[""][0].shape and torch.isfinite(y).all()):
                failures.append(f"{tag} training-mode inference with dropout: shape {tuple(y.shape)} or not finite")

# ---------------------------------------------------------------- streams and step
for kw in [dict(), dict(reset_after=False, num_layers=2), dict(zoneout=0.25, bias=False)]:
    for B, H in [(1, 5), (1, 40), (3, 40), (2, 200)]:
        I, T = 6, 7
        ref, ours = pair(I, H, **kw)
        xs = torch.randn(T, B, I)
        h0 = torch.randn(kw.get("num_layers", 1), B, H)
        with torch.no_grad():
            y_ref, h_ref = ref(xs, h0)
        tag = f"stream {kw} B={B} H={H}"
        for threads in (1, 2):
            torch.set_num_threads(threads)
            s = ours.stream(batch_size=B, h0=h0)
            for t in range(T):
                if t % 3 == 0:
                    y = s(xs[t].numpy())                             # numpy frame: checked and run in C
                elif t % 3 == 1:
                    y = s(xs[t]).numpy()                             # torch frame: GRUStream._frame, advance
                else:
                    y = s(xs[t, 0].numpy()) if B == 1 else s(np.asfortranarray(xs[t].numpy()))
                close(y.reshape(B, H), y_ref[t], f"{tag} threads={threads} frame {t}")
            close(s.state, h_ref, f"{tag} threads={threads} state")
            s.reset(torch.tensor([True] + [False] * (B - 1)))
            close(s.state[:, 0], h0[:, 0], f"{tag} reset mask")
            checks += 1
            if s.stale:
                failures.append(f"{tag}: stale before any weight change")
        torch.set_num_threads(1)
        outs = {}
        for n in (1, 2, 3):
            frames = []
            st = fused_cpu._compiled_stream(C, ours, B)
            k = C.Stream(st.ws, st.meta, n)
            st.state[...] = h0.numpy()
            for t in range(T):
                frames.append(k(np.ascontiguousarray(xs[t].numpy())) if t % 2 else
                              (k.advance(xs[t].numpy()), st.state[-1].copy())[1])
            outs[n] = (np.stack(frames), st.state.copy())
            close(outs[n][0], y_ref.numpy(), f"{tag} Stream threads={n}")
            same_bits(outs[n][0], outs[1][0], f"{tag} Stream threads={n} vs 1")
            same_bits(outs[n][1], outs[1][1], f"{tag} Stream state threads={n} vs 1")
        raises(lambda: k(np.zeros((B, I + 1), np.float32)), f"{tag} bare Stream wrong frame")
        raises(lambda: k.advance(np.zeros(B * I + 1, np.float32)), f"{tag} advance wrong frame")
        k.release()
        raises(lambda: k.advance(np.zeros(B * I, np.float32)), f"{tag} released Stream")
        with torch.no_grad():                                        # GRU.step: general path, then fast path
            h = h0
            for t in range(T):
                y, h = ours.step(xs[t], h)
                close(y, y_ref[t], f"{tag} GRU.step {t}")
        s = ours.stream(batch_size=B)
        with torch.no_grad():
            ours.weight_hh_l0.add_(0.01)                             # same(): the snapshot no longer holds
        checks += 1
        if not s.stale:
            failures.append(f"{tag}: a weight change was not seen")
        s.refresh()
        checks += 1
        if s.stale:
            failures.append(f"{tag}: stale after refresh")

# ---------------------------------------------------------------- same() and the size checks at the C boundary
a = rng.standard_normal(10).astype(np.float32)
snap = a.tobytes()
checks += 1
if not C.same(snap, [16, 24], [a.ctypes.data, a.ctypes.data + 16]):
    failures.append("same: equal memory reported different")
a[7] += 1
checks += 1
if C.same(snap, [16, 24], [a.ctypes.data, a.ctypes.data + 16]):
    failures.append("same: a change was not seen")
raises(lambda: C.same(snap, [48], [a.ctypes.data]), "same: sizes past the snapshot")
raises(lambda: C.same(snap, [8, 8], [a.ctypes.data]), "same: sizes and addresses disagree")
m = GRU(4, 8)
wih, b, whh, _ = fused_cpu._packed_layer(m.layer_params(0, 0), 8)
Hp = fused_cpu._padded(8)
x, h0, out, hT = (np.zeros(s, np.float32) for s in [(3, 2, 4), (2, 8), (3, 2, 8), (2, 8)])
lens = np.array([3, 3], np.int64)
raises(lambda: C.forward(x, wih, b, whh, b, h0, lens, out, hT, 3, 2, 5, 8, Hp, False, True, 0.0, 8, 0, 1), "forward I")
raises(lambda: C.forward(x, wih, b, whh, b, h0, np.array([3, 4]), out, hT, 3, 2, 4, 8, Hp, False, True, 0.0, 8, 0, 1),
       "forward length past T")
raises(lambda: C.forward(x, wih, b, whh, b, h0, lens, out[:2], hT, 3, 2, 4, 8, Hp, False, True, 0.0, 8, 0, 1),
       "forward short out")
raises(lambda: C.gemm(x, 6, 4, wih, 0, 3 * Hp // 16 + 1, out, 3 * Hp, None), "gemm panels past Wp")
raises(lambda: C.Plan([wih, b, whh], 1, 1, 4, 8, Hp, True), "Plan 3 arrays")
raises(lambda: C.Plan([wih, b, whh, b], 1, 1, 5, 8, Hp, True), "Plan wrong I")
plan = C.Plan([wih, b, whh, b], 1, 1, 4, 8, Hp, True)
raises(lambda: plan.run(x.ctypes.data, 3, 2, 0, np.array([3, 4]), 0.0, 1, 1, True), "Plan.run length past T")
raises(lambda: plan.run(x.ctypes.data, 3, 2, 0, None, 0.0, 1, 1, True, 0, 2), "Plan.run layers past L")
st = fused_cpu._compiled_stream(C, m.eval(), 1)
raises(lambda: C.Stream(st.ws, st.meta[:-1].copy()), "Stream short meta")
bad = st.meta.copy()
bad[len(C.STREAM_META) + C.STREAM_LAYER_META.index("off_whh")] = st.ws.size
raises(lambda: C.Stream(st.ws, bad), "Stream offset past ws")

# ---------------------------------------------------------------- two Python threads, one plan and one pool
ref, ours = pair(30, 144, bidirectional=True)
x = torch.randn(40, 1, 30)
plan = fused_cpu.compiled_plan(C, ours)
want = plan.run(x.data_ptr(), 40, 1, 0, None, 0.0, 1, 1, True)[0]
got: list = []


def worker(split: bool) -> None:
    for _ in range(8):
        got.append(plan.run(x.data_ptr(), 40, 1, 0, None, 0.0, 2, 2, split)[0])


ts = [threading.Thread(target=worker, args=(s,)) for s in (True, False)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for i, g in enumerate(got):
    same_bits(g, want, f"concurrent plan.run call {i}")

# ---------------------------------------------------------------- fork after the helpers started
pid = os.fork()
if pid == 0:                                           # the child has no helpers: calls run on this thread alone
    ok = np.array_equal(plan.run(x.data_ptr(), 40, 1, 0, None, 0.0, 2, 2, True)[0], want)
    os._exit(0 if ok else 3)
for _ in range(600):                                   # 60 s at most: a hang is a failure, not a stuck suite
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    done, status = os.waitpid(pid, 0)
    failures.append("forked child: no answer in 60 s")
checks += 1
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
    failures.append(f"forked child: status {status}")

print(f"sanitize-child: isa={C.isa()} checks={checks} counts={C.counts()} file={C.__file__}")
if failures:
    print("\n".join(failures[:40]))
    sys.exit(1)
print("sanitize-child: ok")
