"""The exponential-smoothing part of an ES-RNN-style hybrid (Smyl 2020), learned jointly with the GRU.

Each training series ``i`` owns a level smoothing coefficient ``alpha_i``, a seasonal one ``gamma_i`` (both
through a sigmoid) and ``m`` initial seasonal values. On a window of encoded values x_0..x_{L-1} (log scale,
so multiplicative Holt-Winters becomes additive) the recursion

    l_t = alpha (x_t - s_t) + (1 - alpha) l_{t-1},    s_{t+m} = gamma (x_t - l_t) + (1 - gamma) s_t

runs from the series' initial seasonality (rotated to the window's phase) and the first value. The GRU then
reads x_t - s_t - l_{L-1} (deseasonalised, normalised by the last level) and its output is added to
l_{L-1} + s_{L+h}. Padded steps (mask 0) leave the state unchanged. A series not seen in training (id -1)
uses the mean coefficients and seasonality of the training series.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ESLayer"]


class ESLayer(nn.Module):
    def __init__(self, n_series: int, season: int):
        super().__init__()
        self.m = max(1, int(season))
        self.alpha = nn.Parameter(torch.full((n_series,), -1.0))          # sigmoid(-1) = 0.27
        self.gamma = nn.Parameter(torch.full((n_series,), -2.0))          # sigmoid(-2) = 0.12
        self.season0 = nn.Parameter(torch.zeros(n_series, self.m))

    def _rows(self, table: Tensor, sid: Tensor) -> Tensor:
        known = sid >= 0
        rows = table[sid.clamp(min=0)]
        if not bool(known.all()):
            mean = table.mean(0, keepdim=True).expand_as(rows)
            rows = torch.where(known.view(-1, *([1] * (rows.dim() - 1))), rows, mean)
        return rows

    def forward(self, window: Tensor, mask: Tensor, sid: Tensor, phase: Tensor, horizon: int
                ) -> tuple[Tensor, Tensor]:
        """window (B, L, C), mask (B, L), sid (B,), phase (B,) -> (base_in (B, L, C), base_out (B, H, C))."""
        B, L, C = window.shape
        m = self.m
        a = torch.sigmoid(self._rows(self.alpha, sid)).view(B, 1)
        g = torch.sigmoid(self._rows(self.gamma, sid)).view(B, 1)
        s0 = self._rows(self.season0, sid)                                 # (B, m)
        s0 = s0 - s0.mean(1, keepdim=True)
        rot = (phase.view(B, 1) + torch.arange(m, device=window.device)) % m
        seas = list(torch.gather(s0, 1, rot).unsqueeze(-1).expand(B, m, C).unbind(1))   # m x (B, C)
        level = window[:, 0] - seas[0]
        used = []
        for t in range(L):
            x, s, keep = window[:, t], seas[t], mask[:, t:t + 1]
            used.append(s)
            new_level = a * (x - s) + (1 - a) * level
            seas.append(torch.where(keep > 0, g * (x - new_level) + (1 - g) * s, s) if m > 1 else s)
            level = torch.where(keep > 0, new_level, level)
        base_in = torch.stack(used, 1) + level.unsqueeze(1)                # (B, L, C)
        base_out = torch.stack([seas[L + (h % m)] for h in range(horizon)], 1) + level.unsqueeze(1)
        return base_in, base_out
