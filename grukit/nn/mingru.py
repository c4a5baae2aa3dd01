"""MinGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gates read only the input.

Training runs all time steps at once with the log-space parallel scan of ``backends/scan.py``; ``step()``
streams one step at a time with :func:`grukit.nn.equations.mingru_step`. Both compute the same states.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from . import equations as eq
from .backends.scan import parallel_scan_log, sequential_scan_log
from .checks import check_float, shape_str

__all__ = ["MinGRU"]


class MinGRU(nn.Module):
    r"""Stacked minGRU layers.

    Each layer computes, from its input :math:`x_t`,

    .. math::
        z_t = \sigma(W_z x_t + b_z), \quad \tilde h_t = g(W_h x_t + b_h), \quad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    with :math:`g(x) = x + 0.5` for :math:`x \ge 0` and :math:`\sigma(x)` otherwise. Parameters per layer:
    ``weight_l{k}`` ``(2H, I_k)`` and ``bias_l{k}`` ``(2H,)`` packing ``(z, h)``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, device, dtype: as :class:`GRU`.
        scan: ``"parallel"`` (log-space scan, the default) or ``"sequential"`` (a loop; same result).

    ``forward(input, hx=None, lengths=None) -> (output, h_n)`` with the shapes of :class:`GRU` (one direction).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, device=None, dtype=None, *,
                 scan: str = "parallel") -> None:
        super().__init__()
        problems = []
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= dropout < 1:
            problems.append(f"dropout must lie in [0, 1), got {dropout!r}")
        if scan not in ("parallel", "sequential"):
            problems.append(f"scan must be 'parallel' or 'sequential', got {scan!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.scan = bias, batch_first, float(dropout), scan
        kw = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            i = input_size if k == 0 else hidden_size
            setattr(self, f"weight_l{k}", nn.Parameter(torch.empty(2 * hidden_size, i, **kw)))
            if bias:
                setattr(self, f"bias_l{k}", nn.Parameter(torch.empty(2 * hidden_size, **kw)))
            else:
                self.register_parameter(f"bias_l{k}", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, scan={self.scan!r}")

    def _gates(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor]:
        ka = F.linear(x, getattr(self, f"weight_l{layer}"), getattr(self, f"bias_l{layer}"))  # (..., 2H)
        return ka.chunk(2, dim=-1)                                           # k, a: (..., H) each

    def forward(self, input: Tensor, hx: Tensor | None = None, lengths=None) -> tuple[Tensor, Tensor]:
        w0 = self.weight_l0
        check_float(input, "input", w0)
        if input.ndim not in (2, 3):
            raise ShapeError(f"input must be 3-D or 2-D (T, I) unbatched, got shape {shape_str(input)}")
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)                                            # (B, T, I) -> (T, B, I)
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"input has {x.shape[-1]} features per step but MinGRU was built with "
                             f"input_size={self.input_size}")
        T, B = x.shape[:2]
        L, H = self.num_layers, self.hidden_size
        if hx is None:
            hx = x.new_zeros(L, B, H)
        else:
            check_float(hx, "hx", w0)
            want = (L, B, H) if batched else (L, H)
            if tuple(hx.shape) != want:
                raise ShapeError(f"hx must have shape {want}, got {shape_str(hx)}")
            hx = hx if batched else hx.unsqueeze(1)
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to("cpu", torch.int64)
            if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
                raise ShapeError(f"lengths must have shape ({B},) with values in [1, {T}], got "
                                 f"{lengths.tolist()}")
            mask = (torch.arange(T)[:, None] < lengths[None, :]).to(x.device)[..., None]   # (T, B, 1)
        scan = parallel_scan_log if self.scan == "parallel" else sequential_scan_log
        h_n = []
        for layer in range(L):
            k, a = self._gates(layer, x)                                     # (T, B, H) each
            log_c, log_v = eq.mingru_log_terms(k, a)
            if mask is not None:  # padded steps keep the state: c = 1, v = 0
                log_c = log_c.masked_fill(~mask, 0.0)
                log_v = log_v.masked_fill(~mask, float("-inf"))
            h = scan(log_c, log_v, hx[layer])                                # (T, B, H)
            h_n.append(h[-1])
            x = h if mask is None else h * mask
            if layer < L - 1 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
        out, h_n = x, torch.stack(h_n)                                       # (T, B, H), (L, B, H)
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            out = out.transpose(0, 1)                                        # (T, B, H) -> (B, T, H)
        return out, h_n

    def step(self, x_t: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step for streaming: ``x_t`` ``(B, I)`` or ``(I,)``, ``h`` ``(L, B, H)``; returns ``(y_t, h')``."""
        check_float(x_t, "x_t", self.weight_l0)
        batched = x_t.ndim == 2
        x = x_t if batched else x_t.unsqueeze(0)
        if x.ndim != 2 or x.shape[-1] != self.input_size:
            raise ShapeError(f"x_t must be (B, {self.input_size}) or ({self.input_size},), got {shape_str(x_t)}")
        if h is None:
            h = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
        elif not batched:
            h = h.unsqueeze(1)
        new = []
        for layer in range(self.num_layers):
            k, a = self._gates(layer, x)
            x = eq.mingru_step(k, a, h[layer])
            new.append(x)
        h_new = torch.stack(new)
        if not batched:
            h_new = h_new.squeeze(1)
        return h_new[-1], h_new
