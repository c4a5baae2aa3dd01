"""Output heads of the tasks: regression, classification, tied and adaptive language-model outputs, CTC,
direct forecasts, and the piano-roll frame distributions (independent Bernoulli, NADE). Letters: B batch,
T time, E encoder features (D*H), C channels, P pitches, K NADE units, N frames flattened."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["length_mask", "Pooling", "RegressionHead", "ClassificationHead", "TiedLMHead", "AdaptiveHead",
           "CTCHead", "DirectForecastHead", "BernoulliHead", "NADEHead", "draw_notes"]


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
    (shared by the targets), a strong base the GRU corrects; it shifts the first ``n_locations`` outputs per
    value (all by default: point or quantiles; 1 for a Gaussian's mean, never its scale). The linear map starts
    as the seasonal-naive forecast (period ``season``; the naive one when ``season`` is 1 or longer than the
    lookback), so training starts from that baseline and learns corrections to it; with ``zero_correction`` the
    GRU's projection starts at zero too, so the untrained head outputs exactly that baseline. Output shape
    (B, horizon, C, P).
    """

    def __init__(self, in_size: int, horizon: int, n_targets: int, n_params: int, lookback: int,
                 n_known: int = 0, linear_skip: bool = True, dropout: float = 0.0, season: int = 1,
                 n_locations: int | None = None, zero_correction: bool = True):
        super().__init__()
        self.horizon, self.C, self.P = horizon, n_targets, n_params
        self.n_loc = n_params if n_locations is None else n_locations     # outputs the skip shifts (not scales)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_size + horizon * n_known, horizon * n_targets * n_params)
        self.skip = nn.Linear(lookback, horizon) if linear_skip else None
        self.season = season
        if self.skip is not None:
            m = season if 1 < season <= lookback else 1
            with torch.no_grad():
                if zero_correction:                                           # the GRU part starts at 0:
                    self.proj.weight.zero_()                                  # the output is the skip alone
                    self.proj.bias.zero_()
                self.skip.weight.zero_()
                self.skip.bias.zero_()
                for h in range(horizon):                                      # y[h] = x[L - m + h mod m]
                    self.skip.weight[h, lookback - m + (h % m)] = 1.0
            self.mark_skip_start()

    def start_at_ses(self, alpha: float) -> None:
        """Start the skip at the (seasonal) simple exponential smoothing forecast with weight ``alpha`` instead
        of the seasonal-naive one: horizon step h weighs the window's same-phase values alpha (1 - alpha)^k, the
        latest first, the remaining mass on the earliest (its starting level); alpha = 1 is the naive start."""
        L = self.skip.in_features
        with torch.no_grad():
            w = self.skip.weight                                              # (horizon, L)
            m = self.season if 1 < self.season <= L else 1
            w.zero_()
            for h in range(self.horizon):
                idx = list(range(L - m + (h % m), -1, -m))                    # same phase, latest first
                k = torch.arange(len(idx), dtype=w.dtype)
                wk = alpha * (1 - alpha) ** k
                wk[-1] += 1 - float(wk.sum())                                 # the earliest value: the start level
                w[h, idx] = wk
        self.mark_skip_start()

    def mark_skip_start(self) -> None:
        """Remember the skip's current weights as its start (``skip_departure`` measures from there)."""
        self.register_buffer("skip_start", self.skip.weight.detach().clone(), persistent=False)

    def skip_departure(self) -> Tensor:
        """Squared distance of the skip's weights from their start, summed (0 without a skip)."""
        if self.skip is None:
            return self.proj.weight.new_zeros(())
        return (self.skip.weight - self.skip_start).pow(2).sum()

    def forward(self, h: Tensor, window: Tensor, known_future: Tensor | None = None) -> Tensor:
        B = h.shape[0]
        feats = self.drop(h)                                                  # (B, E)
        if known_future is not None and known_future.shape[-1] > 0:
            feats = torch.cat([feats, known_future.reshape(B, -1)], dim=-1)   # (B, E + horizon*K)
        y = self.proj(feats).view(B, self.horizon, self.C, self.P)            # (B, horizon, C, P)
        if self.skip is not None:
            base = self.skip(window.transpose(1, 2)).transpose(1, 2)          # (B, lookback, C) -> (B, horizon, C)
            shift = base.unsqueeze(-1).expand(B, self.horizon, self.C, self.n_loc)  # (B, horizon, C, n_loc)
            y = torch.cat([y[..., :self.n_loc] + shift, y[..., self.n_loc:]], -1)
        return y


class AdaptiveHead(nn.Module):
    """Dropout, then :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (ids must be in frequency order, as
    :class:`~grukit.data.text.Vocab` builds them): the language model's output for large vocabularies."""

    def __init__(self, in_size: int, V: int, cutoffs: tuple[int, ...] = (), dropout: float = 0.0):
        super().__init__()
        cuts = [c for c in (cutoffs or (round(V * 0.2), round(V * 0.6))) if 0 < c < V]
        if not cuts:
            raise ConfigError(f"softmax=adaptive needs cutoffs inside the vocabulary of {V}; pass --cutoffs or "
                              "--softmax full")
        self.drop = nn.Dropout(dropout)
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(in_size, V, sorted(set(cuts)), div_value=4.0)

    def loss(self, feats: Tensor, y: Tensor) -> Tensor:
        return self.asm(feats.reshape(-1, feats.shape[-1]), y.reshape(-1)).loss    # (B*T, H), (B*T,)

    def log_prob(self, feats: Tensor) -> Tensor:
        flat = self.asm.log_prob(feats.reshape(-1, feats.shape[-1]))             # (B*T, V)
        return flat.view(*feats.shape[:-1], flat.shape[-1])


# ---------------------------------------------------------------- piano-roll frames (music)
def draw_notes(logits: Tensor, temperature: float, generator=None) -> Tensor:
    """Bernoulli draws from ``sigmoid(logits / temperature)``; temperature 0 keeps the notes with p > 0.5."""
    if temperature == 0:
        return (logits > 0).to(logits.dtype)
    return torch.bernoulli(torch.sigmoid(logits / temperature), generator=generator)


class BernoulliHead(nn.Module):
    """Independent Bernoulli per pitch: logits ``W h_t + b`` (Chung et al. 2014)."""

    def __init__(self, in_size: int, n_pitches: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_size, n_pitches)

    def forward(self, seq: Tensor, v: Tensor | None = None) -> Tensor:
        return self.proj(self.drop(seq))                                            # (B, T, P) logits

    def greedy(self, seq: Tensor) -> Tensor:
        return (self(seq) > 0).float()

    def sample(self, e: Tensor, temperature: float = 1.0, generator=None) -> Tensor:
        return draw_notes(self.proj(e), temperature, generator)                          # (N, P)


class NADEHead(nn.Module):
    r"""NADE over the pitches of a frame, its biases given by the GRU output (RNN-NADE).

    .. math::
        a_k = c(h_t) + \sum_{j<k} W_j v_{tj}, \quad
        p(v_{tk} = 1 | v_{t,<k}, h_t) = \sigma\big(b_k(h_t) + V_k \cdot \sigma(a_k)\big)

    with :math:`b(h) = W_b h + b_b` (P values) and :math:`c(h) = W_c h + b_c` (K values). Under teacher forcing
    all the :math:`a_k` come from one exclusive cumulative sum over pitches, so training is parallel; sampling
    takes P sequential steps per frame.
    """

    def __init__(self, in_size: int, n_pitches: int, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.b = nn.Linear(in_size, n_pitches)
        self.c = nn.Linear(in_size, hidden)
        self.W = nn.Parameter(torch.randn(n_pitches, hidden) / math.sqrt(hidden))
        self.V = nn.Parameter(torch.randn(n_pitches, hidden) / math.sqrt(hidden))

    def _logits(self, b: Tensor, c: Tensor, v: Tensor) -> Tensor:
        contrib = v.unsqueeze(-1) * self.W                                          # (..., P, K)
        a = c.unsqueeze(-2) + contrib.cumsum(-2) - contrib                          # (..., P, K) exclusive sum
        return b + (torch.sigmoid(a) * self.V).sum(-1)                              # (..., P)

    def forward(self, seq: Tensor, v: Tensor, block: int = 256) -> Tensor:
        e = self.drop(seq)
        b, c = self.b(e), self.c(e)                                                 # (B, T, P), (B, T, K)
        if torch.is_grad_enabled() or seq.shape[1] <= block:
            return self._logits(b, c, v)
        return torch.cat([self._logits(b[:, s:s + block], c[:, s:s + block], v[:, s:s + block])
                          for s in range(0, seq.shape[1], block)], dim=1)           # bounded memory in eval

    def _autoregress(self, e: Tensor, choose) -> Tensor:
        b, a = self.b(e), self.c(e)                                                 # (N, P), (N, K)
        out = torch.zeros_like(b)
        for k in range(b.shape[-1]):
            logit = b[:, k] + (torch.sigmoid(a) * self.V[k]).sum(-1)                # (N,)
            out[:, k] = choose(logit)
            a = a + out[:, k:k + 1] * self.W[k]                                     # (N, K)
        return out

    def greedy(self, seq: Tensor) -> Tensor:
        B, T, _ = seq.shape
        return self._autoregress(seq.reshape(B * T, -1), lambda z: (z > 0).to(seq.dtype)).view(B, T, -1)

    def sample(self, e: Tensor, temperature: float = 1.0, generator=None) -> Tensor:
        return self._autoregress(e, lambda z: draw_notes(z, temperature, generator))
