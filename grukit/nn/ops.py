"""The fused GRU layer as PyTorch operators (``torch.library.custom_op``), for torch.compile, torch.export and
torch.func.

``torch.ops.grukit.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, zoneout)`` runs one
layer and direction with the fused CPU kernels and returns ``(out (T,B,H), h_T (B,H), hp, gates)`` (the last two
are what its backward reads); ``torch.ops.grukit.gru_layer_backward`` is that backward (the BPTT kernel). Each
has a fake implementation (output shapes only, so the compiler and exporter trace it with symbolic batch and
time sizes), the pair is joined with ``register_autograd`` and the forward has a vmap rule (one call per vmapped
slice; a batch of inputs with shared weights folds into the kernel's batch instead).

``GRU.forward`` calls :func:`gru_forward_ops` while ``torch.compile`` or ``torch.export`` traces it: the graph
then holds these operators, with no graph break, where ``torch.nn.GRU`` is a permanent break (pytorch #91439).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .backends.fused_autograd import layer_backward, layer_forward, lens_array, stack_layers

__all__ = ["gru_layer", "gru_layer_backward", "gru_forward_ops"]


@torch.library.custom_op("grukit::gru_layer", mutates_args=(), device_types="cpu")
def gru_layer(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
              lengths: Tensor | None, reverse: bool, reset_after: bool,
              zoneout: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    T, B, _ = x.shape
    out, hT, hp, gates = layer_forward(x.contiguous(), h0.contiguous(), w_ih, w_hh, b_ih, b_hh, lens_array(lengths, T, B),
                                       reverse, reset_after, zoneout)
    return out, hT, hp, gates


@gru_layer.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, zoneout):
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    return (x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(T, B, H), x.new_empty(T, B, 4 * H))


@torch.library.custom_op("grukit::gru_layer_backward", mutates_args=(), device_types="cpu")
def gru_layer_backward(dout: Tensor, dhT: Tensor, x: Tensor, w_ih: Tensor, w_hh: Tensor, hp: Tensor, gates: Tensor,
                       lengths: Tensor | None, reverse: bool, reset_after: bool, zoneout: float,
                       has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = layer_backward(dout, dhT, x, w_ih, w_hh, hp, gates, lens_array(lengths, T, B),
                                                         reverse, reset_after, zoneout, has_bias)
    if not has_bias:                                                   # an op returns tensors: zeros for none
        db_ih, db_hh = x.new_zeros(3 * H), x.new_zeros(3 * H)
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


@gru_layer_backward.register_fake
def _(dout, dhT, x, w_ih, w_hh, hp, gates, lengths, reverse, reset_after, zoneout, has_bias):
    H = w_hh.shape[1]
    return (torch.empty_like(x), torch.empty_like(dhT), torch.empty_like(w_ih), torch.empty_like(w_hh),
            x.new_empty(3 * H), x.new_empty(3 * H))


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, zoneout = inputs
    _, _, hp, gates = output
    ctx.save_for_backward(x, w_ih, w_hh, hp, gates, lengths)
    ctx.cfg = (reverse, reset_after, zoneout, b_ih is not None)


def _backward(ctx, dout, dhT, dhp, dgates):  # noqa: ARG001  (the stash outputs carry no gradient)
    x, w_ih, w_hh, hp, gates, lengths = ctx.saved_tensors
    reverse, reset_after, zoneout, has_bias = ctx.cfg
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = gru_layer_backward(dout, dhT, x, w_ih, w_hh, hp, gates, lengths, reverse,
                                                             reset_after, zoneout, has_bias)
    if not has_bias:
        db_ih = db_hh = None
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None, None, None


gru_layer.register_autograd(_backward, setup_context=_setup_context)


@gru_layer.register_vmap
def _(info, in_dims, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, zoneout):
    """vmap: with only ``x``/``h0`` batched the vmapped dimension folds into the kernel's batch (one call);
    otherwise (stacked weights) one call per slice."""
    n = info.batch_size
    xd, hd, *wd = in_dims[:6]
    if all(d is None for d in wd) and in_dims[6] is None:
        xs = x.movedim(xd, 1) if xd is not None else x.unsqueeze(1).expand(-1, n, -1, -1)   # (T, n, B, I)
        hs = h0.movedim(hd, 0) if hd is not None else h0.unsqueeze(0).expand(n, -1, -1)      # (n, B, H)
        T, _, B, I = xs.shape
        lens = None if lengths is None else lengths.repeat(n)
        out, hT, hp, gates = gru_layer(xs.reshape(T, n * B, I), hs.reshape(n * B, -1), w_ih, w_hh, b_ih, b_hh,
                                       lens, reverse, reset_after, zoneout)
        return ((out.view(T, n, B, -1), hT.view(n, B, -1), hp.view(T, n, B, -1), gates.view(T, n, B, -1)),
                (1, 0, 1, 1))
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    dims = in_dims[:7]
    outs = [gru_layer(*[a if d is None else a.select(d, i) for a, d in zip(args, dims)], reverse, reset_after,
                      zoneout) for i in range(n)]
    return tuple(torch.stack(o) for o in zip(*outs)), (0, 0, 0, 0)


def gru_forward_ops(module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """A GRU's forward through ``torch.ops.grukit.gru_layer``: ``x`` ``(T, B, I)``, ``hx`` ``(L*D, B, H)`` ->
    ``(out (T, B, D*H), h_n (L*D, B, H))``, for the specs the fused backend runs."""
    s = module.spec
    zo = s.zoneout if not module.training else 0.0
    return stack_layers(module, x, hx, lambda xin, h0, p, reverse: gru_layer(
        xin, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, lengths, reverse, s.reset_after, zo)[:2])                             # (T, B, D*H), (L*D, B, H)
