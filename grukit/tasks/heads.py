"""Output heads shared by the tasks. Letters: B batch, T time, E encoder features (D*H), C channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["length_mask", "Pooling", "RegressionHead", "ClassificationHead", "MultiLabelHead", "TiedLMHead",
           "CTCHead", "DirectForecastHead"]


def length_mask(lengths: Tensor | None, T: int, device=None) -> Tensor | None:
    """(B, T) bool, True on valid steps; None when lengths is None."""
    if lengths is None:
        return None
    lengths = lengths.to(device if device is not None else lengths.device)
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class Pooling(nn.Module):
    """Summarise (B, T, E) into (B, E): ``last`` valid step, masked ``mean``, or additive ``attention``.

    ``last`` of a bidirectional encoder joins the forward state at each sequence's last valid step with the
    backward state at step 0 (which has read the whole sequence), taken from ``h_n``.
    """

    def __init__(self, kind: str, size: int, bidirectional: bool = False):
        super().__init__()
        self.kind, self.bidirectional = kind, bidirectional
        if kind == "attention":
            self.score = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1))

    def forward(self, seq: Tensor, h_n: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, E = seq.shape
        if self.kind == "last":
            if self.bidirectional:
                return torch.cat([h_n[-2], h_n[-1]], dim=-1)                  # (B, 2H): last layer's fwd, bwd
            return h_n[-1]                                                    # (B, H)
        mask = length_mask(lengths, T, seq.device)                           # (B, T) or None
        if self.kind == "mean":
            if mask is None:
                return seq.mean(dim=1)
            m = mask.unsqueeze(-1).to(seq.dtype)                              # (B, T, 1)
            return (seq * m).sum(1) / m.sum(1).clamp_min(1.0)
        scores = self.score(seq).squeeze(-1)                                  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=1).unsqueeze(-1)                        # (B, T, 1)
        return (w * seq).sum(1)                                               # (B, E)


class RegressionHead(nn.Module):
    """Linear map from features to ``out_size`` values at every position (or once, on pooled input)."""

    def __init__(self, in_size: int, out_size: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_size, out_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.drop(x))


class ClassificationHead(nn.Module):
    """Pooled features (B, E) to class logits (B, K) through one hidden layer."""

    def __init__(self, in_size: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_size, in_size), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(in_size, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MultiLabelHead(RegressionHead):
    """Per-step logits of independent Bernoulli outputs (e.g. 88 piano keys); pair with BCEWithLogits."""

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class TiedLMHead(nn.Module):
    """Next-token logits through the (tied) input embedding: ``logits = proj(h) @ E^T + b``.

    A linear projection maps the encoder size to the embedding size when they differ (Press & Wolf 2017).
    """

    def __init__(self, embedding: nn.Embedding, in_size: int, dropout: float = 0.0):
        super().__init__()
        self.embedding = embedding
        V, M = embedding.weight.shape
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Identity() if in_size == M else nn.Linear(in_size, M, bias=False)
        self.bias = nn.Parameter(torch.zeros(V))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.proj(self.drop(x)), self.embedding.weight, self.bias)   # (B, T, V)


class CTCHead(nn.Module):
    """Per-step log-probabilities over ``n_symbols`` + blank (index ``blank``), shaped (B, T, S+1)."""

    def __init__(self, in_size: int, n_symbols: int, blank: int = 0, dropout: float = 0.0):
        super().__init__()
        self.blank = blank
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_size, n_symbols + 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.proj(self.drop(x)), dim=-1)


class DirectForecastHead(nn.Module):
    """Direct multi-horizon head: all ``horizon`` steps of ``C`` targets at once, ``P`` outputs per value.

    ``y = W [h_T ; known_future] + skip(window)``: a linear layer on the final GRU state (and the flattened
    known-future covariates), plus an optional linear map from each target's own lookback window to its horizon
    (shared by the targets), a strong base the GRU corrects. The linear map starts as the seasonal-naive
    forecast (period ``season``; the naive one when ``season`` is 1 or longer than the lookback), so training
    starts from that baseline and learns corrections to it. Output shape (B, horizon, C, P).
    """

    def __init__(self, in_size: int, horizon: int, n_targets: int, n_params: int, lookback: int,
                 n_known: int = 0, linear_skip: bool = True, dropout: float = 0.0, season: int = 1):
        super().__init__()
        self.horizon, self.C, self.P = horizon, n_targets, n_params
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_size + horizon * n_known, horizon * n_targets * n_params)
        self.skip = nn.Linear(lookback, horizon) if linear_skip else None
        if self.skip is not None:
            m = season if 1 < season <= lookback else 1
            with torch.no_grad():
                self.skip.weight.zero_()
                self.skip.bias.zero_()
                for h in range(horizon):                                      # y[h] = x[L - m + h mod m]
                    self.skip.weight[h, lookback - m + (h % m)] = 1.0

    def forward(self, h: Tensor, window: Tensor, known_future: Tensor | None = None) -> Tensor:
        B = h.shape[0]
        feats = self.drop(h)                                                  # (B, E)
        if known_future is not None and known_future.shape[-1] > 0:
            feats = torch.cat([feats, known_future.reshape(B, -1)], dim=-1)   # (B, E + horizon*K)
        y = self.proj(feats).view(B, self.horizon, self.C, self.P)            # (B, horizon, C, P)
        if self.skip is not None:
            base = self.skip(window.transpose(1, 2)).transpose(1, 2)          # (B, lookback, C) -> (B, horizon, C)
            y = y + base.unsqueeze(-1)
        return y
