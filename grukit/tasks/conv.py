r"""Convolutional parts of the classifier: shortening long series, the patch front end of the GRU, and the
fully convolutional branch of the GRU-FCN hybrid.

Letters: B batch, T time, F input features, C channels. Every module takes ``(B, T, F)`` inputs padded to the
batch's longest sequence with ``lengths`` (B,) and keeps padding out of the result: padded steps are zeroed
before each convolution, so a sequence gives (in eval mode) the same output alone as inside a padded batch.

* :func:`pool_time` averages non-overlapping windows of ``s`` steps (a masked mean), so a series of any length
  reaches the convolutions and the GRU with at most ``conv_steps`` steps (``downsample="mean"``).
  :func:`fold_time` stacks the window's steps as features instead (lossless, ``"fold"``); the default
  ``"mixed"`` gives the FCN branch the means and the GRU branch the folded windows; ``"conv"`` learns a linear
  :class:`PatchEmbed` of ``s`` steps.
* :class:`PatchEmbed` turns non-overlapping patches of ``r`` steps into one GRU input each (a strided Conv1d
  and ReLU): the recurrence then runs over at most ``gru_steps`` steps, which keeps training fast and the
  gradient path short on long series.
* :class:`FCNBranch` is the fully convolutional network of Wang et al. (2017) as used in LSTM-FCN (Karim et
  al. 2017) and GRU-FCN (Elsayed et al. 2018): three Conv1d-BatchNorm-ReLU blocks with kernels 8, 5, 3 and
  channels C, 2C, C, then global average pooling over the valid steps.
* :class:`InceptionBranch` is the multi-scale alternative (``conv_branch="inception"``): InceptionTime's
  modules (Fawaz et al. 2020: a 1x1 bottleneck, parallel kernels of 39/19/9 steps and a max-pool path, joined
  and normalised) with a residual shortcut every three modules.
* :class:`ResNetBranch` is the third family (``conv_branch="resnet"``, or one entry of a per-member list such
  as ``inception,fcn,resnet``): the residual network of Wang et al. (2017), three residual blocks of kernels
  8/5/3.
* :func:`start_later` drops each series' first few steps, so the windows of the shortening fall at another
  phase (``window_phase=random``: a random phase per series in training for the folded windows).
* :func:`with_difference` appends the first difference of each feature (``first_difference``), as
  MultiRocket and DrCIF read the derivative beside the series.
* Every branch summarises its last feature map over the valid steps with :func:`masked_pool`: the mean, the
  mean beside the maximum (``conv_pool="mean_max"``), or ROCKET's proportion of positive values made
  differentiable (``"ppv"``, ``"mean_ppv"``), read from the last layer's pre-activation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import length_mask

__all__ = ["pool_time", "fold_time", "shorter", "strides", "masked_pool", "pool_width", "PatchEmbed",
           "FCNBranch", "InceptionBranch", "ResNetBranch", "with_difference", "start_later"]


def strides(max_length: int, conv_steps: int | str, gru_steps: int) -> tuple[int, int]:
    """(s, r): average-pooling stride so ``max_length`` fits ``conv_steps``, then the patch size so the result
    fits ``gru_steps`` (0 for either step count means no shortening at that stage). ``conv_steps`` is one
    count (an int or its text; a per-member list's entries are passed one at a time)."""
    conv_steps = int(conv_steps)
    s = max(1, math.ceil(max_length / conv_steps)) if conv_steps > 0 else 1
    r = max(1, math.ceil(math.ceil(max_length / s) / gru_steps)) if gru_steps > 0 else 1
    return s, r


def shorter(lengths: Tensor | None, s: int) -> Tensor | None:
    """Lengths after grouping steps in windows of ``s`` (a partial last window counts)."""
    return None if lengths is None else torch.div(lengths + s - 1, s, rounding_mode="floor")


def _masked(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero the padded steps of (B, T, C)."""
    mask = length_mask(lengths, x.shape[1], x.device)                      # (B, T) or None
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def pool_time(x: Tensor, lengths: Tensor | None, s: int) -> tuple[Tensor, Tensor | None]:
    """Mean over non-overlapping windows of ``s`` valid steps: (B, T, F) -> (B, ceil(T/s), F)."""
    if s == 1:
        return x, lengths
    B, T, Fe = x.shape
    pad = (-T) % s
    mask = length_mask(lengths, T, x.device)
    m = torch.ones(B, T, 1, dtype=x.dtype, device=x.device) if mask is None else \
        mask.unsqueeze(-1).to(x.dtype)                                       # (B, T, 1)
    xs = F.pad(x * m, (0, 0, 0, pad)).reshape(B, -1, s, Fe).sum(2)          # (B, T/s, F) window sums
    ms = F.pad(m, (0, 0, 0, pad)).reshape(B, -1, s, 1).sum(2)               # (B, T/s, 1) valid steps per window
    return xs / ms.clamp_min(1.0), shorter(lengths, s)


def start_later(x: Tensor, lengths: Tensor | None, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Each series ``i`` of (B, T, F) read from its step ``offsets[i]`` on: out[i, t] = x[i, t + offsets[i]],
    lengths minus the offsets, padding zeroed. Shifts the phase of the windows that :func:`pool_time` and
    :func:`fold_time` group steps into (``window_phase``); offsets must be below each series' length."""
    B, T, Fe = x.shape
    n = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths.long()
    idx = (torch.arange(T, device=x.device).unsqueeze(0) + offsets.unsqueeze(1)).clamp_max(T - 1)   # (B, T)
    out = x.gather(1, idx.unsqueeze(-1).expand(B, T, Fe))                    # (B, T, F)
    n = n - offsets.to(n.device)
    return _masked(out, n), n


def fold_time(x: Tensor, lengths: Tensor | None, s: int) -> tuple[Tensor, Tensor | None]:
    """Windows of ``s`` steps stacked as features (space-to-depth, lossless, no parameters):
    (B, T, F) -> (B, ceil(T/s), s*F); feature ``k*F + f`` of a window is feature f at its step k. Padded steps
    are zeroed first."""
    if s == 1:
        return x, lengths
    B, T, Fe = x.shape
    x = F.pad(_masked(x, lengths), (0, 0, 0, (-T) % s))                  # (B, s*ceil(T/s), F)
    return x.reshape(B, -1, s * Fe), shorter(lengths, s)                 # (B, T/s, s*F)


class PatchEmbed(nn.Module):
    """Non-overlapping patches of ``r`` steps to ``channels`` features each: (B, T, F) -> (B, ceil(T/r), C).

    With ``activation=False`` it is linear: the learned downsampling stem that shortens long series before both
    branches (``downsample="conv"``), which can keep fast detail (a step-to-step alternation) that a window mean
    removes."""

    def __init__(self, in_size: int, channels: int, r: int, activation: bool = True):
        super().__init__()
        self.r = r
        self.activation = activation
        self.proj = nn.Conv1d(in_size, channels, kernel_size=r, stride=r)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        pad = (-x.shape[1]) % self.r
        x = F.pad(_masked(x, lengths), (0, 0, 0, pad)).transpose(1, 2)      # (B, F, T) for Conv1d
        z = self.proj(x).transpose(1, 2)                                     # (B, T/r, C)
        return (torch.relu(z) if self.activation else z), shorter(lengths, self.r)


def channels_first(x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A batch (B, T, F) as (B, F, T) for Conv1d, and its valid-step mask (B, 1, T) (None: every step valid)."""
    mask = length_mask(lengths, x.shape[1], x.device)
    return x.transpose(1, 2), None if mask is None else mask.unsqueeze(1).to(x.dtype)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` over (B, C, T) whose training statistics come from the valid steps only
    (``m`` (B, 1, T), 1 on valid steps): with plain batch normalisation the zeroed padding of a batch of series of
    different lengths enters each channel's mean and variance (and the running estimates used at test), so a
    series is normalised differently depending on how long the others in its batch are. Without a mask, with
    every step valid, or in eval mode it is exactly ``BatchNorm1d``; same parameters and buffers, so saved
    weights load either way. Padded steps come out normalised like the rest; the callers mask them."""

    def forward(self, x: Tensor, m: Tensor | None = None) -> Tensor:
        if not self.training or m is None or bool(m.all()):
            return super().forward(x)
        w = m.to(x.dtype)                                                        # (B, 1, T)
        n = w.sum()                                                              # valid steps in the batch
        xw = x * w                                                               # (B, C, T), padding 0
        mean = xw.sum((0, 2)) / n                                                # (C,)
        var = ((xw * x).sum((0, 2)) / n - mean * mean).clamp_min(0.0)           # (C,) biased, as BatchNorm
        if self.track_running_stats:                # one pass (sum, sum of squares): bench/masked_batchnorm.py
            with torch.no_grad():
                self.num_batches_tracked += 1
                mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - mom).add_(mom * mean)
                self.running_var.mul_(1 - mom).add_(mom * var * n / (n - 1).clamp_min(1.0))   # unbiased
        scale = torch.rsqrt(var + self.eps)                                      # (C,)
        if self.affine:
            scale = self.weight * scale
        shift = -mean * scale + (self.bias if self.affine else 0.0)             # (C,)
        return torch.addcmul(shift[:, None], x, scale[:, None])                  # (B, C, T)


def conv_norm(layer: nn.Sequential, h: Tensor, m: Tensor | None) -> Tensor:
    """A (Conv1d, MaskedBatchNorm1d) pair applied with the valid-step mask reaching the normalisation."""
    return layer[1](layer[0](h), m)


PPV_TAU = 1.0       # temperature of the soft PPV; the last BatchNorm's scale learns the sharpness beside it


def pool_width(kind: str) -> int:
    """How many C-wide summaries ``masked_pool(kind)`` concatenates."""
    return 2 if kind in ("mean_max", "mean_ppv") else 1


def masked_pool(h: Tensor, m: Tensor | None, kind: str = "mean", pre: Tensor | None = None) -> Tensor:
    r"""Summary of a feature map (B, C, T) over its valid steps (``m`` (B, 1, T) or None): ``mean`` (B, C);
    ``mean_max`` (B, 2C), the mean beside the maximum (where along the series a pattern shows up strongest);
    ``ppv`` (B, C), the soft proportion of positive values of the pre-activation ``pre`` (B, C, T) (``h``
    when None), ROCKET's / MiniRocket's PPV feature (Dempster et al. 2020, 2021) made differentiable,

    .. math:: \mathrm{ppv}_c = \frac{1}{n} \sum_{t < n} \sigma(z_{c,t} / \tau)

    over the n valid steps (how often a pattern is present, where the mean also weighs how strongly);
    ``mean_ppv`` (B, 2C) the mean of ``h`` beside it."""
    def average(v: Tensor) -> Tensor:
        return v.mean(2) if m is None else (v * m).sum(2) / m.sum(2).clamp_min(1.0)   # (B, C)
    if kind in ("ppv", "mean_ppv"):
        ppv = average(torch.sigmoid((h if pre is None else pre) / PPV_TAU))           # (B, C)
        return ppv if kind == "ppv" else torch.cat([average(h), ppv], dim=1)         # (B, C) or (B, 2C)
    mean = average(h)                                                                # (B, C)
    if kind == "mean":
        return mean
    top = h if m is None else h.masked_fill(m == 0, float("-inf"))
    return torch.cat([mean, top.amax(2)], dim=1)                                   # (B, 2C)


class FCNBranch(nn.Module):
    """Three Conv1d-BatchNorm-ReLU blocks (kernels 8, 5, 3; channels C, 2C, C), masked global average pool.

    ``dilation`` d > 1 dilates block i by d**i (d=2: 1, 2, 4), widening the receptive field from 14 steps to
    1 + 7 + 4*2 + 2*4 = 24 at the same cost."""

    kernels = (8, 5, 3)

    def __init__(self, in_size: int, channels: int, dilation: int = 1, pool: str = "mean"):
        super().__init__()
        widths = (in_size, channels, 2 * channels, channels)
        self.convs = nn.ModuleList(nn.Conv1d(widths[i], widths[i + 1], k, dilation=dilation ** i)
                                   for i, k in enumerate(self.kernels))
        self.norms = nn.ModuleList(MaskedBatchNorm1d(widths[i + 1]) for i in range(len(self.kernels)))
        self.pool = pool
        self.out_size = channels * pool_width(pool)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        h, m = channels_first(x, lengths)                                    # (B, F, T), (B, 1, T) or None
        for conv, norm in zip(self.convs, self.norms):
            if m is not None:
                h = h * m                                                    # padding reads as the zero border
            span = conv.dilation[0] * (conv.kernel_size[0] - 1)              # steps the kernel reaches beyond one
            h = F.pad(h, (span // 2, span - span // 2))                      # "same" length (torch's split)
            pre = norm(conv(h), m)                                           # (B, C_i, T) pre-activation
            h = torch.relu(pre)
        return masked_pool(h, m, self.pool, pre)                             # (B, C) or (B, 2C)


class InceptionModule(nn.Module):
    """One InceptionTime module: (B, C_in, T) -> (B, 4f, T). A 1x1 bottleneck to f channels feeds parallel
    convolutions of ``kernels`` steps (f filters each); beside them a max-pool over 3 steps and a 1x1
    convolution (f filters); the paths are joined, batch-normalised and passed through a ReLU. No biases, so a
    zeroed padded step stays zero until the normalisation; the caller zeroes padding before each module."""

    def __init__(self, in_size: int, filters: int, kernels: tuple[int, ...]):
        super().__init__()
        self.bottleneck = nn.Conv1d(in_size, filters, 1, bias=False) if in_size > 1 else None
        width = filters if in_size > 1 else in_size
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, padding=k // 2, bias=False) for k in kernels)
        self.pool_conv = nn.Conv1d(in_size, filters, 1, bias=False)
        self.norm = MaskedBatchNorm1d(filters * (len(kernels) + 1))

    def forward(self, h: Tensor, m: Tensor | None) -> Tensor:
        return torch.relu(self.preactivation(h, m))                                    # (B, 4f, T)

    def preactivation(self, h: Tensor, m: Tensor | None) -> Tensor:
        """The joined, normalised paths before the ReLU: (B, C_in, T) -> (B, 4f, T)."""
        z = h if self.bottleneck is None else self.bottleneck(h)                        # (B, f, T)
        top = h if m is None else h.masked_fill(m == 0, float("-inf"))                 # padding never wins a max
        p = F.max_pool1d(top, 3, stride=1, padding=1)                                  # (B, C_in, T)
        if m is not None:
            p = torch.where(m > 0, p, torch.zeros((), dtype=p.dtype))                  # -inf off the valid steps
        outs = [conv(z) for conv in self.convs] + [self.pool_conv(p)]                  # each (B, f, T)
        return self.norm(torch.cat(outs, 1), m)                                        # (B, 4f, T)


class InceptionBranch(nn.Module):
    """``depth`` InceptionTime modules of ``filters`` filters per path (4f channels out), a residual shortcut
    (1x1 convolution and BatchNorm) around every three, then :func:`masked_pool` over the valid steps.

    Kernels of 39/19/9 steps (InceptionTime's 40/20/10, odd so "same" padding is symmetric) read patterns of
    several scales at once where the FCN's 8/5/3 kernels reach 14 steps in all."""

    kernels = (39, 19, 9)

    def __init__(self, in_size: int, filters: int, depth: int = 3, pool: str = "mean"):
        super().__init__()
        width = filters * (len(self.kernels) + 1)
        self.blocks = nn.ModuleList(InceptionModule(in_size if i == 0 else width, filters, self.kernels)
                                      for i in range(depth))
        self.shortcuts = nn.ModuleList(
            nn.Sequential(nn.Conv1d(in_size if i == 0 else width, width, 1, bias=False), MaskedBatchNorm1d(width))
            for i in range(0, depth - depth % 3, 3))                     # one per complete group of three
        self.pool = pool
        self.out_size = width * pool_width(pool)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        h, m = channels_first(x, lengths)                                    # (B, F, T), (B, 1, T) or None
        res = h
        for i, block in enumerate(self.blocks):
            if m is not None:
                h = h * m                                                    # padding reads as the zero border
            pre = block.preactivation(h, m)                                  # (B, 4f, T)
            h = torch.relu(pre)
            if i % 3 == 2:                                                   # close a residual group
                short = res if m is None else res * m
                pre = h + conv_norm(self.shortcuts[i // 3], short, m)
                h = res = torch.relu(pre)
        return masked_pool(h, m, self.pool, pre)                             # (B, 4f) or (B, 8f)


def with_difference(x: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, F) -> (B, T, 2F): the series beside its first difference (``first_difference``), each feature's
    difference scaled to unit root-mean-square over the valid steps (a smooth series' steps are tiny next to
    its z-normalised values). The difference is 0 at the first step and on padded steps."""
    x = _masked(x, lengths)
    d = F.pad(x[:, 1:] - x[:, :-1], (0, 0, 1, 0))                            # (B, T, F), d[0] = 0
    d = _masked(d, lengths)                                                  # the step past the end reads padding
    n = (torch.full((x.shape[0],), x.shape[1], device=x.device) if lengths is None else lengths).to(x.dtype)
    rms = (d.pow(2).sum(1) / n.clamp_min(1.0).unsqueeze(1)).sqrt()           # (B, F)
    return torch.cat([x, d / rms.clamp_min(1e-6).unsqueeze(1)], dim=2)


class ResNetBranch(nn.Module):
    """The residual network of Wang et al. (2017), scaled to ``channels`` C: three residual blocks of
    C/2, C, C channels (the paper's 64/128/128 beside its FCN's 128/256/128), each three Conv1d-BatchNorm
    layers with kernels 8, 5, 3 (ReLU after the first two), a shortcut (a 1x1 convolution and BatchNorm where
    the width changes, else BatchNorm) added before the block's last ReLU; masked global average pool."""

    kernels = (8, 5, 3)

    def __init__(self, in_size: int, channels: int, pool: str = "mean"):
        super().__init__()
        widths = (in_size, max(1, channels // 2), channels, channels)
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        for b in range(3):
            c_in, c_out = widths[b], widths[b + 1]
            self.blocks.append(nn.ModuleList(
                nn.Sequential(nn.Conv1d(c_in if i == 0 else c_out, c_out, k), MaskedBatchNorm1d(c_out))
                for i, k in enumerate(self.kernels)))
            self.shortcuts.append(nn.Sequential(nn.Conv1d(c_in, c_out, 1), MaskedBatchNorm1d(c_out)) if c_in != c_out
                                  else MaskedBatchNorm1d(c_out))
        self.pool = pool
        self.out_size = channels * pool_width(pool)

    def forward(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        h, m = channels_first(x, lengths)                                    # (B, F, T), (B, 1, T) or None
        for block, shortcut in zip(self.blocks, self.shortcuts):
            res = h if m is None else h * m
            z = res
            for i, layer in enumerate(block):
                if m is not None:
                    z = z * m                                                # padding reads as the zero border
                k = layer[0].kernel_size[0]
                z = conv_norm(layer, F.pad(z, ((k - 1) // 2, k - 1 - (k - 1) // 2)), m)   # "same", (B, C_b, T)
                if i < len(block) - 1:
                    z = torch.relu(z)
            pre = z + (shortcut(res, m) if isinstance(shortcut, MaskedBatchNorm1d)
                       else conv_norm(shortcut, res, m))                      # (B, C_b, T)
            h = torch.relu(pre)
        return masked_pool(h, m, self.pool, pre)                             # (B, C) or (B, 2C)
