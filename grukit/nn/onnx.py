"""A grukit GRU's forward as ONNX ``GRU`` operators, for ``torch.onnx`` tracing.

``GRU.forward`` calls :func:`gru_export_forward` while ``torch.onnx`` exports: one ONNX ``GRU`` node per layer
(``linear_before_reset=1`` for the torch-style GRU, ``0`` for the Cho variant), gates reordered to ONNX's
``(z, r, h)``. The application layer (``grukit.export``) builds, checks and writes the files; this module is the
engine's half, so the engine never imports the application layer.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gru_export_forward", "onnx_layer_weights"]


def _placeholder(x: Tensor, hidden_size: int, bidirectional: int) -> tuple[Tensor, Tensor]:
    """Right-shaped stand-ins for ``Y (T, D, B, H)`` and ``Y_h (D, B, H)`` while tracing.

    Only the graph matters during export: ``export_module`` then checks the file's real outputs against
    PyTorch in onnxruntime.
    """
    D = 2 if bidirectional else 1
    return x.new_zeros(x.shape[0], D, x.shape[1], hidden_size), x.new_zeros(D, x.shape[1], hidden_size)


class _OnnxGRULayer(torch.autograd.Function):
    """One GRU layer, all directions, emitted as one ONNX GRU node."""

    @staticmethod
    def forward(ctx, x, h0, W, R, B, hidden_size, bidirectional, linear_before_reset):  # noqa: ARG004
        return _placeholder(x, hidden_size, bidirectional)

    @staticmethod
    def symbolic(g, x, h0, W, R, B, hidden_size, bidirectional, linear_before_reset):
        seq_lens = g.op("prim::Constant")      # an omitted optional input
        seq_lens.setType(torch._C.OptionalType.ofTensor())
        return _gru_node(g, x, h0, W, R, B, seq_lens, hidden_size, bidirectional, linear_before_reset)


class _OnnxGRULayerLens(torch.autograd.Function):
    """The same with ``sequence_lens`` (padded batches)."""

    @staticmethod
    def forward(ctx, x, h0, W, R, B, seq_lens, hidden_size, bidirectional, linear_before_reset):  # noqa: ARG004
        return _placeholder(x, hidden_size, bidirectional)

    @staticmethod
    def symbolic(g, x, h0, W, R, B, seq_lens, hidden_size, bidirectional, linear_before_reset):
        return _gru_node(g, x, h0, W, R, B, seq_lens, hidden_size, bidirectional, linear_before_reset)


def _gru_node(g, x, h0, W, R, B, seq_lens, hidden_size, bidirectional, linear_before_reset):
    return g.op("GRU", x, W, R, B, seq_lens, h0, hidden_size_i=hidden_size,
                direction_s="bidirectional" if bidirectional else "forward",
                linear_before_reset_i=linear_before_reset, outputs=2)


def _zrh(t: Tensor, H: int) -> Tensor:
    """(r, z, n)-packed rows -> ONNX's (z, r, h)."""
    return torch.cat([t[H:2 * H], t[:H], t[2 * H:]], dim=0)


def onnx_layer_weights(module, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    """``W (D, 3H, I)``, ``R (D, 3H, H)``, ``B (D, 6H)`` of one layer as torch ops (folded at export)."""
    H = module.spec.hidden_size
    Ws, Rs, Bs = [], [], []
    for d in range(module.spec.num_directions):
        p = module.layer_params(layer, d)
        Ws.append(_zrh(p.w_ih, H))
        Rs.append(_zrh(p.w_hh, H))
        if p.b_ih is None:
            Bs.append(p.w_ih.new_zeros(6 * H))
        else:
            Bs.append(torch.cat([_zrh(p.b_ih, H), _zrh(p.b_hh, H)]))
    return torch.stack(Ws), torch.stack(Rs), torch.stack(Bs)


def gru_export_forward(module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The GRU's forward as ONNX GRU nodes (called by ``GRU.forward`` while ``torch.onnx`` exports)."""
    s = module.spec
    D, H = s.num_directions, s.hidden_size
    seq_lens = None if lengths is None else lengths.to(torch.int32)
    layer_in, h_n = x, []
    for layer in range(s.num_layers):
        W, R, B = onnx_layer_weights(module, layer)
        h0 = hx[layer * D:(layer + 1) * D]                                    # (D, B, H)
        attrs = (H, int(s.bidirectional), int(s.reset_after))
        if seq_lens is None:
            y, y_h = _OnnxGRULayer.apply(layer_in, h0, W, R, B, *attrs)
        else:
            y, y_h = _OnnxGRULayerLens.apply(layer_in, h0, W, R, B, seq_lens, *attrs)
        layer_in = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], D * H)  # (T, D, B, H) -> (T, B, D*H)
        h_n.append(y_h)
    return layer_in, torch.cat(h_n, dim=0)
