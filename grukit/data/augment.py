r"""Training-time augmentations of batches of sequences, after the time-series augmentation survey of Iwana &
Uchida (2021) and Um et al. (2017): ``jitter``, ``scaling``, ``window_slice`` (Le Guennec et al. 2016) and
``window_warp``; and :func:`mixup` (Zhang et al. 2018), which mixes pairs of a batch's series and their targets.

Each takes ``x`` (B, T, F) padded with ``lengths`` (B,) (or None: every sequence has T steps) and a
``torch.Generator`` (or None: torch's global generator), and returns a new (B, T, F) tensor whose padding stays
zero; lengths do not change. The same generator state gives the same result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUGMENTATIONS", "augment", "jitter", "mixup", "scaling", "window_slice", "window_warp"]


def _lengths(x: Tensor, lengths: Tensor | None) -> list[int]:
    return [x.shape[1]] * x.shape[0] if lengths is None else [int(n) for n in lengths]


def _mask(x: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.ones_like(x[..., :1])
    return (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)


def jitter(x: Tensor, lengths: Tensor | None = None, generator=None, sigma: float = 0.03) -> Tensor:
    """Add Gaussian noise N(0, sigma^2) to every valid step (inputs are z-normalised, so sigma is relative)."""
    return (x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)) * _mask(x, lengths)


def scaling(x: Tensor, lengths: Tensor | None = None, generator=None, sigma: float = 0.1) -> Tensor:
    """Multiply each sequence's features by factors drawn from N(1, sigma^2)."""
    factor = 1 + sigma * torch.randn((x.shape[0], 1, x.shape[2]), generator=generator, dtype=x.dtype)
    return x * factor                                                        # (B, 1, F) broadcast over time


def _resample(s: Tensor, n: int) -> Tensor:
    """Linear interpolation of (T, F) to (n, F)."""
    return F.interpolate(s.T[None], size=n, mode="linear", align_corners=True)[0].T


def window_slice(x: Tensor, lengths: Tensor | None = None, generator=None, ratio: float = 0.9) -> Tensor:
    """Crop a random window of ``ratio`` of each sequence and stretch it back to the sequence's length."""
    out = torch.zeros_like(x)
    for i, n in enumerate(_lengths(x, lengths)):
        w = max(2, int(round(ratio * n)))
        if n < 3 or w >= n:
            out[i, :n] = x[i, :n]
            continue
        start = int(torch.randint(0, n - w + 1, (1,), generator=generator))
        out[i, :n] = _resample(x[i, start:start + w], n)
    return out


def window_warp(x: Tensor, lengths: Tensor | None = None, generator=None, ratio: float = 0.1,
                scales: tuple[float, float] = (0.5, 2.0)) -> Tensor:
    """Speed a random window of ``ratio`` of each sequence up or down (factor from ``scales``), then resample
    the whole sequence back to its length."""
    out = torch.zeros_like(x)
    for i, n in enumerate(_lengths(x, lengths)):
        w = max(2, int(round(ratio * n)))
        if n < 4 or w >= n:
            out[i, :n] = x[i, :n]
            continue
        start = int(torch.randint(1, n - w, (1,), generator=generator))
        k = int(torch.randint(0, 2, (1,), generator=generator))
        scale = scales[k]
        s = x[i, :n]
        mid = _resample(s[start:start + w], max(2, int(round(w * scale))))
        warped = torch.cat([s[:start], mid, s[start + w:]])                   # (T', F)
        out[i, :n] = _resample(warped, n)
    return out


AUGMENTATIONS = {"jitter": jitter, "scaling": scaling, "window_slice": window_slice, "window_warp": window_warp}


def augment(x: Tensor, lengths: Tensor | None, names, generator=None) -> Tensor:
    """Apply the named augmentations in order (each a key of :data:`AUGMENTATIONS`)."""
    for name in names:
        x = AUGMENTATIONS[name](x, lengths, generator)
    return x


def mixup(x: Tensor, lengths: Tensor | None, y: Tensor, num_classes: int, alpha: float,
          lam: float | None = None, generator=None, perm: Tensor | None = None
          ) -> tuple[Tensor, Tensor | None, Tensor]:
    r"""Mixup (Zhang et al. 2018): each series mixed with another of the same batch, and their targets alike.

    .. math:: \lambda \sim \mathrm{Beta}(\alpha, \alpha), \quad
              \tilde x_i = \lambda x_i + (1 - \lambda) x_{\pi(i)}, \quad
              \tilde y_i = \lambda\, e_{y_i} + (1 - \lambda)\, e_{y_{\pi(i)}}

    with one :math:`\lambda` per batch (as in the paper; drawn from torch's global generator unless ``lam``
    is given) and :math:`\pi` a random permutation of the batch (from ``generator``, unless ``perm`` (B,)
    is given: a caller mixing other per-series inputs alike draws it). ``x`` (B, T, F) padded
    with ``lengths`` (B,) or None, ``y`` (B,) class indices. Returns the mixed (B, T, F), lengths
    max(n_i, n_pi(i)) (the shorter series reads as zeros past its end) and the targets (B, K), rows summing to
    1 (a probability target for ``F.cross_entropy``, whose label smoothing then applies to it)."""
    if lam is None:
        lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    if perm is None:
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)  # (B,)
    x = x * _mask(x, lengths)                                                 # padding reads as zeros
    mixed = lam * x + (1 - lam) * x[perm]                                     # (B, T, F)
    onehot = F.one_hot(y, num_classes).to(x.dtype)                            # (B, K)
    target = lam * onehot + (1 - lam) * onehot[perm]                          # (B, K), rows sum to 1
    return mixed, None if lengths is None else torch.maximum(lengths, lengths[perm]), target
