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
def _fwd_rows(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q, r0, r1):
    """Forward recurrence of rows ``[r0, r1)``; ``train`` also stores ``hp`` (h before each step) and
    ``gates`` ``(T, B, 4H)`` = ``(r, z, n, W_hn h + b_hn)`` for the backward pass."""
    T = gi.shape[0]
    H = h0.shape[1]
    H2 = 2 * H
    G = 3 * H
    for r in range(r0, r1):
        for j in range(H):
            h[r, j] = h0[r, j]
            q[r, j] = 0
    for s in range(T):
        nrz = G if reset_after else H2
        for r in range(r0, r1):
            for j in range(nrz):
                gh[r, j] = bh[j]
        _gemm_acc(h, 0, WT, 0, H, 0, nrz, gh, 0, r0, r1)           # gh[:, :nrz] = bh + h W^T
        if not reset_after:                                       # Cho: r first, then W_hn (r * h)
            for r in range(r0, r1):
                L = lens[r]
                t = (L - 1 - s if reverse else s) if s < L else 0
                for j in range(H):
                    rr = sigmoid(gi[t, r, j] + gh[r, j])
                    gh[r, j] = rr
                    q[r, j] = rr * h[r, j]
                    gh[r, H2 + j] = bh[H2 + j]
            _gemm_acc(q, 0, WT, 0, H, H2, G, gh, H2, r0, r1)       # gh[:, 2H:] = b_hn + (r*h) W_hn^T
        for r in range(r0, r1):
            L = lens[r]
            if s >= L:
                continue
            t = L - 1 - s if reverse else s
            ts = t if train else 0
            rs = r if train else 0
            for j in range(H):
                if reset_after:
                    rr = sigmoid(gi[t, r, j] + gh[r, j])
                    hn = gh[r, H2 + j]
                    nn = tanh(gi[t, r, H2 + j] + rr * hn)
                else:
                    rr = gh[r, j]
                    hn = gh[r, H2 + j]
                    nn = tanh(gi[t, r, H2 + j] + hn)
                zz = sigmoid(gi[t, r, H + j] + gh[r, H + j])
                hprev = h[r, j]
                hnew = nn + zz * (hprev - nn)
                hnew = hnew + zo * (hprev - hnew)
                out[t, r, j] = hnew
                h[r, j] = hnew
                if train:
                    hp[ts, rs, j] = hprev
                    gates[ts, rs, j] = rr
                    gates[ts, rs, H + j] = zz
                    gates[ts, rs, H2 + j] = nn
                    gates[ts, rs, G + j] = hn
    for r in range(r0, r1):
        for j in range(H):
            hT[r, j] = h[r, j]
        for t in range(lens[r], T):
            for j in range(H):
                out[t, r, j] = 0
                if train:
                    hp[t, r, j] = 0                              # read by dW_hh = dgh^T hp: must be finite


@_jit(parallel=True)
def _fwd_par(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q, nchunks):
    B = h0.shape[0]
    for c in prange(nchunks):
        _fwd_rows(gi, WT, bh, h0, lens, reverse, reset_after, zo, one, out, hT, train, hp, gates, h, gh, q,
                  c * B // nchunks, (c + 1) * B // nchunks)


def forward(gi, WT, bh, h0, lens, reverse, reset_after, zo, out, hT, hp, gates, nchunks):
    """Run the forward recurrence (numpy views in, results written to ``out``, ``hT``, ``hp``, ``gates``).

    ``hp``/``gates`` are ``None`` for inference. ``nchunks`` > 1 splits the batch rows across threads."""
    B, H = h0.shape
    dt = gi.dtype.type
    train = hp is not None
    if not train:
        hp = np.empty((1, 1, 1), gi.dtype)
        gates = np.empty((1, 1, 1), gi.dtype)
    h = np.empty((B, H), gi.dtype)
    gh = np.empty((B, 3 * H), gi.dtype)
    q = np.empty((B, H), gi.dtype)
    args = (gi, WT, bh, h0, lens, reverse, reset_after, dt(zo), dt(1), out, hT, train, hp, gates, h, gh, q)
    if nchunks > 1:
        _fwd_par(*args, nchunks)
    else:
        _fwd_rows(*args, 0, B)


@_jit
def _bwd_rows(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq,
              r0, r1):
    """BPTT of rows ``[r0, r1)``: writes ``dgi``/``dgh`` (pre-activation grads of the input and recurrent
    projections), ``qp`` (``r*h``, the input of ``W_hn`` in the Cho form) and ``dh0``."""
    T = dout.shape[0]
    H = dhT.shape[1]
    H2 = 2 * H
    G = 3 * H
    for r in range(r0, r1):
        for j in range(H):
            dh[r, j] = dhT[r, j]
    for s in range(T - 1, -1, -1):
        for r in range(r0, r1):
            L = lens[r]
            if s >= L:
                for j in range(G):
                    A[r, j] = 0
                continue
            t = L - 1 - s if reverse else s
            for j in range(H):
                d = dh[r, j] + dout[t, r, j]
                direct = zo * d                                   # zoneout's path straight to h
                d = d - direct
                rr = gates[t, r, j]
                zz = gates[t, r, H + j]
                nn = gates[t, r, H2 + j]
                hprev = hp[t, r, j]
                dan = d * (one - zz) * (one - nn * nn)
                daz = d * (hprev - nn) * zz * (one - zz)
                dh[r, j] = d * zz + direct
                A[r, H + j] = daz
                if reset_after:
                    dar = dan * gates[t, r, G + j] * rr * (one - rr)
                    A[r, j] = dar
                    A[r, H2 + j] = dan * rr
                    dgi[t, r, j] = dar
                    dgh[t, r, j] = dar
                    dgh[t, r, H + j] = daz
                    dgh[t, r, H2 + j] = dan * rr
                else:
                    A[r, H2 + j] = dan
                    dgh[t, r, H + j] = daz
                    dgh[t, r, H2 + j] = dan
                dgi[t, r, H + j] = daz
                dgi[t, r, H2 + j] = dan
        if reset_after:
            _gemm_acc(A, 0, W, 0, G, 0, H, dh, 0, r0, r1)          # dh += dgh W_hh
        else:
            for r in range(r0, r1):
                for j in range(H):
                    dq[r, j] = 0
            _gemm_acc(A, H2, W, H2, G, 0, H, dq, 0, r0, r1)        # dq = dn_pre W_hn  (grad of r*h)
            for r in range(r0, r1):
                L = lens[r]
                if s >= L:
                    continue
                t = L - 1 - s if reverse else s
                for j in range(H):
                    rr = gates[t, r, j]
                    hprev = hp[t, r, j]
                    dar = dq[r, j] * hprev * rr * (one - rr)
                    dh[r, j] += dq[r, j] * rr
                    A[r, j] = dar
                    dgi[t, r, j] = dar
                    dgh[t, r, j] = dar
                    qp[t, r, j] = rr * hprev
            _gemm_acc(A, 0, W, 0, H2, 0, H, dh, 0, r0, r1)         # dh += [dr, dz] W_h[rz]
    for r in range(r0, r1):
        for j in range(H):
            dh0[r, j] = dh[r, j]
        for t in range(lens[r], T):
            for j in range(G):
                dgi[t, r, j] = 0
                dgh[t, r, j] = 0
            if not reset_after:
                for j in range(H):
                    qp[t, r, j] = 0


@_jit(parallel=True)
def _bwd_par(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq, nchunks):
    B = dhT.shape[0]
    for c in prange(nchunks):
        _bwd_rows(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, one, dgi, dgh, qp, dh0, dh, A, dq,
                  c * B // nchunks, (c + 1) * B // nchunks)


def backward(dout, dhT, gates, hp, W, lens, reverse, reset_after, zo, dgi, dgh, qp, dh0, nchunks):
    """Run BPTT; results written to ``dgi``, ``dgh``, ``qp`` (Cho form only; else a dummy) and ``dh0``."""
    B, H = dhT.shape
    dt = dout.dtype.type
    dh = np.empty((B, H), dout.dtype)
    A = np.empty((B, 3 * H), dout.dtype)
    dq = np.empty((B, H), dout.dtype)
    args = (dout, dhT, gates, hp, W, lens, reverse, reset_after, dt(zo), dt(1), dgi, dgh, qp, dh0, dh, A, dq)
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
    for layer in range(L):
        for r in range(B):
            for j in range(G):
                gi[r, j] = b[layer, 0, j]
        if layer == 0:
            _gemm_acc(x, 0, WihT[0], 0, n_in[0], 0, G, gi, 0, 0, B)
        else:
            _gemm_acc(hout[layer - 1], 0, WihT[layer], 0, n_in[layer], 0, G, gi, 0, 0, B)
        hl = h[layer]
        nrz = G if reset_after else H2
        for r in range(B):
            for j in range(nrz):
                gh[r, j] = b[layer, 1, j]
        _gemm_acc(hl, 0, WT[layer], 0, H, 0, nrz, gh, 0, 0, B)
        if not reset_after:
            for r in range(B):
                for j in range(H):
                    rr = sigmoid(gi[r, j] + gh[r, j])
                    gh[r, j] = rr
                    q[r, j] = rr * hl[r, j]
                    gh[r, H2 + j] = b[layer, 1, H2 + j]
            _gemm_acc(q, 0, WT[layer], 0, H, H2, G, gh, H2, 0, B)
        for r in range(B):
            for j in range(H):
                if reset_after:
                    rr = sigmoid(gi[r, j] + gh[r, j])
                    nn = tanh(gi[r, H2 + j] + rr * gh[r, H2 + j])
                else:
                    nn = tanh(gi[r, H2 + j] + gh[r, H2 + j])
                zz = sigmoid(gi[r, H + j] + gh[r, H + j])
                hprev = hl[r, j]
                hnew = nn + zz * (hprev - nn)
                hout[layer, r, j] = hnew + zo * (hprev - hnew)
