"""The aten backend: torch's own GRU kernels (``torch._VF.gru``; cuDNN on a GPU).

It runs exactly the specs ``torch.nn.GRU`` can: the reset-after GRU with no grukit extra.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..spec import GRUSpec

__all__ = ["AtenBackend"]

_NOT_PLAIN = ("it runs only torch.nn.GRU's math (reset_after=True, no layer_norm, recurrent_dropout or "
              "zoneout)")


class AtenBackend:
    name = "aten"

    def supports(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        if not spec.is_plain:
            return _NOT_PLAIN
        return None

    def supports_step(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        return self.supports(spec, x, training)

    def _flags(self, spec: GRUSpec, x: Tensor):
        if spec.deterministic and x.is_cuda:
            return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
        return contextlib.nullcontext()

    def forward(self, module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        spec: GRUSpec = module.spec
        weights = module.flat_weights()
        args = (spec.bias, spec.num_layers, float(spec.dropout), module.training, spec.bidirectional)
        with self._flags(spec, x):
            if lengths is None:
                return torch._VF.gru(x, hx, weights, *args, False)
            T = x.shape[0]
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            order = packed.sorted_indices.to(x.device)
            data, h_n = torch._VF.gru(packed.data, packed.batch_sizes, hx.index_select(1, order), weights, *args)
            out, _ = pad_packed_sequence(
                PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
                total_length=T)                                          # (T, B, D*H), original order
            return out, h_n.index_select(1, packed.unsorted_indices.to(x.device))

    def step(self, module, x_t: Tensor, h: Tensor) -> Tensor:
        spec: GRUSpec = module.spec
        layer_in = x_t
        new = []
        for layer in range(spec.num_layers):
            p = module.layer_params(layer, 0)
            h_l = torch._VF.gru_cell(layer_in, h[layer], p.w_ih, p.w_hh, p.b_ih, p.b_hh)
            new.append(h_l)
            layer_in = h_l
            if layer < spec.num_layers - 1 and spec.dropout > 0 and module.training:
                layer_in = torch.nn.functional.dropout(layer_in, spec.dropout, training=True)
        return torch.stack(new)
