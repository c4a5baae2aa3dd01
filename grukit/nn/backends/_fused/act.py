r"""Activations for the fused kernels: :math:`\tanh` and :math:`\sigma` chosen by dtype at compile time.

float32 uses a rational approximation (Eigen's ``generic_fast_tanh_float``: an odd degree-13 polynomial over
an even degree-6 one on :math:`|x| \le 7.9053`, then :math:`\pm 1`), which LLVM vectorises; its error is a
few float32 ulps (< 3e-7 absolute), so kernels stay within 1e-6 of torch. float64 uses the exact libm
functions, so float64 results match the reference to ~1e-15.

:math:`\sigma(x) = \tfrac12 + \tfrac12 \tanh(x/2)`, one identity for both dtypes.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

__all__ = ["tanh", "sigmoid"]

_F = np.float32
_CLAMP = _F(7.90531110763549805)
_A1, _A3, _A5, _A7 = _F(4.89352455891786e-03), _F(6.37261928875436e-04), _F(1.48572235717979e-05), \
    _F(5.12229709037114e-08)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = _F(4.89352518554385e-03), _F(2.26843463243900e-03), _F(1.18534705686654e-04), \
    _F(1.19825839466702e-06)
_HALF32 = _F(0.5)


def tanh(x):  # pragma: no cover - replaced by the overload inside numba
    return math.tanh(x)


def sigmoid(x):  # pragma: no cover - replaced by the overload inside numba
    return 1.0 / (1.0 + math.exp(-x))


@njit(inline="always", cache=True)
def _tanh32(x):
    x = min(max(x, -_CLAMP), _CLAMP)        # branch-free clamp: LLVM turns it into vector min/max
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


@overload(tanh, inline="always")
def _ov_tanh(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _tanh32(x)
    if isinstance(x, types.Float):
        return lambda x: np.tanh(x)
    return None


@overload(sigmoid, inline="always")
def _ov_sigmoid(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _HALF32 + _HALF32 * _tanh32(_HALF32 * x)
    if isinstance(x, types.Float):
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    return None
