"""The fused CPU backend's training path: one layer and direction forward (numba, stashing what BPTT reads),
its backward, and the autograd function joining them; the backward is itself differentiable (double backward,
batched gradients) through a recompute in the reference backend's torch ops.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from ..spec import GRUSpec
from .fused_kernels import kernels, threads_for

__all__ = ["lens_array", "stack_layers", "GRULayerFn", "layer_forward", "layer_backward", "reference_layer", "in_proj", "transposed_np",
           "bias_np", "as_numpy"]


_FULL_LENS: dict = {}


def lens_array(lengths: Tensor | None, T: int, B: int) -> np.ndarray:
    """Each sequence's length as the kernels read it, int64 (B,); every row T when ``lengths`` is None (then a
    shared array: the kernels only read it)."""
    if lengths is None:
        hit = _FULL_LENS.get((B, T))
        if hit is None:
            if len(_FULL_LENS) > 256:
                _FULL_LENS.clear()
            hit = _FULL_LENS[(B, T)] = np.full(B, T, dtype=np.int64)
        return hit
    if lengths.dtype != torch.int64 or lengths.device.type != "cpu":
        lengths = lengths.to("cpu", torch.int64)
    return np.ascontiguousarray(lengths.detach().numpy())


def stack_layers(module, x: Tensor, hx: Tensor, layer) -> tuple[Tensor, Tensor]:
    """A GRU's layers and directions over ``x`` (T, B, I) from ``hx`` (L*D, B, H), with dropout between layers
    in training: ``layer(layer_in, h0, params, reverse) -> (out, hT)`` runs one direction of one layer.
    Returns (out (T, B, D*H), h_n (L*D, B, H))."""
    spec = module.spec
    D = spec.num_directions
    layer_in, h_n = x, []
    for i in range(spec.num_layers):
        outs = []
        for d in range(D):
            out, hT = layer(layer_in, hx[i * D + d], module.layer_params(i, d), d == 1)
            outs.append(out)
            h_n.append(hT)
        layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if i < spec.num_layers - 1 and spec.dropout > 0 and module.training:
            layer_in = torch.nn.functional.dropout(layer_in, spec.dropout, training=True)
    return layer_in, torch.stack(h_n)


def as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().numpy() if t.requires_grad else t.numpy()       # detach() costs ~0.4 us


@contextmanager
def one_blas_thread(active: bool):
    """torch's matmuls on one thread inside (when ``active``): a BLAS may split a GEMM's reduction between
    threads and add the parts in another order, so deterministic=True runs the few GEMMs of the training path
    on one thread to stay bit-identical across thread counts (seen with MKL on an AVX-512 machine)."""
    before = torch.get_num_threads()
    if not active or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_proj(x: Tensor, w_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """``gi = x W_ih^T + b_ih`` for every step at once: ``(T, B, I)`` -> ``(T, B, 3H)``."""
    T, B, I = x.shape
    x2 = x.reshape(T * B, I)                                          # (T*B, I)
    gi = torch.mm(x2, w_ih.t()) if b_ih is None else torch.addmm(b_ih, x2, w_ih.t())
    return gi.view(T, B, -1)                                          # (T, B, 3H)


def bias_np(b_hh: Tensor | None, H: int, dtype) -> np.ndarray:
    return np.zeros(3 * H, dtype=dtype) if b_hh is None else as_numpy(b_hh).copy()   # a copy: packed forms never alias


def transposed_np(w: Tensor, b: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """``W^T`` ``(K, 3H)`` and ``b`` ``(3H,)`` (zeros when absent) as contiguous numpy arrays."""
    WT = np.ascontiguousarray(as_numpy(w).T)                                # (K, 3H)
    return WT, bias_np(b, w.shape[0] // 3, WT.dtype)


def layer_forward(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
                  lens: np.ndarray, reverse: bool, reset_after: bool, zo: float, blas: bool | None = None):
    """One layer and direction of the training forward, without autograd: ``x`` ``(T, B, I)``, ``h0``
    ``(B, H)`` -> ``(out, h_T, hp, gates)``, the last two the stash the backward pass reads. ``blas=False``
    keeps the fixed-order matmul loop (deterministic=True); ``None`` lets the kernels choose."""
    T, B, I = x.shape
    H = h0.shape[1]
    with torch.no_grad(), one_blas_thread(blas is False):
        gi = in_proj(x.detach(), w_ih.detach(), None if b_ih is None else b_ih.detach()).numpy()
    WT, bh = transposed_np(w_hh, b_hh)
    out = torch.empty(T, B, H, dtype=x.dtype)
    hT = torch.empty(B, H, dtype=x.dtype)
    hp = torch.empty(T, B, H, dtype=x.dtype)
    gates = torch.empty(T, B, 4 * H, dtype=x.dtype)
    kernels().forward(gi, WT, bh, as_numpy(h0.contiguous()), lens, reverse, reset_after, zo, out.numpy(), hT.numpy(),
                 hp.numpy(), gates.numpy(), threads_for(B, H, T), blas=blas)
    return out, hT, hp, gates


class GRULayerFn(torch.autograd.Function):
    """One layer and direction of the fused GRU as an autograd function (BPTT in numba).

    ``apply(x (T,B,I), h0 (B,H), w_ih, w_hh, b_ih, b_hh, lens, reverse, reset_after, zo[, blas]) -> (out, h_T)``;
    gradients flow to ``x``, ``h0`` and all four weights (``b_*`` may be ``None``).

    The backward is itself differentiable: when autograd records it (``create_graph=True``: double backward,
    gradient penalties, ``gradgradcheck``) or its incoming gradients are batched (``is_grads_batched=True``), it
    recomputes the layer with the reference backend's torch ops and differentiates that (see
    :func:`_differentiable_backward`); otherwise the numba BPTT kernel runs.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, lens, reverse, reset_after, zo, blas=None):
        out, hT, hp, gates = layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lens, reverse, reset_after, zo, blas)
        ctx.save_for_backward(x, w_ih, w_hh, hp, gates, h0, b_ih, b_hh)
        ctx.cfg = (lens, reverse, reset_after, zo, b_ih is not None, blas)
        return out, hT

    @staticmethod
    def backward(ctx, dout, dhT):
        if torch.is_grad_enabled() or _batched(dout) or _batched(dhT):
            return _differentiable_backward(ctx, dout, dhT)
        x, w_ih, w_hh, hp, gates, _, _, _ = ctx.saved_tensors
        lens, reverse, reset_after, zo, has_bias, blas = ctx.cfg
        grads = layer_backward(dout, dhT, x, w_ih, w_hh, hp, gates, lens, reverse, reset_after, zo, has_bias,
                               ctx.needs_input_grad[:6], blas)
        return (*grads, None, None, None, None, None)


def layer_backward(dout, dhT, x, w_ih, w_hh, hp, gates, lens: np.ndarray, reverse: bool, reset_after: bool,
                   zo: float, has_bias: bool, need=(True,) * 6, blas: bool | None = None) -> tuple:
    """The gradients of one layer and direction of the training forward (the BPTT kernel, then three matmuls
    for the weights): ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)``, ``None`` where ``need`` says no (or no bias).
    ``dout``/``dhT`` may be ``None`` (zeros); ``hp`` and ``gates`` are :func:`layer_forward`'s stash."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    dout = torch.zeros(T, B, H, dtype=x.dtype) if dout is None else dout.contiguous()
    dhT = torch.zeros(B, H, dtype=x.dtype) if dhT is None else dhT.contiguous()
    dgi = torch.empty(T, B, 3 * H, dtype=x.dtype)
    dgh = torch.empty(T, B, 3 * H, dtype=x.dtype)
    qp = torch.empty(T, B, H, dtype=x.dtype) if not reset_after else torch.empty(1, 1, 1, dtype=x.dtype)
    dh0 = torch.empty(B, H, dtype=x.dtype)
    kernels().backward(dout.numpy(), dhT.numpy(), as_numpy(gates.contiguous()), as_numpy(hp.contiguous()), as_numpy(w_hh.contiguous()),
                  lens, reverse, reset_after, zo, dgi.numpy(), dgh.numpy(), qp.numpy(), dh0.numpy(),
                  threads_for(B, H, T), blas=blas)
    dgi2 = dgi.view(T * B, 3 * H)                                       # (T*B, 3H)
    dgh2 = dgh.view(T * B, 3 * H)
    with one_blas_thread(blas is False):
        dx = (dgi2 @ w_ih).view(T, B, I) if need[0] else None           # (T, B, I)
        dw_ih = dgi2.t() @ x.reshape(T * B, I) if need[2] else None     # (3H, I)
        dw_hh = None
        if need[3]:
            hp2 = hp.reshape(T * B, H)
            if reset_after:
                dw_hh = dgh2.t() @ hp2                                  # (3H, H)
            else:                                                       # W_hn reads r*h, W_h[rz] read h
                dw_hh = torch.cat([dgh2[:, :2 * H].t() @ hp2, dgh2[:, 2 * H:].t() @ qp.view(T * B, H)])
    db_ih = dgi2.sum(0) if has_bias and need[4] else None
    db_hh = dgh2.sum(0) if has_bias and need[5] else None
    return dx, dh0 if need[1] else None, dw_ih, dw_hh, db_ih, db_hh


def _batched(t) -> bool:
    """Whether ``t`` is a vmap-batched tensor (torch.func's, or autograd's ``is_grads_batched`` legacy one)."""
    return t is not None and (torch._C._functorch.is_functorch_wrapped_tensor(t)
                              or "Batched" in str(torch._C._dispatch_keys(t)))


def reference_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lens: np.ndarray, reverse: bool, reset_after: bool,
                    zo: float) -> tuple[Tensor, Tensor]:
    """The same layer as :class:`GRULayerFn` in torch ops (the reference backend's loop): ``(out, h_T)``."""
    from ..spec import LayerParams
    from .reference import ReferenceBackend, reverse_padded, time_mask
    T = x.shape[0]
    lengths = None if bool((lens == T).all()) else torch.from_numpy(np.asarray(lens, dtype=np.int64))
    spec = GRUSpec(x.shape[-1], h0.shape[-1], reset_after=reset_after, zoneout=float(zo))
    p = LayerParams(w_ih, w_hh, b_ih, b_hh)
    seq = reverse_padded(x, lengths) if reverse else x
    out, hT = ReferenceBackend()._direction(spec, p, seq, h0, time_mask(lengths, T, x.device), False)
    return (reverse_padded(out, lengths) if reverse else out), hT


def _differentiable_backward(ctx, dout, dhT):
    """GRULayerFn's gradients as a differentiable function of its inputs and of ``dout``/``dhT``: the layer is
    recomputed in torch ops and differentiated with ``torch.autograd.grad`` (``create_graph`` when autograd is
    recording, so the result can be differentiated again)."""
    x, w_ih, w_hh, _, _, h0, b_ih, b_hh = ctx.saved_tensors
    lens, reverse, reset_after, zo, _, _ = ctx.cfg
    create = torch.is_grad_enabled()
    need = ctx.needs_input_grad[:6]
    ins = [x, h0, w_ih, w_hh, b_ih, b_hh]
    with torch.enable_grad():
        if not create:                                                 # a fresh graph, off the caller's
            ins = [None if t is None else t.detach().requires_grad_(n) for t, n in zip(ins, need)]
        out, hT = reference_layer(*ins, lens, reverse, reset_after, zo)
        wrt = [t for t, n in zip(ins, need) if n and t is not None]
        grads = iter(torch.autograd.grad((out, hT), wrt, (dout, dhT), create_graph=create, allow_unused=True,
                                         materialize_grads=True))
    res = [next(grads) if n and t is not None else None for t, n in zip(ins, need)]
    return (*res, None, None, None, None, None)
