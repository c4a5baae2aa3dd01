r"""The fused GRU recurrence in numba: forward, backward (BPTT) and the streaming step.

The math is that of :mod:`grukit.nn.equations` (``gru_step``: :math:`h' = n + z \odot (h - n)` with
:math:`n = \tanh(i_n + r \odot (W_{hn} h + b_{hn}))`; ``gru_step_cho``: :math:`n = \tanh(i_n + W_{hn}(r \odot h)
+ b_{hn})`), plus evaluation-mode zoneout :math:`h' \leftarrow h' + p (h - h')`. The input projection
``gi = x W_ih^T + b_ih`` of every step is computed before the loop (one matmul); the loop runs the recurrent
matmul and the gates of one step for a block of batch rows, keeping the weights hot in cache.

Layout: ``gi``/``dgi``/``dgh`` ``(T, B, 3H)`` gates ``(r, z, n)``; ``out``/``hp`` ``(T, B, H)``; all at *time
positions*: a reverse direction reads step ``s`` of row ``b`` at ``t = len_b - 1 - s``. Steps past a row's
length leave its state alone and write zeros. Rows ``[r0, r1)`` are independent, so a batch is split across
threads by rows (one parallel region per call, a fixed partition: results do not depend on the thread count).

The recurrent matmul is ``_gemm_acc`` (k-blocked AXPY form, vectorised over the output columns); it reads
``WT = W_hh^T`` ``(H, 3H)`` in the forward pass and ``W_hh`` ``(3H, H)`` itself in the backward pass.
fastmath allows reassociation and FMA contraction only (no NaN/inf assumptions); the order is fixed at compile
time, so results are bit-identical run to run.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .act import sigmoid, tanh

_FM = {"reassoc", "contract", "nsz"}
_TILE = 4096                              # floats of C that _gemm_acc keeps in L1 per tile


def _jit(fn=None, **kw):
    opts = dict(cache=True, fastmath=_FM, nogil=True, error_model="numpy")
    opts.update(kw)
    return njit(**opts)(fn) if fn is not None else njit(**opts)


@_jit
def _gemm_acc(A, a0, M, k0, k1, c0, c1, C, cc0, r0, r1):
    """``C[r, cc0:cc0+n] += sum_i A[r, a0+i] * M[k0+i, c0:c1]`` for rows ``r`` in ``[r0, r1)``, ``n = c1-c0``.

    The innermost loops index 0-based views only: an offset index (``c0 + j``) makes numba emit a negative-
    index check per element, which stops LLVM from vectorising."""
    n = c1 - c0
    rows = max(r1 - r0, 1)
    jw = n if rows * n <= _TILE else max(16, (_TILE // rows) // 16 * 16)   # keep a C tile in L1
    for jt in range(0, n, jw):
        w = min(jw, n - jt)
        k = k0
        while k + 8 <= k1:
            i = a0 + k - k0
            m0, m1 = M[k, c0 + jt:c0 + jt + w], M[k + 1, c0 + jt:c0 + jt + w]
            m2, m3 = M[k + 2, c0 + jt:c0 + jt + w], M[k + 3, c0 + jt:c0 + jt + w]
            m4, m5 = M[k + 4, c0 + jt:c0 + jt + w], M[k + 5, c0 + jt:c0 + jt + w]
            m6, m7 = M[k + 6, c0 + jt:c0 + jt + w], M[k + 7, c0 + jt:c0 + jt + w]
            for r in range(r0, r1):
                v0, v1, v2, v3 = A[r, i], A[r, i + 1], A[r, i + 2], A[r, i + 3]
                v4, v5, v6, v7 = A[r, i + 4], A[r, i + 5], A[r, i + 6], A[r, i + 7]
                c = C[r, cc0 + jt:cc0 + jt + w]
                for j in range(w):
                    c[j] += ((v0 * m0[j] + v1 * m1[j]) + (v2 * m2[j] + v3 * m3[j])) \
                        + ((v4 * m4[j] + v5 * m5[j]) + (v6 * m6[j] + v7 * m7[j]))
            k += 8
        while k < k1:
            i = a0 + k - k0
            m0 = M[k, c0 + jt:c0 + jt + w]
            for r in range(r0, r1):
                v0 = A[r, i]
                c = C[r, cc0 + jt:cc0 + jt + w]
                for j in range(w):
                    c[j] += v0 * m0[j]
            k += 1


@_jit
def _row_after(ir, iz, i_n, gr, gz, gn, h, out, nrow, zo):
    """One reset-after step of one row (1-D views of length H, 0-based so LLVM vectorises the loop).

    ``h`` becomes ``h'`` (also written to ``out``); ``gr``, ``gz``, ``nrow`` are left holding ``r``, ``z``, ``n``."""
    for j in range(h.shape[0]):
        rr = sigmoid(ir[j] + gr[j])
        zz = sigmoid(iz[j] + gz[j])
        nn = tanh(i_n[j] + rr * gn[j])
        hprev = h[j]
        hnew = nn + zz * (hprev - nn)
        hnew = hnew + zo * (hprev - hnew)
        gr[j] = rr
        gz[j] = zz
        nrow[j] = nn
        out[j] = hnew
        h[j] = hnew


@_jit
def _row_cho_r(ir, gr, h, q):
    """Cho form, first half: ``r`` into ``gr`` and ``q = r * h``, the input of ``W_hn``."""
    for j in range(h.shape[0]):
        rr = sigmoid(ir[j] + gr[j])
        gr[j] = rr
        q[j] = rr * h[j]


@_jit
def _row_cho(iz, i_n, gz, gn, h, out, nrow, zo):
    """Cho form, second half (``gn`` holds ``W_hn (r*h) + b_hn``); leaves ``z``, ``n`` in ``gz``, ``nrow``."""
    for j in range(h.shape[0]):
        zz = sigmoid(iz[j] + gz[j])
        nn = tanh(i_n[j] + gn[j])
        hprev = h[j]
        hnew = nn + zz * (hprev - nn)
        hnew = hnew + zo * (hprev - hnew)
        gz[j] = zz
        nrow[j] = nn
        out[j] = hnew
        h[j] = hnew


@_jit
def _copy(dst, src):
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@_jit
def _add(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@_jit
def _fwd_rows(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q,
              proj, x, WihT, bi, blas, r0, r1):
    """Forward recurrence of rows ``[r0, r1)``; ``train`` also stores ``hp`` (h before each step) and
    ``gates`` ``(T, B, 4H)`` = ``(r, z, n, W_hn h + b_hn)`` for the backward pass. With ``proj`` the rows'
    input projection ``gi = x W_ih^T + b_ih`` is computed here first (``x`` ``(T, B, I)``, ``WihT`` ``(I, 3H)``)."""
    T = gi.shape[0]
    H = h0.shape[1]
    H2 = 2 * H
    G = 3 * H
    if proj:
        for t in range(T):
            for r in range(r0, r1):
                _copy(gi[t, r], bi)
            _gemm_acc(x[t], 0, WihT, 0, WihT.shape[0], 0, G, gi[t], 0, r0, r1)     # all rows of the chunk
    for r in range(r0, r1):
        _copy(h[r], h0[r])
        q[r, :] = 0
    nrz = G if reset_after else H2
    for s in range(T):
        if blas:                                                  # many rows (reset-after): a BLAS GEMM
            np.dot(h[r0:r1], WT, gh[r0:r1])
            for r in range(r0, r1):
                _add(gh[r], bh)
        else:
            for r in range(r0, r1):
                _copy(gh[r, :nrz], bh[:nrz])
            _gemm_acc(h, 0, WT, 0, H, 0, nrz, gh, 0, r0, r1)       # gh[:, :nrz] = bh + h W^T
        if not reset_after:                                       # Cho: r first, then W_hn (r * h)
            for r in range(r0, r1):
                L = lens[r]
                t = (L - 1 - s if reverse else s) if s < L else 0
                _row_cho_r(gi[t, r, :H], gh[r, :H], h[r], q[r])
                _copy(gh[r, H2:], bh[H2:])
            _gemm_acc(q, 0, WT, 0, H, H2, G, gh, H2, r0, r1)       # gh[:, 2H:] = b_hn + (r*h) W_hn^T
        for r in range(r0, r1):
            L = lens[r]
            if s >= L:
                continue
            t = L - 1 - s if reverse else s
            if train:
                _copy(hp[t, r], h[r])
            nrow = q[r]                                           # free again: n of this step lands here
            if reset_after:
                _row_after(gi[t, r, :H], gi[t, r, H:H2], gi[t, r, H2:], gh[r, :H], gh[r, H:H2], gh[r, H2:],
                           h[r], out[t, r], nrow, zo)
            else:
                _row_cho(gi[t, r, H:H2], gi[t, r, H2:], gh[r, H:H2], gh[r, H2:], h[r], out[t, r], nrow, zo)
            if train:
                _copy(gates[t, r, :H2], gh[r, :H2])              # r, z
                _copy(gates[t, r, H2:G], nrow)                   # n
                _copy(gates[t, r, G:], gh[r, H2:])               # W_hn h + b_hn (reset-after form)
    for r in range(r0, r1):
        _copy(hT[r], h[r])
        for t in range(lens[r], T):
            out[t, r, :] = 0
            if train:
                hp[t, r, :] = 0                                   # read by dW_hh = dgh^T hp: must be finite


@_jit(parallel=True)
def _fwd_par(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q,
             proj, x, WihT, bi, blas, nchunks):
    B = h0.shape[0]
    for c in prange(nchunks):
        _fwd_rows(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q,
                  proj, x, WihT, bi, blas, c * B // nchunks, (c + 1) * B // nchunks)


_DUMMY: dict = {}


def _dummies(dtype):
    """Placeholders for the arrays a call does not use (numba needs a typed argument), made once per dtype."""
    hit = _DUMMY.get(dtype)
    if hit is None:
        hit = _DUMMY[dtype] = (np.empty((1, 1, 1), dtype), np.empty((1, 1), dtype), np.empty(1, dtype))
    return hit


# From this many batch rows per thread the recurrent matmul of a step (reset-after form) is a BLAS GEMM
# (numba's np.dot: scipy's OpenBLAS, held to one thread per kernel thread): about 2x the k-blocked loop's
# throughput at B=64 (1 thread, H=128: 1.85 vs 2.99 ms per T=100 call), while at 16 rows the loop still wins
# (H=256: 1.40 vs 2.19 ms): no call overhead, no packing.
BLAS_MIN_ROWS = 32
_CONTROLLER: list = []


def use_blas(B: int, nchunks: int, reset_after: bool) -> bool:
    return reset_after and B // max(nchunks, 1) >= BLAS_MIN_ROWS


class _NoLimit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _one_blas_thread(active: bool):
    """Hold the BLAS library numba calls to one thread while a kernel runs (each kernel thread makes its own
    calls: a multi-threaded BLAS inside would oversubscribe the cores)."""
    if not active:
        return _NoLimit()
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def forward(gi, WT, bh, h0, lens, reverse, reset_after, zo, out, hT, hp, gates, nchunks, x=None, WihT=None,
            bi=None, scratch=None, blas=None):
    """Run the forward recurrence (numpy views in, results written to ``out``, ``hT``, ``hp``, ``gates``).

    ``hp``/``gates`` are ``None`` for inference. ``nchunks`` > 1 splits the batch rows across threads. With
    ``x``, ``WihT``, ``bi`` given, ``gi`` is scratch that the kernel fills with the input projection itself.
    ``scratch`` = ``(h, gh, q)`` work arrays ``(B, H)``, ``(B, 3H)``, ``(B, H)`` the caller reuses, if any.
    ``blas``: run each step's recurrent matmul as a BLAS GEMM (default: :func:`use_blas`; ``False`` keeps the
    fixed-order loop, which ``deterministic=True`` asks for)."""
    B, H = h0.shape
    dtype = gi.dtype
    dt = dtype.type
    train = hp is not None
    d3, d2, d1 = _dummies(dtype)
    if not train:
        hp = gates = d3
    proj = x is not None
    if not proj:
        x, WihT, bi = d3, d2, d1
    if scratch is None:
        h, gh, q = np.empty((B, H), dtype), np.empty((B, 3 * H), dtype), np.empty((B, H), dtype)
    else:
        h, gh, q = scratch
    if blas is None:
        blas = use_blas(B, nchunks, reset_after)
    args = (gi, WT, bh, h0, lens, reverse, reset_after, dt(zo), dt(1), out, hT, train, hp, gates, h, gh, q,
            proj, x, WihT, bi, blas)
    with _one_blas_thread(blas):
        if nchunks > 1:
            _fwd_par(*args, nchunks)
        else:
            _fwd_rows(*args, 0, B)


@_jit
def _row_bwd(dh, dout, gr, gz, gn, gq, hprev, zo, one, reset_after, a_r, a_z, a_n, dgi_r, dgi_z, dgi_n):
    """BPTT through the gates of one row and step (1-D views). ``dh`` becomes the direct part of the grad of
    ``h_{t-1}``; ``a_*`` get the grads of the recurrent pre-activations (the reset-after form: all three;
    the Cho form: ``z`` and the candidate's, ``r`` follows in :func:`_row_bwd_cho_r`)."""
    for j in range(dh.shape[0]):
        d = dh[j] + dout[j]
        direct = zo * d                                           # zoneout's path straight to h
        d = d - direct
        zz = gz[j]
        nn = gn[j]
        dan = d * (one - zz) * (one - nn * nn)
        daz = d * (hprev[j] - nn) * zz * (one - zz)
        dh[j] = d * zz + direct
        a_z[j] = daz
        dgi_z[j] = daz
        dgi_n[j] = dan
        if reset_after:
            rr = gr[j]
            dar = dan * gq[j] * rr * (one - rr)
            a_r[j] = dar
            a_n[j] = dan * rr
            dgi_r[j] = dar
        else:
            a_n[j] = dan


@_jit
def _row_bwd_cho_r(dh, dq, gr, hprev, one, a_r, dgi_r, qp):
    """Cho form: the grad ``dq`` of ``q = r*h`` (from ``W_hn``) reaches ``r`` and ``h``."""
    for j in range(dh.shape[0]):
        rr = gr[j]
        hj = hprev[j]
        dar = dq[j] * hj * rr * (one - rr)
        dh[j] += dq[j] * rr
        a_r[j] = dar
        dgi_r[j] = dar
        qp[j] = rr * hj


@_jit
def _bwd_rows(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq,
              blas, r0, r1):
    """BPTT of rows ``[r0, r1)``: writes ``dgi``/``dgh`` (pre-activation grads of the input and recurrent
    projections), ``qp`` (``r*h``, the input of ``W_hn`` in the Cho form) and ``dh0``."""
    T = dout.shape[0]
    H = dhT.shape[1]
    H2 = 2 * H
    G = 3 * H
    for r in range(r0, r1):
        _copy(dh[r], dhT[r])
    for s in range(T - 1, -1, -1):
        for r in range(r0, r1):
            L = lens[r]
            if s >= L:
                A[r, :] = 0                                       # adds nothing in the matmuls below
                continue
            t = L - 1 - s if reverse else s
            g = gates[t, r]
            _row_bwd(dh[r], dout[t, r], g[:H], g[H:H2], g[H2:G], g[G:], hp[t, r], zo, one, reset_after,
                     A[r, :H], A[r, H:H2], A[r, H2:], dgi[t, r, :H], dgi[t, r, H:H2], dgi[t, r, H2:])
            if reset_after:
                _copy(dgh[t, r], A[r])
        if reset_after and blas:                                  # dh += dgh W_hh as a BLAS GEMM
            np.dot(A[r0:r1], W, dq[r0:r1])
            for r in range(r0, r1):
                _add(dh[r], dq[r])
        elif reset_after:
            _gemm_acc(A, 0, W, 0, G, 0, H, dh, 0, r0, r1)          # dh += dgh W_hh
        else:
            for r in range(r0, r1):
                dq[r, :] = 0
            _gemm_acc(A, H2, W, H2, G, 0, H, dq, 0, r0, r1)        # dq = dn_pre W_hn  (grad of r*h)
            for r in range(r0, r1):
                L = lens[r]
                if s >= L:
                    continue
                t = L - 1 - s if reverse else s
                _row_bwd_cho_r(dh[r], dq[r], gates[t, r, :H], hp[t, r], one, A[r, :H], dgi[t, r, :H], qp[t, r])
                _copy(dgh[t, r], A[r])
            _gemm_acc(A, 0, W, 0, H2, 0, H, dh, 0, r0, r1)         # dh += [dr, dz] W_h[rz]
    for r in range(r0, r1):
        _copy(dh0[r], dh[r])
        for t in range(lens[r], T):
            dgi[t, r, :] = 0
            dgh[t, r, :] = 0
            if not reset_after:
                qp[t, r, :] = 0


@_jit(parallel=True)
def _bwd_par(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq, blas,
             nchunks):
    B = dhT.shape[0]
    for c in prange(nchunks):
        _bwd_rows(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq,
                  blas, c * B // nchunks, (c + 1) * B // nchunks)


def backward(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, dgi, dgh, qp, dh0, nchunks, blas=None):
    """Run BPTT; results written to ``dgi``, ``dgh``, ``qp`` (Cho form only; else a dummy) and ``dh0``.
    ``blas`` as in :func:`forward`."""
    B, H = dhT.shape
    dt = dout.dtype.type
    dh = np.empty((B, H), dout.dtype)
    A = np.empty((B, 3 * H), dout.dtype)
    dq = np.empty((B, H), dout.dtype)
    if blas is None:
        blas = use_blas(B, nchunks, reset_after)
    args = (dout, dhT, gates, hp, W, lens, reverse, reset_after, dt(zo), dt(1), dgi, dgh, qp, dh0, dh, A, dq, blas)
    with _one_blas_thread(blas):
        if nchunks > 1:
            _bwd_par(*args, nchunks)
        else:
            _bwd_rows(*args, 0, B)


@_jit
def step(x, h, WihT, WT, b, n_in, reset_after, zo, one, hout, gi, gh, q):
    """One streaming step of every layer: ``x`` ``(B, I)``, ``h``/``hout`` ``(L, B, H)``.

    ``WihT`` ``(L, Imax, 3H)`` holds ``W_ih^T`` of each layer (layer l reads its first ``n_in[l]`` rows),
    ``WT`` ``(L, H, 3H)`` ``W_hh^T``, ``b`` ``(L, 2, 3H)`` the biases ``(b_ih, b_hh)``."""
    L = h.shape[0]
    B = x.shape[0]
    H = h.shape[2]
    H2 = 2 * H
    G = 3 * H
    nrz = G if reset_after else H2
    for layer in range(L):
        for r in range(B):
            _copy(gi[r], b[layer, 0])
            _copy(gh[r, :nrz], b[layer, 1, :nrz])
            _copy(hout[layer, r], h[layer, r])
        if layer == 0:
            _gemm_acc(x, 0, WihT[0], 0, n_in[0], 0, G, gi, 0, 0, B)
        else:
            _gemm_acc(hout[layer - 1], 0, WihT[layer], 0, n_in[layer], 0, G, gi, 0, 0, B)
        hl = hout[layer]                                          # starts as h, becomes h'
        _gemm_acc(hl, 0, WT[layer], 0, H, 0, nrz, gh, 0, 0, B)
        if not reset_after:
            for r in range(B):
                _row_cho_r(gi[r, :H], gh[r, :H], hl[r], q[r])
                _copy(gh[r, H2:], b[layer, 1, H2:])
            _gemm_acc(q, 0, WT[layer], 0, H, H2, G, gh, H2, 0, B)
        for r in range(B):
            if reset_after:
                _row_after(gi[r, :H], gi[r, H:H2], gi[r, H2:], gh[r, :H], gh[r, H:H2], gh[r, H2:], hl[r], hl[r],
                           q[r], zo)
            else:
                _row_cho(gi[r, H:H2], gi[r, H2:], gh[r, H:H2], gh[r, H2:], hl[r], hl[r], q[r], zo)



# The numba packed stream's meta (int64), defined once: these fields in this order, then n_in of every layer.
# step_meta() fills it by name; step_packed() reads the fields at the positions this table gives.
STEP_META = ("L", "B", "H", "Imax", "reset_after")
_L, _B, _H, _IMAX, _RESET_AFTER = range(len(STEP_META))
_N_IN = len(STEP_META)


def step_meta(n_in, **fields) -> np.ndarray:
    """The meta of :func:`step_packed`: ``fields`` by the names of ``STEP_META``, then ``n_in`` per layer; a
    missing or unknown name is a ``KeyError`` naming it."""
    unknown = sorted(set(fields) - set(STEP_META))
    if unknown:
        raise KeyError(f"step_meta: no field {unknown} (fields: {STEP_META})")
    return np.array([fields[name] for name in STEP_META] + list(n_in), dtype=np.int64)


@_jit
def step_packed(x, ws, meta):
    """:func:`step` with every array carved out of one buffer, so a streaming call pays numba's argument
    dispatch for three arrays instead of thirteen (that dispatch is most of a small step's cost).

    ``meta``: see ``STEP_META`` (:func:`step_meta`). ``ws`` holds, in order: ``W_ih^T`` ``(L, Imax, 3H)``,
    ``W_hh^T`` ``(L, H, 3H)``, biases ``(L, 2, 3H)``, the state ``h`` ``(L, B, H)`` (advanced in place), scratch
    ``gi``, ``gh`` ``(B, 3H)`` and ``q`` ``(B, H)``, then ``zoneout`` and ``1``."""
    L, B, H, Imax, reset_after = meta[_L], meta[_B], meta[_H], meta[_IMAX], meta[_RESET_AFTER] != 0
    G = 3 * H
    o = 0
    WihT = ws[o:o + L * Imax * G].reshape((L, Imax, G))
    o += L * Imax * G
    WT = ws[o:o + L * H * G].reshape((L, H, G))
    o += L * H * G
    b = ws[o:o + L * 2 * G].reshape((L, 2, G))
    o += L * 2 * G
    h = ws[o:o + L * B * H].reshape((L, B, H))
    o += L * B * H
    gi = ws[o:o + B * G].reshape((B, G))
    o += B * G
    gh = ws[o:o + B * G].reshape((B, G))
    o += B * G
    q = ws[o:o + B * H].reshape((B, H))
    o += B * H
    step(x, h, WihT, WT, b, meta[_N_IN:_N_IN + L], reset_after, ws[o], ws[o + 1], h, gi, gh, q)
