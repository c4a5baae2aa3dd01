"""Low-latency streaming inference: :class:`GRUStream`, one call per frame, the state kept inside.

``GRU.step`` checks its arguments, chooses a backend and builds tensors on every call, which is right for a
general API and costs tens of microseconds a frame. A stream does that work once, when it is created: it packs
the weights, the state and the scratch of the ``fused_cpu`` step kernel into one buffer, so a frame is a shape
check and one compiled call. Backends without such a kernel (or a GPU) run through ``GRU.step`` instead, with
the same results.

    stream = gru.eval().stream(batch_size=1)
    for frame in frames:                # (I,) or (B, I) each
        y = stream(frame)               # (H,) or (B, H): the top layer's new state
    stream.reset()                      # start a new utterance

A stream is for inference (no autograd) and snapshots the weights when created: call :meth:`GRUStream.refresh`
after changing them. It checks for a change where that is cheap next to the work around it: :meth:`reset` (once
per utterance) compares the GRU's weights with the snapshot (the weight cache's rule, one memcmp) and warns with
:class:`grukit.errors.StaleWeightsWarning` when they differ; :attr:`GRUStream.stale` asks the same at any time.
Frames themselves are not checked (a check would cost as much as a small frame).

Where grukit's compiled kernels are built, ``GRUStream`` is a subclass of their ``_cgru.Stream``: a numpy
float32 frame of the stream's shape runs entirely in C (checks, the frame, the new output array), the call the
streaming API can make cheapest; every other frame (torch tensors, other dtypes or layouts, other backends)
goes to :meth:`GRUStream._frame` in Python.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError, StaleWeightsWarning
from .backends.weight_cache import Snapshot, weight_tensors

__all__ = ["GRUStream"]


def _compiled_base():
    try:
        from .backends.fused_cpu import cgru
    except ImportError:                                   # numba missing: no fused_cpu backend at all
        return None
    c = cgru()
    return None if c is None else c.Stream


def _memcmp():
    try:
        from .backends.fused_cpu import cgru
    except ImportError:
        return None
    c = cgru()
    return None if c is None else c.held


class _PythonFrames:
    """The base of :class:`GRUStream` without the compiled kernels: every frame goes to ``_frame``."""

    def __call__(self, x_t):
        return self._frame(x_t)


_CStream = _compiled_base()


class GRUStream(_CStream or _PythonFrames):
    """Streams frames through a :class:`grukit.nn.GRU` (see the module docstring).

    Args:
        gru: a unidirectional GRU (its ``training`` flag decides the math, as for ``step``).
        batch_size: parallel streams ``B``; frames are ``(B, I)``, or ``(I,)`` when ``B == 1``.
        h0: optional initial state ``(L, B, H)`` (``(L, H)`` when ``B == 1``); zeros otherwise.

    ``stream(x_t)`` advances by one frame ``(B, I)`` (or ``(I,)`` when ``B == 1``) and returns the new top-layer
    state: a tensor for a torch frame, an array for a numpy frame (the cheapest call: no tensor is made).
    """

    def __init__(self, gru, batch_size: int = 1, h0: Tensor | None = None) -> None:
        s = gru.spec
        if s.bidirectional:
            raise ConfigError("a stream runs forward in time; a bidirectional GRU needs the whole sequence")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.gru, self.B = gru, batch_size
        p = gru.weight_ih_l0
        self.dtype, self.device = p.dtype, p.device
        self._x_shape = (batch_size, s.input_size)              # torch.Size compares equal to a tuple
        self._h0 = None if h0 is None else self._state_arg(h0, "h0")
        self.refresh()

    # ------------------------------------------------------------------ set-up
    def refresh(self) -> None:
        """Re-read the GRU's weights (and backend choice); the state restarts from ``h0``."""
        from .backends import select_step
        s, B = self.gru.spec, self.B
        self._snapshot = Snapshot(weight_tensors(self.gru))        # what the packed weights were made from
        self._warned = False
        probe = torch.empty(B, s.input_size, dtype=self.dtype, device=self.device)
        self._backend = select_step(self.gru.backend, s, probe, self.gru.training)
        packed = getattr(self._backend, "packed_stream", None)
        self._fast = packed(self.gru, B, into=self if _CStream is not None else None) if packed is not None \
            else None
        compiled = False
        if self._fast is not None:
            self._kernel, self._ws, self._meta, h_np = self._fast
            if self._kernel is self:                                  # the compiled kernels set this up:
                self._kernel, compiled = self.advance, True           # numpy frames run stream(x) in C
            self._top = h_np[-1]                                      # (B, H): the top layer's state
            self._h = torch.from_numpy(h_np)                          # (L, B, H) view into the buffer
            self._np_dtype = h_np.dtype
        else:
            self._h = torch.zeros(s.num_layers, B, s.hidden_size, dtype=self.dtype, device=self.device)
        if _CStream is not None and not compiled:
            self.release()                                    # frames this backend runs go to _frame
        self.reset()

    def _state_arg(self, h: Tensor, name: str) -> Tensor:
        s = self.gru.spec
        h = torch.as_tensor(h)
        want = (s.num_layers, self.B, s.hidden_size)
        if tuple(h.shape) == (s.num_layers, s.hidden_size) and self.B == 1:
            h = h.unsqueeze(1)
        if tuple(h.shape) != want:
            raise ShapeError(f"{name} must have shape {want} (num_layers, batch_size, hidden_size), got "
                             f"{tuple(h.shape)}")
        return h.detach().to(self.device, self.dtype)

    @property
    def stale(self) -> bool:
        """Whether the GRU's weights changed since this stream packed them (then call :meth:`refresh`)."""
        return not self._snapshot.holds(weight_tensors(self.gru), _memcmp())

    @property
    def backend(self) -> str:
        """Name of the backend that runs the frames."""
        return self._backend.name

    @property
    def state(self) -> Tensor:
        """A copy of the current state ``(L, B, H)``."""
        return self._h.clone()

    @state.setter
    def state(self, h: Tensor) -> None:
        self._h.copy_(self._state_arg(h, "state"))

    def reset(self, mask: Tensor | None = None) -> None:
        """Restart every stream (``mask=None``) or those where the bool ``mask`` ``(B,)`` is True, from h0.
        Warns (:class:`~grukit.errors.StaleWeightsWarning`, once per snapshot) when the GRU's weights changed
        since the stream packed them."""
        if not self._warned and self.stale:
            self._warned = True
            warnings.warn("the GRU's weights changed since this stream packed them; its frames still run the old "
                          "weights: call stream.refresh() to use the new ones", StaleWeightsWarning, stacklevel=2)
        h0 = self._h0 if self._h0 is not None else torch.zeros_like(self._h)
        if mask is None:
            self._h.copy_(h0)
            return
        mask = torch.as_tensor(mask).reshape(-1)
        if mask.dtype != torch.bool or mask.shape[0] != self.B:
            raise ShapeError(f"mask must be a bool tensor of shape ({self.B},), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        self._h[:, mask] = h0[:, mask]

    # ------------------------------------------------------------------ frames
    # stream(x_t) is the base's call (no __call__ here: a Python one would hide the compiled one)

    def _frame(self, x_t):
        """A frame the compiled call did not take (or every frame, without the compiled kernels)."""
        if self._fast is not None and type(x_t) is np.ndarray:
            if x_t.shape != self._x_shape:
                return self._frame_np_slow(x_t)
            try:
                self._kernel(x_t)                                     # refuses other dtypes, strided frames
            except (ValueError, BufferError):
                return self._frame_np_slow(x_t)
            return self._top.copy()
        if not isinstance(x_t, Tensor):
            y = self(torch.as_tensor(x_t))                            # the fallback path, numpy in and out
            return y.numpy() if isinstance(x_t, np.ndarray) else y
        if x_t.shape != self._x_shape:
            shape = tuple(x_t.shape)
            if self.B == 1 and shape == self._x_shape[1:]:
                return self(x_t.reshape(self._x_shape))[0]
            raise self._shape_error(shape)
        if x_t.dtype != self.dtype:
            raise ShapeError(f"frame has dtype {x_t.dtype} but the GRU's weights are {self.dtype}")
        if self._fast is not None:
            x = x_t.detach().numpy()
            self._kernel(x if x.flags.c_contiguous else np.ascontiguousarray(x))
            return torch.from_numpy(self._top.copy())
        with torch.no_grad():
            y, h = self.gru.step(x_t, self._h)
        self._h = h
        return y

    def _shape_error(self, shape) -> ShapeError:
        alt = f" or {self._x_shape[1:]}" if self.B == 1 else ""
        return ShapeError(f"frame must have shape {self._x_shape} (batch_size, input_size){alt}, got {tuple(shape)}")

    def _frame_np_slow(self, x: np.ndarray) -> np.ndarray:
        if x.shape == self._x_shape[1:] and self.B == 1:
            return self(x.reshape(self._x_shape))[0]
        if x.shape != self._x_shape:
            raise self._shape_error(x.shape)
        if x.dtype != self._np_dtype:
            raise ShapeError(f"frame has dtype {x.dtype} but the GRU's weights are {self._np_dtype}")
        return self(np.ascontiguousarray(x))
