r"""The gate math of grukit, written once.

Every backend (the reference loop, torch's kernels, the fused CPU kernels, the MinGRU scans) is tested
against these functions; no other module writes a gate equation.

Letters are the same in code and docs: :math:`x` input, :math:`h` previous state, :math:`r` reset gate,
:math:`z` update gate, :math:`n` candidate, :math:`h'` new state. Weights are packed in torch's order
``(r, z, n)`` along the first axis of ``weight_ih`` / ``weight_hh``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gru_step", "gru_step_cho", "mingru_step", "mingru_log_terms", "log_g", "g",
           "zoneout", "split_gates"]


def split_gates(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split a ``(..., 3H)`` pre-activation into its ``(r, z, n)`` parts of ``(..., H)`` each."""
    return v.chunk(3, dim=-1)


def gru_step(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    r"""One step of the reset-after GRU (torch, cuDNN, Keras ``reset_after=True``, ONNX ``linear_before_reset=1``).

    .. math::
        r  &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z  &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n  &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h

    Args:
        gi: input pre-activations :math:`W_i x + b_i`, shape ``(B, 3H)`` in ``(r, z, n)`` order.
        gh: recurrent pre-activations :math:`W_h h + b_h`, shape ``(B, 3H)``.
        h: previous state, shape ``(B, H)``.
    """
    i_r, i_z, i_n = split_gates(gi)
    h_r, h_z, h_n = split_gates(gh)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # = (1 - z) * n + z * h, written as torch's kernels write it


def gru_step_cho(gi: Tensor, h: Tensor, project: Callable[[Tensor, str], Tensor]) -> Tensor:
    r"""One step of the reset-before GRU of Cho et al. 2014 (Keras ``reset_after=False``, ONNX ``linear_before_reset=0``).

    The reset gate scales the state *before* the recurrent matmul of the candidate:

    .. math::
        r  &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z  &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n  &= \tanh(W_{in} x + b_{in} + W_{hn} (r \odot h) + b_{hn}) \\
        h' &= (1 - z) \odot n + z \odot h

    Args:
        gi: input pre-activations, ``(B, 3H)`` in ``(r, z, n)`` order.
        h: previous state ``(B, H)``.
        project: ``project(v, "rz")`` returns :math:`W_{h[rz]} v + b_{h[rz]}` of shape ``(B, 2H)`` and
            ``project(v, "n")`` returns :math:`W_{hn} v + b_{hn}` of shape ``(B, H)`` (the caller adds layer
            norm or recurrent dropout there).
    """
    i_r, i_z, i_n = split_gates(gi)
    h_r, h_z = project(h, "rz").chunk(2, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + project(r * h, "n"))
    return n + z * (h - n)


def zoneout(h: Tensor, h_new: Tensor, keep: Tensor | float) -> Tensor:
    r"""Zoneout (Krueger et al. 2016): :math:`h' \leftarrow d \odot h + (1 - d) \odot h'`.

    ``keep`` is a Bernoulli(p) mask in training and the probability ``p`` itself in evaluation (the mask's
    expectation).
    """
    return h_new + keep * (h - h_new)


def g(x: Tensor) -> Tensor:
    r"""MinGRU's positive activation :math:`g(x) = x + 0.5` for :math:`x \ge 0`, :math:`\sigma(x)` otherwise."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    r""":math:`\log g(x)`, computed without forming :math:`g(x)` for negative inputs."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def mingru_step(k: Tensor, a: Tensor, h: Tensor) -> Tensor:
    r"""One step of minGRU (Feng et al. 2024, "Were RNNs All We Needed?").

    .. math::
        z  &= \sigma(W_z x + b_z) = \sigma(k) \\
        \tilde h &= g(W_h x + b_h) = g(a) \\
        h' &= (1 - z) \odot h + z \odot \tilde h

    The gates depend on the input only, so the recurrence is linear in :math:`h` and a parallel scan
    computes all steps at once (:func:`mingru_log_terms`).
    """
    z = torch.sigmoid(k)
    return h + z * (g(a) - h)


def mingru_log_terms(k: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    r"""The terms of :math:`h_t = c_t h_{t-1} + v_t` in log space, for the parallel scan.

    :math:`\log c_t = \log(1 - z_t) = -\operatorname{softplus}(k_t)` and
    :math:`\log v_t = \log z_t + \log \tilde h_t = -\operatorname{softplus}(-k_t) + \log g(a_t)`.
    """
    return -F.softplus(k), -F.softplus(-k) + log_g(a)
