r"""Scans for linear recurrences :math:`h_t = c_t \odot h_{t-1} + v_t` (MinGRU), parallel and sequential.

The parallel form works in log space (Heinsen 2023; Feng et al. 2024): with
:math:`a^*_t = \sum_{s \le t} \log c_s`,

.. math::
    h_t = e^{a^*_t} h_0 + \exp\Big(a^*_t + \operatorname{logcumsumexp}_{s \le t}(\log v_s - a^*_s)\Big)

so every step is computed at once with ``cumsum`` and ``logcumsumexp``. The initial state enters linearly,
so it may be any real value (no logarithm of it is taken). The terms are accumulated in float64 whatever
the input dtype: :math:`a^*_t` grows like :math:`t`, and in float32 its rounding would cost about
:math:`10^{-7} t` relative error; in float64 it stays below :math:`10^{-10}` for :math:`T = 10^5`.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["parallel_scan_log", "sequential_scan_log"]


def parallel_scan_log(log_c: Tensor, log_v: Tensor, h0: Tensor) -> Tensor:
    """All states of :math:`h_t = c_t h_{t-1} + v_t` from ``log_c``, ``log_v`` ``(T, B, H)`` and ``h0`` ``(B, H)``.

    ``log_v`` may be ``-inf`` (``v = 0``) at padded steps, but not at step 0 of every sequence at once.
    Returns ``(T, B, H)`` in the dtype of ``log_v``.
    """
    dtype = log_v.dtype
    log_c64, log_v64 = log_c.double(), log_v.double()
    a_star = torch.cumsum(log_c64, dim=0)                                   # (T, B, H)
    log_h = a_star + torch.logcumsumexp(log_v64 - a_star, dim=0)            # (T, B, H)
    h = torch.exp(log_h) + torch.exp(a_star) * h0.double()[None]
    return h.to(dtype)


def sequential_scan_log(log_c: Tensor, log_v: Tensor, h0: Tensor) -> Tensor:
    """The same recurrence one step at a time (the twin the parallel scan is tested against)."""
    h = h0
    out = []
    for t in range(log_c.shape[0]):
        h = torch.exp(log_c[t]) * h + torch.exp(log_v[t])
        out.append(h)
    return torch.stack(out)                                                 # (T, B, H)
