"""GRU and GRUCell: drop-ins for ``torch.nn.GRU`` / ``torch.nn.GRUCell`` with the extras torch lacks."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError, ShapeError, SizeMismatchError
from . import backends
from .backends.reference import cell, gate_norm
from .backends.weight_cache import frozen
from .checks import check_finite, check_float, shape_str
from .spec import GRUSpec, LayerParams

__all__ = ["GRU", "GRUCell", "check_finite", "frozen_weights"]


class FastPath(NamedTuple):
    """A backend's fast path for one kind of call (``forward`` or ``step``) of one module, as noted."""
    training: bool                  # the mode it was noted in (a new mode notes it again)
    call: Callable | None           # fn(module, x, h) -> result or None (None: the backend offers none)
    backend: str                    # the backend's name, for backends.record


_ZERO_STATES: dict = {}


def _zero_state(shape: tuple, like: Tensor) -> Tensor:
    """Zeros of ``shape`` for a state the caller left out. Without autograd one tensor per shape is shared
    between calls (backends only read ``hx``: saves ~1.5 us a call); with autograd a fresh one."""
    if torch.is_grad_enabled():
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    key = (shape, like.dtype, like.device)
    hit = _ZERO_STATES.get(key)
    if hit is None:
        if len(_ZERO_STATES) >= 64:
            _ZERO_STATES.clear()
        hit = _ZERO_STATES[key] = torch.zeros(shape, dtype=like.dtype, device=like.device)
    return hit


def _prob(v):
    """A probability argument as a float for the spec; a bool or a non-number goes as it is (the spec refuses it,
    as torch does ``dropout=True``)."""
    return v if isinstance(v, bool) or not isinstance(v, numbers.Real) else float(v)


def _transformed() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jacrev, ...) is running: its wrapped tensors have no memory
    the fused kernels could read, so GRU routes the call to the reference backend (torch ops, which every
    transform knows); ``backends.last_used()`` then says ``"reference"``."""
    return torch._C._functorch.peek_interpreter_stack() is not None


class GRU(nn.Module):
    r"""Multi-layer gated recurrent unit, a drop-in for :class:`torch.nn.GRU`.

    For each element of the input sequence each layer computes (reset-after form, torch's):

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype:
            exactly as :class:`torch.nn.GRU`.
        reset_after: ``False`` applies the reset gate before the recurrent matmul of the candidate,
            :math:`n_t = \tanh(W_{in} x_t + b_{in} + W_{hn}(r_t \odot h_{t-1}) + b_{hn})` (Cho et al. 2014;
            Keras ``reset_after=False``; ONNX ``linear_before_reset=0``). Same parameters, different math.
        layer_norm: LayerNorm on the input and on the recurrent pre-activations of each gate (Ba et al.
            2016). Adds ``layer_norm_{ih,hh}_{weight,bias}_l{k}{_reverse}`` of shape ``(3, H)``.
        recurrent_dropout: variational dropout on :math:`h_{t-1}` where it enters the recurrent matmul, one
            mask per sequence and layer for all steps (Gal & Ghahramani 2016); off in eval mode.
        zoneout: probability that a unit keeps its previous value at a step in training (Krueger et al.
            2016); in eval mode :math:`h_t \leftarrow p h_{t-1} + (1-p) h_t`.
        deterministic: bit-identical results run to run on the same machine, threads and inputs (seed the
            RNG yourself when dropout is on). Costs speed: cuDNN uses its deterministic algorithms on a GPU
            and the fused CPU kernels split work the same way every time.
        backend: ``"auto"`` (fastest that supports the spec on this device) or a name from
            ``grukit.nn.backends.available()``; a named backend that cannot run the spec raises an error.

    Inputs: ``input, hx=None, lengths=None``
        * **input**: ``(T, B, I)`` (``(B, T, I)`` if batch_first), ``(T, I)`` unbatched, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        * **hx**: ``(D*L, B, H)`` or ``(D*L, H)`` unbatched; zeros when omitted.
        * **lengths**: ``(B,)`` valid steps of each padded sequence, in ``[1, T]``; outputs past a length are
          zero and ``h_n`` is the state at each sequence's last valid step (as with packing).

    Outputs: ``output, h_n``
        * **output**: ``(T, B, D*H)`` (``(B, T, D*H)`` if batch_first), or a PackedSequence for packed input.
        * **h_n**: ``(D*L, B, H)``, the final state of every layer and direction.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, reset_after: bool = True,
                 layer_norm: bool = False, recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 deterministic: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if proj_size != 0:                                            # torch's message and class (ValueError)
            raise ConfigError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if hidden_size == 0 and not isinstance(hidden_size, bool):
            raise ConfigError("hidden_size must be greater than zero (a GRU needs at least one unit)")
        self.spec = GRUSpec(input_size, hidden_size, num_layers, bias, batch_first, _prob(dropout),
                            bidirectional, reset_after, layer_norm, _prob(recurrent_dropout), _prob(zoneout),
                            deterministic)
        if backend != "auto":
            backends.get(backend)  # unknown names fail here, at construction
        self.backend = backend
        self._backend_choice: dict = {}     # forward's and step()'s backend choice per (backend, dtype, device, mode)
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
        kw = {"device": device, "dtype": dtype}
        H, D = hidden_size, self.spec.num_directions
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                shapes = [("weight_ih", (3 * H, self.spec.layer_input_size(layer))),
                          ("weight_hh", (3 * H, H))]
                if bias:
                    shapes += [("bias_ih", (3 * H,)), ("bias_hh", (3 * H,))]
                for name, shape in shapes:
                    setattr(self, name + sfx, nn.Parameter(torch.empty(shape, **kw)))
                    self._flat_weights_names.append(name + sfx)
        if layer_norm:
            for layer in range(num_layers):
                for d in range(D):
                    sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                    for name in ("ih", "hh"):
                        setattr(self, f"layer_norm_{name}_weight{sfx}", nn.Parameter(torch.empty(3, H, **kw)))
                        setattr(self, f"layer_norm_{name}_bias{sfx}", nn.Parameter(torch.empty(3, H, **kw)))
        self.reset_parameters()

    # torch.nn.GRU attribute names, views of the spec; dropout and batch_first may be set (as torch allows),
    # which checks the value and makes a new spec
    input_size = property(lambda self: self.spec.input_size)
    hidden_size = property(lambda self: self.spec.hidden_size)
    num_layers = property(lambda self: self.spec.num_layers)
    bias = property(lambda self: self.spec.bias)
    bidirectional = property(lambda self: self.spec.bidirectional)
    mode = "GRU"
    proj_size = 0

    def _set_spec(self, name: str, value) -> None:
        self.spec = dataclasses.replace(self.spec, **{name: value})
        self._backend_choice.clear()

    dropout = property(lambda self: self.spec.dropout, lambda self, v: self._set_spec("dropout", v))
    batch_first = property(lambda self: self.spec.batch_first, lambda self, v: self._set_spec("batch_first", v))

    @property
    def _plain(self) -> bool:
        """Whether ``weight_ih_l0`` is a registered Parameter (not parametrized, not replaced by a hook)."""
        return "weight_ih_l0" in self._parameters

    @property
    def _flat_weights(self) -> list[Tensor]:
        """torch's ``_flat_weights``: the weights in ``_flat_weights_names`` order, as a forward reads them now
        (through any parametrization or weight_norm hook)."""
        return self.flat_weights()

    def reset_parameters(self) -> None:
        """torch.nn.GRU's initialisation: every weight and bias U(-1/sqrt(H), 1/sqrt(H)), in its order.

        With the same seed, a grukit GRU and a torch.nn.GRU of the same shape start from the same weights.
        Layer-norm gains start at 1 and shifts at 0.
        """
        stdv = 1.0 / math.sqrt(self.spec.hidden_size)
        with torch.no_grad():
            for name in self._flat_weights_names:
                nn.init.uniform_(getattr(self, name), -stdv, stdv)
            for name, p in self.named_parameters():
                if name.startswith("layer_norm_"):
                    nn.init.ones_(p) if "_weight" in name else nn.init.zeros_(p)

    def __setattr__(self, name, value) -> None:
        if name == "backend" and "_backend_choice" in self.__dict__:
            self._backend_choice.clear()                              # a new backend request: choose again
        super().__setattr__(name, value)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_backend_choice"] = {}                                 # backends are chosen again after unpickling
        return state

    def _apply(self, fn, recurse=True):
        self._backend_choice.clear()                                  # dtype or device may change
        return super()._apply(fn, recurse)

    def flatten_parameters(self) -> None:
        """No-op kept for torch.nn.GRU compatibility (the aten backend takes the weights as they are)."""

    def flat_weights(self) -> list[Tensor]:
        """Parameters in torch's ``_flat_weights`` order."""
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        per = 4 if self.spec.bias else 2
        w = self.flat_weights()
        return [w[i:i + per] for i in range(0, len(w), per)]

    def layer_params(self, layer: int, direction: int) -> LayerParams:
        """The parameters of one layer and direction (what the backends read)."""
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        get = lambda n: getattr(self, n + sfx, None)  # noqa: E731
        return LayerParams(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"),
                           get("layer_norm_ih_weight"), get("layer_norm_ih_bias"),
                           get("layer_norm_hh_weight"), get("layer_norm_hh_bias"))

    def extra_repr(self) -> str:
        s = self.spec
        out = f"{s.input_size}, {s.hidden_size}"
        defaults = GRUSpec(1, 1)
        for name in ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "reset_after",
                     "layer_norm", "recurrent_dropout", "zoneout", "deterministic"):
            if getattr(s, name) != getattr(defaults, name):
                out += f", {name}={getattr(s, name)}"
        if self.backend != "auto":
            out += f", backend={self.backend!r}"
        return out

    # ------------------------------------------------------------------ inputs
    def _check_lengths(self, lengths, B: int, T: int) -> Tensor:
        if isinstance(lengths, Tensor):
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise ShapeError(f"lengths must hold integers, got dtype {lengths.dtype}")
            lengths = lengths.detach().to("cpu", torch.int64)
        else:
            try:
                lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
            except (TypeError, ValueError) as e:
                raise ShapeError(f"lengths must be a 1-D sequence of integers, got {lengths!r}") from e
        if lengths.ndim != 1 or lengths.shape[0] != B:
            raise SizeMismatchError(f"lengths must have shape ({B},) (one length per sequence of the batch), "
                             f"got shape {shape_str(lengths)}")
        if B and (lengths.min() < 1 or lengths.max() > T):
            bad = int(((lengths < 1) | (lengths > T)).nonzero()[0])
            raise ShapeError(f"lengths must lie in [1, {T}] (the padded length), got lengths[{bad}] = "
                             f"{int(lengths[bad])}")
        return lengths

    def _check_hx(self, hx: Tensor | None, x: Tensor, B: int, batched: bool) -> Tensor:
        s = self.spec
        rows = s.num_layers * s.num_directions
        if hx is None:
            return _zero_state((rows, B, s.hidden_size), x)
        check_float(hx, "hx", self.weight_ih_l0)
        want = (rows, B, s.hidden_size) if batched else (rows, s.hidden_size)
        if tuple(hx.shape) != want:
            raise SizeMismatchError(f"hx must have shape {want} (num_layers*num_directions, "
                             f"{'batch, ' if batched else ''}hidden_size), got {shape_str(hx)}")
        return hx if batched else hx.unsqueeze(1)

    def forward(self, input, hx: Tensor | None = None, lengths=None):
        if torch.compiler.is_compiling():                             # torch.compile / torch.export tracing
            return self._forward_traced(input, hx, lengths)
        transformed = _transformed()
        if lengths is None and not transformed:
            res = self._fast_call("forward", input, hx)
            if res is not None:
                return res
        s = self.spec
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ShapeError("lengths cannot be combined with a PackedSequence input (it carries its own)")
            x, lengths = pad_packed_sequence(input)                   # (T, B, I), original order
            batched = True
        else:
            x = input
            check_float(x, "input", self._parameters.get("weight_ih_l0", None) if self._plain else self.weight_ih_l0)
            if x.ndim not in (2, 3):
                raise ShapeError(f"input must be 3-D {'(B, T, I)' if s.batch_first else '(T, B, I)'} or "
                                 f"2-D (T, I) unbatched, got {x.ndim}-D with shape {shape_str(x)}")
            batched = x.ndim == 3
            if not batched:
                x = x.unsqueeze(1)                                    # (T, 1, I)
            elif s.batch_first:
                x = x.transpose(0, 1)                                 # (B, T, I) -> (T, B, I)
        if x.shape[-1] != s.input_size:
            raise SizeMismatchError(f"input has {x.shape[-1]} features per step but the GRU was built with "
                             f"input_size={s.input_size}")
        T, B = x.shape[0], x.shape[1]
        if T == 0:                                                    # torch: RuntimeError too
            raise SizeMismatchError(f"input has no time steps (shape {shape_str(input if not packed else x)})")
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, T)
            if not packed and bool((lengths == T).all()):
                lengths = None
        hx = self._check_hx(hx, x, B, batched)
        if torch._C._get_tracing_state() is not None and torch.onnx.is_in_onnx_export():   # -> ONNX GRU nodes
            from .onnx import gru_export_forward
            out, h_n = gru_export_forward(self, x, hx, lengths)
        else:
            key = ("forward", self.backend, x.dtype, x.device.type, self.training)
            backend = self._backend_choice.get(key)                   # a backend's support depends on these only
            if backend is None:
                backend = self._backend_choice[key] = backends.select(self.backend, s, x, self.training)
            if B == 0 or transformed:                                 # an empty batch, or torch.func: torch ops
                backend = backends.get("reference")
            out, h_n = backend.forward(self, x, hx.contiguous(), lengths)   # (T, B, D*H), (L*D, B, H)
            backends.record(backend.name, getattr(backend, "kernel", None))
            if not torch.is_grad_enabled() and not transformed:
                self._note_fast_path("forward", backend, x)
        if packed:
            order = input.sorted_indices
            idx = order if order is not None else torch.arange(B)
            sorted_out = out.index_select(1, idx.to(out.device))      # (T, B, D*H) in sorted order
            data = pack_padded_sequence(sorted_out, lengths[idx.cpu()], enforce_sorted=True)
            return PackedSequence(data.data, data.batch_sizes, input.sorted_indices,
                                  input.unsorted_indices), h_n
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)                     # (T, D*H), (L*D, H)
        if s.batch_first:
            out = out.transpose(0, 1)                                 # (T, B, D*H) -> (B, T, D*H)
        return out, h_n

    def _forward_traced(self, input, hx, lengths):
        """``forward`` while torch.compile or torch.export traces it: the fused kernels as the operators of
        :mod:`grukit.nn.ops` (one ``grukit::gru_layer`` per layer and direction, with fake shapes, autograd and
        vmap rules), so the graph has no break; specs the fused kernels decline (layer_norm, training-mode masks)
        trace the reference backend's torch ops instead. Plain tensors only (no PackedSequence)."""
        from .ops import gru_forward_ops
        s = self.spec
        if isinstance(input, PackedSequence):
            raise ShapeError("a PackedSequence cannot be traced by torch.compile/torch.export; pass the padded "
                             "tensor and lengths=")
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1)                  # (T, B, I)
        if batched and s.batch_first:
            x = x.transpose(0, 1)                                     # (B, T, I) -> (T, B, I)
        rows = s.num_layers * s.num_directions
        if hx is None:
            hx = x.new_zeros(rows, x.shape[1], s.hidden_size)         # (L*D, B, H)
        elif not batched:
            hx = hx.unsqueeze(1)
        if lengths is not None and not isinstance(lengths, Tensor):
            lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
        fused = backends.get("fused_cpu") if "fused_cpu" in backends.available() else None
        if fused is not None and fused.supports(s, x, self.training) is None:
            out, h_n = gru_forward_ops(self, x, hx, lengths)
            backends.record("fused_cpu", "custom_op")
        else:
            out, h_n = backends.get("reference").forward(self, x, hx, lengths)
            backends.record("reference")
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)
        return (out.transpose(0, 1) if s.batch_first else out), h_n

    # Fast paths: a backend may offer, for plain inference calls of forward or step, a function that skips this
    # module's checks and dispatch (``backend.fast_path(which, module, x)``; it returns None for a call it does
    # not take, and the general path runs). Noted by the general path (autograd off) in _backend_choice under
    # ("fast", which) as a FastPath, so what clears the choice (a new backend request, ``.to()``) clears it too,
    # and a new training flag notes it again.
    def _fast_call(self, which: str, x, h):
        fast = self._backend_choice.get(("fast", which))
        if fast is None or fast.call is None or fast.training != self.training or torch.is_grad_enabled():
            return None
        res = fast.call(self, x, h)
        if res is not None:
            backends.record(fast.backend, "compiled")
        return res

    def _note_fast_path(self, which: str, backend, x: Tensor) -> None:
        key = ("fast", which)
        noted = self._backend_choice.get(key)
        if noted is None or noted.training != self.training:
            get = getattr(backend, "fast_path", None)
            self._backend_choice[key] = FastPath(self.training, get(which, self, x) if get is not None else None,
                                                 backend.name)

    def step(self, x_t: Tensor, h: Tensor | None = None, reset: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Advance every layer by one time step, for streaming.

        Args:
            x_t: ``(B, I)`` or ``(I,)`` the input at this step.
            h: ``(L, B, H)`` (``(L, H)`` unbatched) the state returned by the previous call; zeros if None.
            reset: optional bool ``(B,)``: sequences whose state restarts from zero at this step.

        Returns ``(y_t, h')``: the top layer's output ``(B, H)`` and the new state ``(L, B, H)``.
        Calling ``step`` over a sequence gives the same outputs as ``forward`` over it.
        """
        transformed = _transformed()
        if reset is None and not transformed:
            res = self._fast_call("step", x_t, h)
            if res is not None:
                return res
        s = self.spec
        if s.bidirectional:
            raise ConfigError("step() streams forward in time; a bidirectional GRU needs the whole sequence, "
                              "call forward() instead")
        if self.training and s.recurrent_dropout > 0:
            raise ConfigError("step() in training mode cannot keep recurrent_dropout's per-sequence mask; "
                              "call .eval() for streaming or train with forward()")
        check_float(x_t, "x_t", self.weight_ih_l0)
        if x_t.ndim not in (1, 2):
            raise ShapeError(f"x_t must be (B, I) or (I,) for one time step, got shape {shape_str(x_t)}")
        batched = x_t.ndim == 2
        x = x_t if batched else x_t.unsqueeze(0)                      # (B, I)
        if x.shape[-1] != s.input_size:
            raise SizeMismatchError(f"x_t has {x.shape[-1]} features but the GRU was built with "
                             f"input_size={s.input_size}")
        B = x.shape[0]
        if h is None:
            h = _zero_state((s.num_layers, B, s.hidden_size), x)
        else:
            check_float(h, "h", self.weight_ih_l0)
            want = (s.num_layers, B, s.hidden_size) if batched else (s.num_layers, s.hidden_size)
            if tuple(h.shape) != want:
                raise SizeMismatchError(f"h must have shape {want} (num_layers, {'batch, ' if batched else ''}"
                                 f"hidden_size), got {shape_str(h)}")
            if not batched:
                h = h.unsqueeze(1)
        if reset is not None:
            reset = torch.as_tensor(reset, device=x.device).reshape(-1)
            if reset.dtype != torch.bool or reset.shape[0] != B:
                raise ShapeError(f"reset must be a bool tensor of shape ({B},), got {reset.dtype} "
                                 f"{shape_str(reset)}")
            h = h.masked_fill(reset[None, :, None], 0.0)
        key = (self.backend, x.dtype, x.device.type, self.training, torch.is_grad_enabled())
        backend = self._backend_choice.get(key)                       # streaming calls this per frame:
        if backend is None:                                          # choose once per (dtype, device, mode)
            backend = self._backend_choice[key] = backends.select_step(self.backend, s, x, self.training)
        if B == 0 or transformed:                                     # an empty batch, or torch.func: torch ops
            backend = backends.get("reference")
        h_new = backend.step(self, x, h if h.is_contiguous() else h.contiguous())   # (L, B, H)
        backends.record(backend.name, getattr(backend, "kernel", None))
        if not torch.is_grad_enabled() and not transformed:
            self._note_fast_path("step", backend, x)
        if not batched:
            h_new = h_new.squeeze(1)
        return h_new[-1], h_new


    def frozen_weights(self):
        """A scope (``with gru.frozen_weights():``) in which the fused kernels check once that their packed
        copy of the weights is current (on the first call inside) and then trust it, for hot step loops.

        Outside any scope every ``forward`` / ``step`` call compares the weights with the packed copy's
        snapshot (one ``memcmp`` plus Python work: 7.8 -> 12.5 us per ``step`` at H=64 B=1), so weights are
        never stale. **Inside, changes to the weights are not seen** (an optimizer step, ``load_state_dict``,
        ``.data`` writes, ``.to()``: the calls keep using the copy checked on entry, like
        :meth:`grukit.nn.stream.GRUStream.refresh`); change them outside or exit first. After the scope exits
        the normal rule applies again. Nesting and several threads share one scope per module, which ends when
        the last exits (on an exception too); while any thread is inside, every call on this module trusts the
        copy. Returns a context manager that yields the module."""
        return frozen(self)

    def stream(self, batch_size: int = 1, h0: Tensor | None = None):
        """A :class:`grukit.nn.stream.GRUStream`: low-latency frame-by-frame inference with the state kept
        inside (``y = stream(x_t)``), equal to :meth:`step` and :meth:`forward`."""
        from .stream import GRUStream
        return GRUStream(self, batch_size, h0)


@contextlib.contextmanager
def frozen_weights(*modules: nn.Module):
    """``with frozen_weights(model, ...):`` :meth:`GRU.frozen_weights` for every :class:`GRU` inside the given
    modules (a GRU itself, or a model holding some; a module without any is left alone). The contract is
    the method's: the weights are checked once, changes inside the scope are not seen."""
    grus: dict[int, GRU] = {}
    for m in modules:
        if not isinstance(m, nn.Module):
            raise ConfigError(f"frozen_weights() takes torch modules, got {type(m).__name__}")
        grus.update((id(g), g) for g in m.modules() if isinstance(g, GRU))
    with contextlib.ExitStack() as stack:
        for g in grus.values():
            stack.enter_context(frozen(g))
        yield


class GRUCell(nn.Module):
    r"""A single GRU step, a drop-in for :class:`torch.nn.GRUCell` (same arguments, parameters, init).

    Computes :math:`h' ` from ``input`` ``(B, I)`` or ``(I,)`` and ``hx`` ``(B, H)`` or ``(H,)`` (zeros if
    omitted) with the equations of :func:`grukit.nn.equations.gru_step` (or ``gru_step_cho`` when
    ``reset_after=False``). ``layer_norm`` and ``zoneout`` as in :class:`GRU`.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 reset_after: bool = True, layer_norm: bool = False, zoneout: float = 0.0) -> None:
        super().__init__()
        bias = bool(bias)                                             # torch's GRUCell takes any truthy bias
        self.spec = GRUSpec(input_size, hidden_size, 1, bias, reset_after=reset_after,
                            layer_norm=layer_norm, zoneout=_prob(zoneout))
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw))
            self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if layer_norm:
            self.layer_norm_ih_weight = nn.Parameter(torch.ones(3, H, **kw))
            self.layer_norm_ih_bias = nn.Parameter(torch.zeros(3, H, **kw))
            self.layer_norm_hh_weight = nn.Parameter(torch.ones(3, H, **kw))
            self.layer_norm_hh_bias = nn.Parameter(torch.zeros(3, H, **kw))
        self.reset_parameters()

    input_size = property(lambda self: self.spec.input_size)
    hidden_size = property(lambda self: self.spec.hidden_size)
    bias = property(lambda self: self.spec.bias)

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.spec.hidden_size) if self.spec.hidden_size > 0 else 0.0
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("layer_norm_"):
                    nn.init.ones_(p) if "_weight" in name else nn.init.zeros_(p)
                else:
                    nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = self.spec
        out = f"{s.input_size}, {s.hidden_size}"
        if not s.bias:
            out += ", bias=False"
        if not s.reset_after:
            out += ", reset_after=False"
        if s.layer_norm:
            out += ", layer_norm=True"
        if s.zoneout:
            out += f", zoneout={s.zoneout}"
        return out

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        s = self.spec
        check_float(input, "input", self.weight_ih)
        if input.ndim not in (1, 2):
            raise ShapeError(f"GRUCell input must be (B, I) or (I,), got shape {shape_str(input)}")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)                # (B, I)
        if x.shape[-1] != s.input_size:
            raise SizeMismatchError(f"input has {x.shape[-1]} features but the cell was built with "
                             f"input_size={s.input_size}")
        if hx is None:
            h = torch.zeros(x.shape[0], s.hidden_size, dtype=x.dtype, device=x.device)
        else:
            check_float(hx, "hx", self.weight_ih)
            want = (x.shape[0], s.hidden_size) if batched else (s.hidden_size,)
            if tuple(hx.shape) != want:
                raise SizeMismatchError(f"hx must have shape {want}, got {shape_str(hx)}")
            h = hx if batched else hx.unsqueeze(0)
        p = LayerParams(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                        getattr(self, "layer_norm_ih_weight", None), getattr(self, "layer_norm_ih_bias", None),
                        getattr(self, "layer_norm_hh_weight", None), getattr(self, "layer_norm_hh_bias", None))
        gi = gate_norm(F.linear(x, p.w_ih, p.b_ih), p.ln_ih_w, p.ln_ih_b)   # (B, 3H)
        keep = None
        if s.zoneout:
            keep = torch.bernoulli(torch.full_like(h, s.zoneout)) if self.training else s.zoneout
        h_new = cell(s, p, gi, h, None, keep)
        return h_new if batched else h_new.squeeze(0)
