"""The compiled step's weights, read in place: ``GRU.step`` (float32, the C extension built) packs nothing. It
hands ``_cgru.step`` the addresses of the module's own weight tensors, which the kernel reads in torch's row-major
layout (``gemm_rows`` in ``_fused/cgru_gemm.h``), so every change to the weights, by any route, is seen by the next
step with nothing to compare. What is checked per call is only that the tensors are still the ones whose shapes
were checked: the same objects at the same addresses (:func:`inplace_weights`).
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import torch
from torch import Tensor

from ..spec import GRUSpec
from .fused_kernels import MAX_LAYERS, STREAM_SPLIT_MIN_HIDDEN, cgru, cores
from .weight_cache import weight_tensors

__all__ = ["InPlaceWeights", "inplace_weights", "step_run"]

_INPLACE = ("inplace weights",)          # the record's key in the module's _backend_choice (cleared by .to())


class InPlaceWeights(NamedTuple):
    """A module's weight tensors as the compiled step reads them in place: the ``tensors`` (compared by identity),
    views ``keep`` holding their memory (so that no other allocation can start at one of the addresses while this
    record is current: the same object at the same address means the same memory), their addresses ``ptrs``,
    ``layers`` (per layer ``(n_in, W_ih, b_ih or 0, W_hh, b_hh or 0)`` addresses for ``_cgru.step``) and the
    sizes and options of the call."""
    tensors: tuple
    keep: tuple
    ptrs: tuple
    layers: tuple
    L: int
    H: int
    n_in: int
    reset_after: bool
    zoneout: float
    split: bool                          # H from STREAM_SPLIT_MIN_HIDDEN: a frame may split its hidden units


_data_ptr = Tensor.data_ptr


def inplace_weights(module) -> InPlaceWeights | None:
    """The module's weights for an in-place step, or ``None`` where they cannot be read in place (not float32
    CPU C-contiguous tensors of the spec's shapes, a bidirectional or layer-norm GRU). The shapes are checked
    whenever a tensor object or address changed since the last call (a new Parameter, ``p.data = t``, a
    parametrization's fresh tensor); values are never copied, so every write to the weights is seen by the next
    step."""
    rec = module._backend_choice.get(_INPLACE)
    if rec is not None:                      # the Parameters seen last time (no parametrization: get finds them)
        ts = list(map(module._parameters.get, module._flat_weights_names))
        if all(map(operator.is_, ts, rec.tensors)) and tuple(map(_data_ptr, ts)) == rec.ptrs:
            return rec
    ts = weight_tensors(module)
    s: GRUSpec = module.spec
    H, G = s.hidden_size, 3 * s.hidden_size
    per = 4 if s.bias else 2
    if s.bidirectional or s.layer_norm or len(ts) != per * s.num_layers or s.num_layers > MAX_LAYERS:
        return None
    layers = []
    for layer in range(s.num_layers):
        n_in = s.layer_input_size(layer)
        group = ts[per * layer:per * (layer + 1)]              # torch's order: w_ih, w_hh[, b_ih, b_hh]
        want = [(G, n_in), (G, H)] + ([(G,), (G,)] if per == 4 else [])
        for t, shape in zip(group, want):
            if (t.dtype != torch.float32 or t.device.type != "cpu" or tuple(t.shape) != shape
                    or not t.is_contiguous()):
                return None
        ptr = [t.data_ptr() for t in group]
        layers += [n_in, ptr[0], ptr[2] if per == 4 else 0, ptr[1], ptr[3] if per == 4 else 0]
    rec = module._backend_choice[_INPLACE] = InPlaceWeights(
        tuple(ts), tuple(t.detach() for t in ts), tuple(map(_data_ptr, ts)), tuple(layers), s.num_layers, H,
        s.input_size, s.reset_after, s.zoneout, H >= STREAM_SPLIT_MIN_HIDDEN)
    return rec




def step_run(w: InPlaceWeights, module, x: Tensor, h_new: Tensor) -> None:
    """``_cgru.step`` on ``x`` ``(B, I)`` and the state ``h_new`` ``(L, B, H)`` (both contiguous float32, checked
    by the caller), updated in place."""
    ha = h_new.data_ptr()
    cgru().step(w.layers, w.H, w.reset_after, 0.0 if module.training else w.zoneout,
                min(torch.get_num_threads(), cores()) if w.split else 1, x.data_ptr(), ha, ha, x.shape[0])
