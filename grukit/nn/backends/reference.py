"""The reference backend: a plain loop over ``equations.py``. Slow, readable, supports every option.

It is the oracle every other backend is tested against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import equations as eq
from ..spec import GRUSpec, LayerParams

__all__ = ["ReferenceBackend", "cell", "gate_norm", "reverse_padded", "time_mask"]


def gate_norm(v: Tensor, weight: Tensor | None, bias: Tensor | None, groups: slice = slice(None)) -> Tensor:
    """LayerNorm over each gate's H units of ``v`` ``(..., G*H)``, with per-gate gain and shift ``(3, H)[groups]``."""
    if weight is None:
        return v
    w, b = weight[groups], bias[groups]                  # (G, H)
    G, H = w.shape
    v = v.unflatten(-1, (G, H))                          # (..., G, H)
    v = F.layer_norm(v, (H,)) * w + b
    return v.flatten(-2)                                 # (..., G*H)


def cell(spec: GRUSpec, p: LayerParams, gi: Tensor, h: Tensor, h_drop: Tensor | None,
         keep: Tensor | float | None) -> Tensor:
    """One step from input pre-activations ``gi`` ``(B, 3H)`` (layer-normed already) and state ``h`` ``(B, H)``.

    ``h_drop`` is the recurrent-dropout mask ``(B, H)`` (already scaled by 1/(1-p)) or ``None``; ``keep`` the
    zoneout mask (training), probability (evaluation) or ``None``.
    """
    H = spec.hidden_size
    if spec.reset_after:
        h_in = h if h_drop is None else h * h_drop
        gh = gate_norm(F.linear(h_in, p.w_hh, p.b_hh), p.ln_hh_w, p.ln_hh_b)   # (B, 3H)
        h_new = eq.gru_step(gi, gh, h)
    else:
        parts = {"rz": slice(0, 2 * H), "n": slice(2 * H, 3 * H)}
        groups = {"rz": slice(0, 2), "n": slice(2, 3)}

        def project(v: Tensor, which: str) -> Tensor:
            if h_drop is not None:
                v = v * h_drop
            s = parts[which]
            b = None if p.b_hh is None else p.b_hh[s]
            return gate_norm(F.linear(v, p.w_hh[s], b), p.ln_hh_w, p.ln_hh_b, groups[which])

        h_new = eq.gru_step_cho(gi, h, project)
    if keep is not None:
        h_new = eq.zoneout(h, h_new, keep)
    return h_new


def time_mask(lengths: Tensor | None, T: int, device) -> Tensor | None:
    """``(T, B)`` bool, True where step t is inside sequence b; ``None`` when there are no lengths."""
    if lengths is None:
        return None
    return (torch.arange(T)[:, None] < lengths[None, :]).to(device)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` ``(T, B, F)`` within its own length; padding stays where it is."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T)[:, None]                          # (T, 1)
    idx = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return x.gather(0, idx.to(x.device)[:, :, None].expand_as(x))


def _recurrent_mask(spec: GRUSpec, h: Tensor, training: bool) -> Tensor | None:
    p = spec.recurrent_dropout
    if not training or p == 0:
        return None
    return torch.bernoulli(torch.full_like(h, 1 - p)) / (1 - p)   # (B, H), one per sequence


def _zoneout_keep(spec: GRUSpec, h: Tensor, training: bool) -> Tensor | float | None:
    p = spec.zoneout
    if p == 0:
        return None
    return torch.bernoulli(torch.full_like(h, p)) if training else p


class ReferenceBackend:
    name = "reference"

    def supports(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        return None

    def supports_step(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        return None

    def forward(self, module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        spec: GRUSpec = module.spec
        T = x.shape[0]
        D = spec.num_directions
        mask = time_mask(lengths, T, x.device)
        layer_in = x                                                  # (T, B, I)
        h_n = []
        for layer in range(spec.num_layers):
            outs = []
            for d in range(D):
                p = module.layer_params(layer, d)
                seq = layer_in if d == 0 else reverse_padded(layer_in, lengths)
                out, h_last = self._direction(spec, p, seq, hx[layer * D + d], mask, module.training)
                outs.append(out if d == 0 else reverse_padded(out, lengths))
                h_n.append(h_last)
            layer_in = torch.cat(outs, dim=-1)                          # (T, B, D*H)
            if layer < spec.num_layers - 1 and spec.dropout > 0 and module.training:
                layer_in = F.dropout(layer_in, spec.dropout, training=True)
        return layer_in, torch.stack(h_n)                             # (T, B, D*H), (L*D, B, H)

    def _direction(self, spec: GRUSpec, p: LayerParams, seq: Tensor, h: Tensor, mask: Tensor | None,
                   training: bool) -> tuple[Tensor, Tensor]:
        gi_all = gate_norm(F.linear(seq, p.w_ih, p.b_ih), p.ln_ih_w, p.ln_ih_b)   # (T, B, 3H)
        h_drop = _recurrent_mask(spec, h, training)
        outs = []
        for t in range(seq.shape[0]):
            h_new = cell(spec, p, gi_all[t], h, h_drop, _zoneout_keep(spec, h, training))
            if mask is None:
                h = h_new
                outs.append(h)
            else:
                m = mask[t][:, None]                                  # (B, 1)
                h = torch.where(m, h_new, h)
                outs.append(h_new * m)
        return torch.stack(outs), h                                   # (T, B, H), (B, H)

    def step(self, module, x_t: Tensor, h: Tensor) -> Tensor:
        spec: GRUSpec = module.spec
        layer_in = x_t                                                # (B, I)
        new = []
        for layer in range(spec.num_layers):
            p = module.layer_params(layer, 0)
            gi = gate_norm(F.linear(layer_in, p.w_ih, p.b_ih), p.ln_ih_w, p.ln_ih_b)
            h_l = cell(spec, p, gi, h[layer], None, _zoneout_keep(spec, h[layer], module.training))
            new.append(h_l)
            layer_in = h_l
            if layer < spec.num_layers - 1 and spec.dropout > 0 and module.training:
                layer_in = F.dropout(layer_in, spec.dropout, training=True)
        return torch.stack(new)                                       # (L, B, H)
