"""The ``fused_cpu`` backend: the GRU recurrence as one compiled loop per layer and direction.

Two sets of kernels:

* **compiled C** (``_fused/``: the parts listed in ``cgru.h``, a CPython extension built by ``setup.py``; optional):
  float32 inference (``forward`` without autograd), ``step`` and :class:`grukit.nn.GRUStream`. Per layer and
  direction one call projects the inputs of every step (a register-blocked matmul over weights packed in
  ``PANEL``-column panels), then runs the recurrence with the gates vectorised. ``step`` packs nothing: it reads
  torch's weight tensors in place (row-major, ``fused_step.py``), so no copy can be stale; AVX2+FMA or baseline code is chosen
  at import (``GRUKIT_CPU_ISA=generic`` forces the baseline, ``GRUKIT_CGRU=0`` turns the extension off).
  Threads come from a small pool of helpers that the calling thread never waits for: batch rows in chunks; for
  fewer rows than threads a split of the hidden units with one meeting per step (from ``SPLIT_MIN_HIDDEN``),
  or below that a pipeline (the recurrence on the calling thread, helpers projecting the steps ahead of it);
  a stream frame from ``STREAM_SPLIT_MIN_HIDDEN`` splits the hidden units of every layer (one meeting per layer).
* **numba** (``_fused/kernels.py``): training (forward that stashes the gates, BPTT backward wrapped in
  :class:`GRULayerFn`, a ``torch.autograd.Function`` followed by three matmuls for the weight gradients),
  float64, and everything when the extension was not built. For each layer and direction the input
  projection of every step is one matmul (torch's BLAS), then one numba kernel fuses the recurrent matmul
  with the gates. ``step`` runs every layer of one streaming step in a single kernel call.

Supports (CPU, float32 and float64): reset_after True and False, any number of layers, bidirectional,
``bias=False``, lengths, h0, dropout between layers, and in evaluation mode zoneout and recurrent_dropout
(their evaluation-mode math). It declines layer_norm and the random masks of recurrent_dropout / zoneout in
training. numba is imported, and kernels compile (or load from numba's on-disk cache), on first use only.

Threads (numba): one for small problems; above ``PARALLEL_MIN_WORK`` the batch rows are split into one chunk
per thread (``min(torch.get_num_threads(), numba.get_num_threads(), B)``), one parallel region per call. In
both kernel sets every output element is one fixed chain of multiply-adds whatever the split, so results are
bit-identical run to run and across thread counts, which is what ``deterministic=True`` asks. The training
path's few torch GEMMs around the kernels (the input projection, the weight gradients) run on one thread under
``deterministic=True``, since a BLAS may split their reductions by thread count (MKL on an AVX-512 machine did).

The backend is split by concern: ``fused_kernels.py`` (which kernels are loaded, how many threads a call uses),
``fused_autograd.py`` (the training path: layer forward with its stash, BPTT backward, the autograd function),
``weight_cache.py`` (the packed copies of the weights and the one rule that says when they are stale), and this
file (the packed layouts and the backend: dispatch to the kernels).

Why the numba float32 inference path stays next to the compiled one (measured with ``bench/numba_vs_c.py``,
numbers in ``bench/README.md``): it is not a second implementation but the same dtype-generic numba kernels that
float64 inference, training and the backward need anyway, reached by a few lines of dispatch; and the C extension
is optional (no compiler at install time, ``GRUKIT_CGRU=0``), where it is what runs every option of the spec
(reset_after=False, zoneout, bias=False, ...) in float32 at compiled speed, instead of the reference loop. The C
kernels stay the default wherever they are built because they are faster on every cell measured.
"""
from __future__ import annotations

import importlib.util
import threading
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec import GRUSpec
from .fused_autograd import (GRULayerFn, as_numpy, bias_np, in_proj, layer_backward, layer_forward,  # noqa: F401
                             lens_array, reference_layer, stack_layers, transposed_np)
from .fused_kernels import (MAX_STACK_ROWS, PANEL, COMPILED_PARALLEL_MIN_WORK, PARALLEL_MIN_WORK, PIPELINE_MIN_WORK,  # noqa: F401
                            SPLIT_MIN_HIDDEN, STREAM_SPLIT_MIN_HIDDEN, cgru, cgru_status, compiled_threads, cores,
                            kernels, plan_threads, stream_meta, stream_threads, threads_for, unit_split)
from .fused_step import InPlaceWeights, inplace_weights, step_run  # noqa: F401
from .weight_cache import WeightCache

if importlib.util.find_spec("numba") is None:   # the registry skips this backend when numba is missing
    raise ImportError("fused_cpu needs numba (pip install numba)")

__all__ = ["FusedCPUBackend", "GRULayerFn", "layer_forward", "layer_backward", "reference_layer", "threads_for"]

_DTYPES = (torch.float32, torch.float64)
_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _padded(H: int) -> int:
    """``H`` rounded up to a multiple of ``PANEL`` (the compiled kernels' panel width)."""
    return -(-H // PANEL) * PANEL


def _pack_panels(w: Tensor, H: int) -> np.ndarray:
    """``W`` ``(3H, K)`` as the compiled kernels read it: ``P = 3 Hp / PANEL`` panels ``(K, PANEL)`` of ``W^T``,
    each gate's columns padded with zeros to ``Hp = _padded(H)``."""
    K = w.shape[1]
    Hp = _padded(H)
    a = np.zeros((K, 3, Hp), np.float32)                               # (K, gate, Hp)
    a[:, :, :H] = as_numpy(w).T.reshape(K, 3, H)
    return np.ascontiguousarray(a.reshape(K, 3 * Hp // PANEL, PANEL).transpose(1, 0, 2))   # (P, K, PANEL)


def _pack_bias(b: Tensor | None, H: int) -> np.ndarray:
    """``b`` ``(3H,)`` padded per gate to ``(3 Hp,)`` (zeros when absent)."""
    a = np.zeros((3, _padded(H)), np.float32)
    if b is not None:
        a[:, :H] = as_numpy(b).reshape(3, H)
    return a.ravel()


def _packed_layer(p, H: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One layer and direction's ``(W_ih, b_ih, W_hh, b_hh)`` packed for the compiled kernels."""
    return _pack_panels(p.w_ih, H), _pack_bias(p.b_ih, H), _pack_panels(p.w_hh, H), _pack_bias(p.b_hh, H)


def _per_layer(module, build) -> list:
    s: GRUSpec = module.spec
    return [[build(module.layer_params(layer, d)) for d in range(s.num_directions)] for layer in range(s.num_layers)]


def numba_layers(module) -> list:
    """Per layer and direction ``(w_ih, b_ih, W_hh^T, b_hh, W_ih^T, b_ih)`` for the numba inference kernels (the
    first two tensors for the projection GEMM, the rest numpy; all copies, so that inside a ``frozen_weights``
    scope the kernels keep reading the weights checked on entry)."""
    return _per_layer(module, lambda p: (
        p.w_ih.detach().clone(), None if p.b_ih is None else p.b_ih.detach().clone(),
        *transposed_np(p.w_hh, p.b_hh), *transposed_np(p.w_ih, p.b_ih)))


def compiled_plan(c, module):
    """A ``_cgru.Plan`` holding the module's weights packed in panels (every layer and direction of a forward in
    one call)."""
    s: GRUSpec = module.spec
    H = s.hidden_size
    layers = _per_layer(module, lambda p: _packed_layer(p, H))
    return c.Plan([a for per in layers for lay in per for a in lay], s.num_layers, s.num_directions,
                  s.input_size, H, _padded(H), s.reset_after)


def scratch_buffers(packed, B: int, H: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel scratch ``(B, H)``, ``(B, 3H)``, ``(B, H)`` of one generation, one set per batch size and Python
    thread (the kernels release the GIL)."""
    scratch = packed.get("scratch", dict)
    key = (B, threading.get_ident(), dtype)
    hit = scratch.get(key)
    if hit is None:
        if len(scratch) >= 16:
            scratch.clear()
        hit = scratch[key] = (np.empty((B, H), dtype), np.empty((B, 3 * H), dtype), np.empty((B, H), dtype))
    return hit


# (numba kernels) Multi-threaded inference input projections up to this many multiply-adds per thread run inside
# the recurrence kernel (each thread projects its own batch rows: no BLAS call, no second thread pool to wake);
# larger ones, and every single-thread call, go to torch's BLAS, whose whole-GEMM kernel is faster than the
# kernel's per-row projection (bench/README.md).
SMALL_PROJECTION = 50_000_000


# The compiled step reads the weights in place (fused_step.py) for fewer rows than this; a batch of this many
# rows or more steps through a packed stream (panels, checked per call by the weight cache's rule): the row-major
# kernel reads the weights once per row, the panel GEMM once per four rows, and from here that costs more than
# the check (bench/README.md).
PACKED_STEP_MIN_ROWS = 4


def _needs_grad(module, *tensors: Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(t.requires_grad for t in tensors) or any(p.requires_grad for p in module.parameters())


class _StepWeights:
    """``W_ih^T``, ``W_hh^T`` and biases of every layer packed for the numba step kernel (a part of the module's
    :class:`~grukit.nn.backends.weight_cache.Packed` generation)."""

    def __init__(self, module):
        s: GRUSpec = module.spec
        L, H = s.num_layers, s.hidden_size
        dt = module.weight_ih_l0.detach().numpy().dtype
        imax = max(s.input_size, H)
        self.WihT = np.zeros((L, imax, 3 * H), dt)
        self.WT = np.empty((L, H, 3 * H), dt)
        self.b = np.zeros((L, 2, 3 * H), dt)
        self.n_in = np.array([s.layer_input_size(l) for l in range(L)], dtype=np.int64)
        for layer in range(L):
            p = module.layer_params(layer, 0)
            self.WihT[layer, :self.n_in[layer]] = as_numpy(p.w_ih).T
            self.WT[layer] = as_numpy(p.w_hh).T
            if p.b_ih is not None:
                self.b[layer, 0] = as_numpy(p.b_ih)
                self.b[layer, 1] = as_numpy(p.b_hh)
        self.one = dt.type(1)
        self.zo = dt.type(s.zoneout)
        self.reset_after = s.reset_after
        self.kernel = kernels().step
        self.scratch: dict[tuple[int, int], tuple] = {}

    def buffers(self, B: int, H: int):
        """Scratch of the step kernel, one set per batch size and Python thread (the kernel releases the GIL,
        so two threads streaming through one module must not share it)."""
        key = (B, threading.get_ident())
        hit = self.scratch.get(key)
        if hit is None:
            if len(self.scratch) >= 16:
                self.scratch = {}
            dt = self.WT.dtype
            hit = self.scratch[key] = (np.empty((B, 3 * H), dt), np.empty((B, 3 * H), dt), np.empty((B, H), dt))
        return hit


class PackedStream(NamedTuple):
    """What ``packed_stream`` hands a GRUStream: ``kernel(x (B, I))`` advances the stream in place; ``ws`` holds
    the packed weights, the state and the scratch; ``meta`` its sizes and offsets (``StreamMeta`` in ``cgru.h``, filled by name); ``state``
    the ``(L, B, H)`` state, a view into ``ws``."""
    kernel: object
    ws: np.ndarray
    meta: np.ndarray
    state: np.ndarray


def _packed_frame(packed, x: np.ndarray, h: np.ndarray | None) -> Tensor:
    """One step through a packed compiled stream (``_compiled_stream``'s tuple) from state ``h`` ``(L, B, H)``
    (zeros when None): the new state, a fresh tensor."""
    kernel, state = packed.kernel, packed.state
    if h is None:
        state.fill(0.0)
    else:
        state[...] = h
    kernel.advance(x)
    return torch.from_numpy(state.copy())


def _compiled_stream(c, module, B: int, into=None):
    """``packed_stream`` for the compiled kernel (a ``_cgru.Stream`` holding ``ws`` and ``meta``: ``into`` when
    given, else a new one): ``ws`` holds per
    layer the packed ``W_ih``, ``b_ih``, ``W_hh``, ``b_hh``, then the state ``h`` ``(L, B, H)``, scratch ``gi``,
    ``gh`` ``(B, 3Hp)``, ``q`` ``(B, H)`` and the zoneout factor; ``meta`` the sizes and offsets (see
    ``cgru.h``)."""
    s: GRUSpec = module.spec
    L, H = s.num_layers, s.hidden_size
    parts, layers, o = [], [], 0
    Hp = _padded(H)
    for layer in range(L):
        offs = {"n_in": s.layer_input_size(layer)}
        for name, a in zip(("off_wih", "off_bih", "off_whh", "off_bhh"), _packed_layer(module.layer_params(layer, 0), H)):
            offs[name] = o
            parts.append(a.ravel())
            o += a.size
        layers.append(offs)
    off_h = o                                                          # then h (L, B, H), gi, gh (B, 3Hp), q (B, H)
    off_gi = off_h + L * B * H
    off_gh = off_gi + B * 3 * Hp
    off_q = off_gh + B * 3 * Hp
    off_zo = off_q + B * H
    ws = np.zeros(off_zo + 1, np.float32)
    ws[:o] = np.concatenate(parts)
    ws[off_zo] = s.zoneout
    meta = stream_meta(c, dict(L=L, B=B, H=H, Hp=Hp, reset_after=int(s.reset_after), off_h=off_h, off_gi=off_gi,
                               off_gh=off_gh, off_q=off_q, off_zo=off_zo), layers)
    if into is None:
        into = c.Stream(ws, meta, stream_threads(H))
    else:
        c.Stream.__init__(into, ws, meta, stream_threads(H))
    return PackedStream(into, ws, meta, ws[off_h:off_gi].reshape(L, B, H))


class FusedCPUBackend:
    name = "fused_cpu"

    def __init__(self) -> None:
        self.kernel = "numba"                                          # the family the last call ran
        c = cgru()
        self.cache = WeightCache(held=None if c is None else c.held)   # every packed weight, one staleness rule

    # ------------------------------------------------------------------ what it runs
    def supports(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        if x.device.type != "cpu":
            return f"it runs on the CPU only, the input is on {x.device}"
        if x.dtype not in _DTYPES:
            return f"it runs float32 and float64 only, got {x.dtype}"
        if spec.layer_norm:
            return "it has no layer_norm kernel"
        if training and spec.recurrent_dropout > 0:
            return "it has no recurrent_dropout masks in training (evaluation mode is fine)"
        if training and spec.zoneout > 0:
            return "it has no zoneout masks in training (evaluation mode is fine)"
        return None

    def supports_step(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None:
        reason = self.supports(spec, x, training)
        if reason is None and spec.bidirectional:
            return "step() streams one direction only"
        if reason is None and training and spec.dropout > 0 and spec.num_layers > 1:
            return "its step() has no dropout between layers in training"
        return reason

    # ------------------------------------------------------------------ forward
    def forward(self, module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        spec: GRUSpec = module.spec
        T, B, _ = x.shape
        lens = lens_array(lengths, T, B)
        zo = spec.zoneout if not module.training else 0.0
        if not _needs_grad(module, x, hx):
            return self._infer(module, x, hx, lens, zo)
        self.kernel = "numba+autograd"
        det = False if spec.deterministic else None
        return stack_layers(module, x, hx, lambda xin, h0, p, reverse: GRULayerFn.apply(
            xin, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, lens, reverse, spec.reset_after, zo, det))

    def _infer(self, module, x: Tensor, hx: Tensor, lens: np.ndarray, zo: float) -> tuple[Tensor, Tensor]:
        """Inference (no autograd): the same kernels, with the per-call Python and torch work cut to the bone
        (weights, transposes and scratch come from a plan built once per set of weights; outputs are numpy
        buffers the kernels write into, handed back as tensors without a copy)."""
        spec: GRUSpec = module.spec
        packed = self.cache.get(module)
        T, B, _ = x.shape
        D, H = spec.num_directions, spec.hidden_size
        c = cgru() if x.dtype == torch.float32 else None
        self.kernel = "numba" if c is None else "compiled"
        if c is not None:
            return self._infer_compiled(c, packed, module, x, hx, lens, zo)
        dtype = _NP_DTYPES[x.dtype]
        scratch = scratch_buffers(packed, B, H, dtype)
        hx_np = hx.detach().numpy()                                    # (L*D, B, H), contiguous
        h_n = np.empty((spec.num_layers * D, B, H), dtype)
        nchunks = threads_for(B, H, T)
        blas = False if spec.deterministic else None
        k = kernels()
        layer_in = x                                                   # (T, B, I)
        for layer, per in enumerate(packed.get("layers", lambda: numba_layers(module))):
            outs = np.empty((T, B, D * H), dtype)
            for d, (w_ih, b_ih, WT, bh, WihT, bi) in enumerate(per):
                i = layer * D + d
                out = outs[:, :, d * H:(d + 1) * H] if D > 1 else outs
                o = out if D == 1 else np.empty((T, B, H), dtype)      # kernels write contiguous buffers
                I = WihT.shape[0]
                if (nchunks > 1 or spec.deterministic) and T * B * I * 3 * H <= SMALL_PROJECTION * nchunks:
                    gi = np.empty((T, B, 3 * H), dtype)                # the kernel projects its own rows
                    k.forward(gi, WT, bh, hx_np[i], lens, d == 1, spec.reset_after, zo, o, h_n[i], None, None,
                              nchunks, x=layer_in.detach().contiguous().numpy(), WihT=WihT, bi=bi,
                              scratch=scratch, blas=blas)
                else:
                    gi = in_proj(layer_in, w_ih, b_ih).numpy()        # one BLAS GEMM for every step
                    k.forward(gi, WT, bh, hx_np[i], lens, d == 1, spec.reset_after, zo, o, h_n[i], None, None,
                              1, scratch=scratch, blas=blas)
                if D > 1:
                    out[...] = o
            layer_in = torch.from_numpy(outs)                          # (T, B, D*H)
            if layer < spec.num_layers - 1 and spec.dropout > 0 and module.training:   # training mode, no grad
                layer_in = F.dropout(layer_in, spec.dropout, training=True)
        return layer_in, torch.from_numpy(h_n)                         # (T, B, D*H), (L*D, B, H)

    def _infer_compiled(self, c, packed, module, x: Tensor, hx: Tensor, lens: np.ndarray,
                        zo: float) -> tuple[Tensor, Tensor]:
        """Inference through the compiled float32 kernels: every layer and direction in one call of the
        module's ``_cgru.Plan`` (per layer and direction the kernels project the inputs, run the recurrence and
        write their half of the layer's output in place); in training mode (no grad) with dropout between
        layers, one call per layer with the dropout between them."""
        spec: GRUSpec = module.spec
        x = x if x.is_contiguous() else x.contiguous()                 # hx is contiguous (GRU.forward)
        T, B, _ = x.shape
        L, D = spec.num_layers, spec.num_directions
        run = packed.get("plan", lambda: compiled_plan(c, module)).run
        n0, n1, split = plan_threads(spec, T, B)
        if not (module.training and spec.dropout > 0 and L > 1):
            out, h_n = run(x.data_ptr(), T, B, hx.data_ptr(), lens, zo, n0, n1, split)
            return torch.from_numpy(out), torch.from_numpy(h_n)        # (T, B, D*H), (L*D, B, H)
        layer_in, h_n = x, []
        for layer in range(L):
            out, h = run(layer_in.data_ptr(), T, B, hx[layer * D].data_ptr(), lens, zo, n1 if layer else n0, n1,
                         split, layer, layer + 1)
            h_n.append(h)
            layer_in = torch.from_numpy(out)
            if layer < L - 1:
                layer_in = F.dropout(layer_in, spec.dropout, training=True)
        return layer_in, torch.from_numpy(np.concatenate(h_n))

    def fast_path(self, which: str, module, x: Tensor):
        """The fast path of ``GRU.forward`` (``which="forward"``: :meth:`infer_fast`) or ``GRU.step``
        (``"step"``: :meth:`step_fast`) for this module: there for float32 where the compiled kernels are
        built, else ``None``."""
        if x.dtype != torch.float32 or cgru() is None:
            return None
        return self.infer_fast if which == "forward" else self.step_fast

    def infer_fast(self, module, x, hx):
        """``GRU.forward``'s fast path for plain float32 inference calls (autograd off, no lengths, a contiguous
        ``(T, B, I)`` CPU tensor or ``(B, T, I)`` with batch_first, ``hx`` omitted or a contiguous
        ``(L*D, B, H)`` float32 tensor): one call of the module's ``_cgru.Plan`` with the tensors' addresses,
        after the checks that make them safe to read. ``None`` when the call is not such a call (GRU.forward then
        takes the general path, which also gives the errors)."""
        if (type(x) is not Tensor or x.dtype != torch.float32 or x.ndim != 3 or not x.is_cpu
                or torch._C._get_tracing_state() is not None):
            return None
        spec: GRUSpec = module.spec
        if spec.batch_first:
            x = x.transpose(0, 1)
        if not x.is_contiguous():
            x = x.contiguous()
        T, B, I = x.shape
        if I != spec.input_size or T == 0 or B == 0:
            return None
        if module.training and spec.dropout > 0 and spec.num_layers > 1:
            return None                                                # dropout between layers: general path
        H = spec.hidden_size
        if hx is None:
            ha = 0
        elif (type(hx) is Tensor and hx.dtype == torch.float32 and hx.is_cpu and hx.is_contiguous()
              and hx.shape == (spec.num_layers * spec.num_directions, B, H)):
            ha = hx.data_ptr()
        else:
            return None
        packed = self.cache.peek(module)
        plan = None if packed is None else packed.parts.get("plan")
        if plan is None:
            return None                                                # the general path (re)builds the plan
        out, h_n = plan.run(x.data_ptr(), T, B, ha, None, 0.0 if module.training else spec.zoneout,
                                             *plan_threads(spec, T, B))
        out = torch.from_numpy(out)                                    # (T, B, D*H), (L*D, B, H)
        return out.transpose(0, 1) if spec.batch_first else out, torch.from_numpy(h_n)

    # ------------------------------------------------------------------ streaming
    def packed_stream(self, module, B: int, into=None):
        """``(kernel, ws, meta, h)`` for :class:`grukit.nn.stream.GRUStream`: the weights, state and scratch of
        ``B`` streams in one buffer ``ws`` (``h`` is the ``(L, B, H)`` state inside it), advanced in place by
        ``kernel(x (B, I))``. ``None`` when this backend cannot run the module's step. For the compiled kernels
        ``kernel`` is a ``_cgru.Stream``: ``into`` (an instance of it, e.g. a GRUStream) is set up and returned
        instead of a new one."""
        s: GRUSpec = module.spec
        if module.weight_ih_l0.device.type != "cpu" or module.weight_ih_l0.dtype not in _DTYPES:
            return None
        c = cgru() if module.weight_ih_l0.dtype == torch.float32 else None
        if c is not None and B <= c.MAX_STACK_ROWS:                   # wider streams: the numba step kernel
            return _compiled_stream(c, module, B, into)
        w = _StepWeights(module)
        L, H, G = s.num_layers, s.hidden_size, 3 * s.hidden_size
        parts = [w.WihT.ravel(), w.WT.ravel(), w.b.ravel()]
        n_w = sum(a.size for a in parts)
        ws = np.zeros(n_w + L * B * H + 2 * B * G + B * H + 2, dtype=w.WT.dtype)
        ws[:n_w] = np.concatenate(parts)
        ws[-2], ws[-1] = w.zo, w.one
        meta = kernels().step_meta(w.n_in, L=L, B=B, H=H, Imax=w.WihT.shape[1], reset_after=int(w.reset_after))
        h = ws[n_w:n_w + L * B * H].reshape(L, B, H)
        step = kernels().step_packed

        def kernel(x):
            if x.dtype != ws.dtype:                                    # numba would compile a mixed version
                raise ValueError(f"frame dtype {x.dtype}, stream {ws.dtype}")
            step(x, ws, meta)
        return PackedStream(kernel, ws, meta, h)

    def step(self, module, x_t: Tensor, h: Tensor) -> Tensor:
        if _needs_grad(module, x_t, h):                                # differentiable: T = 1 sequences
            self.kernel = "numba+autograd"
            spec: GRUSpec = module.spec
            zo = spec.zoneout if not module.training else 0.0
            lens = np.ones(x_t.shape[0], dtype=np.int64)
            layer_in = x_t[None]                                       # (1, B, I)
            new = []
            for layer in range(spec.num_layers):
                p = module.layer_params(layer, 0)
                out, hT = GRULayerFn.apply(layer_in, h[layer], p.w_ih, p.w_hh, p.b_ih, p.b_hh, lens, False,
                                           spec.reset_after, zo, False if spec.deterministic else None)
                new.append(hT)
                layer_in = out
            return torch.stack(new)                                    # (L, B, H)
        L, B, H = h.shape
        c = cgru() if x_t.dtype == torch.float32 else None
        self.kernel = "compiled" if c is not None and B <= c.MAX_STACK_ROWS else "numba"
        if c is not None and B <= c.MAX_STACK_ROWS:
            return self._step_compiled(c, None, module, x_t, h)
        w = self.cache.get(module).get("step", lambda: _StepWeights(module))
        hout = torch.empty(L, B, H, dtype=h.dtype)
        gi, gh, q = w.buffers(B, H)
        w.kernel(x_t.numpy(force=True), h.numpy(force=True), w.WihT, w.WT, w.b, w.n_in, w.reset_after, w.zo, w.one,
                 hout.numpy(), gi, gh, q)
        return hout

    def step_fast(self, module, x_t, h):
        """``GRU.step`` for plain float32 inference frames (autograd off, no reset, a contiguous ``(B, I)`` CPU
        tensor, ``h`` omitted or a ``(L, B, H)`` float32 CPU tensor): one call of the compiled step, which reads
        the module's weight tensors in place. ``(y_t, h')``, or ``None`` for a call it does not take (GRU.step
        then takes the general path, which also gives the errors)."""
        if (type(x_t) is not Tensor or x_t.dtype != torch.float32 or x_t.ndim != 2 or not x_t.is_cpu
                or not x_t.is_contiguous()):
            return None
        B, I = x_t.shape
        if B >= PACKED_STEP_MIN_ROWS:
            return self._packed_step_fast(module, x_t, h)
        w = inplace_weights(module)
        if w is None or I != w.n_in or B == 0:
            return None
        h_new = torch.empty(w.L, B, w.H)                               # (L, B, H)
        if h is None:
            ha = 0
        elif type(h) is Tensor and h.dtype == torch.float32 and h.is_cpu and h.shape == h_new.shape:
            if not h.is_contiguous():
                h = h.contiguous()                                     # held by h through the call
            ha = h.data_ptr()
        else:
            return None
        cgru().step(w.layers, w.H, w.reset_after, 0.0 if module.training else w.zoneout,
                    min(torch.get_num_threads(), cores()) if w.split else 1, x_t.data_ptr(), ha, h_new.data_ptr(), B)
        return h_new[-1], h_new

    def _packed_step_fast(self, module, x_t: Tensor, h):
        """``step_fast`` for ``PACKED_STEP_MIN_ROWS`` rows or more: through the packed stream that the general
        path built for this module's current weights (checked by the weight cache's rule), batch size and
        thread; ``None`` where there is none yet (the general path builds it)."""
        gen = self.cache.peek(module)
        streams = None if gen is None else gen.parts.get("streams")
        packed = None if streams is None else streams.get((x_t.shape[0], threading.get_ident()))
        if packed is None or x_t.shape[1] != module.spec.input_size:
            return None
        state = packed.state
        if h is not None and not (type(h) is Tensor and h.dtype == torch.float32 and h.is_cpu and h.is_contiguous()
                                  and h.shape == state.shape):
            return None
        h_new = _packed_frame(packed, x_t.numpy(), None if h is None else h.numpy())   # (L, B, H)
        return h_new[-1], h_new

    def _step_inplace(self, module, x: Tensor, h_new: Tensor) -> bool:
        """Advance the contiguous float32 state ``h_new`` ``(L, B, H)`` in place by one contiguous frame ``x``
        ``(B, I)`` with the compiled step reading the module's weight tensors where they are; False when they
        cannot be read in place (then nothing ran)."""
        w = inplace_weights(module)
        if w is None:
            return False
        step_run(w, module, x, h_new)
        return True

    def _step_compiled(self, c, gen, module, x_t: Tensor, h: Tensor) -> Tensor:
        """Inference ``step`` through the compiled kernels: for fewer than ``PACKED_STEP_MIN_ROWS`` rows the weights
        read in place (see :meth:`_step_inplace`); for more, or where they cannot be read in place, a packed stream
        of the module's current generation (one per batch size and Python thread)."""
        B = h.shape[1]
        if B < PACKED_STEP_MIN_ROWS:
            h_new = h.detach().clone(memory_format=torch.contiguous_format)
            x = x_t.detach()
            if self._step_inplace(module, x if x.is_contiguous() else x.contiguous(), h_new):
                return h_new
        streams = self.cache.get(module).get("streams", dict)
        slot = (B, threading.get_ident())
        packed = streams.get(slot)
        if packed is None:
            if len(streams) >= 16:
                streams.clear()
            packed = streams[slot] = _compiled_stream(c, module, B)
        return _packed_frame(packed, np.ascontiguousarray(x_t.detach().numpy()), h.detach().numpy())
