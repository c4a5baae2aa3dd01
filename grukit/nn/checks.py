"""Input checks shared by the engine's modules (GRU, GRUCell, MinGRU): one place for the messages."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["shape_str", "check_float", "check_finite"]


def shape_str(t: Tensor) -> str:
    """``t``'s shape as ``(2, 3)``, for messages."""
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_finite(t: Tensor, name: str = "input") -> Tensor:
    """Raise :class:`ShapeError` naming ``name`` and the first bad index if ``t`` holds NaN or inf."""
    bad = ~torch.isfinite(t)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        kind = "NaN" if torch.isnan(t[idx]) else "inf"
        raise ShapeError(f"{name} holds {int(bad.sum())} non-finite value(s) ({kind} first at index {idx}); "
                         "clean or impute the data before it reaches the GRU")
    return t


def check_float(x: Tensor, name: str, like: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
                         f"convert it with .to({like.dtype})")
    if x.dtype != like.dtype:
        raise ShapeError(f"{name} has dtype {x.dtype} but the GRU's parameters are {like.dtype}; "
                         f"convert the input with .to({like.dtype}) or the module with .to({x.dtype})")
