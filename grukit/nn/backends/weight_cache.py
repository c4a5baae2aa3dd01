"""The fused kernels' copies of a module's weights, and the one rule that says when they are stale.

Some fused kernels read weights packed in their own layouts (transposed, in panels), built once per set of
weights: the compiled ``GRU(x)`` plan, the numba kernels (float64, and everything without the C extension), the
numba step. **The rule:** a packed copy is used only while every tensor the module's forward would read holds
exactly the bytes it was packed from. The tensors are what ``module._flat_weights`` gives: the Parameters
themselves or, for a module under ``torch.nn.utils.parametrize`` or the old hook-based ``weight_norm``, the
tensors that ``getattr`` computes now. Checking bytes (one ``memcmp`` per tensor against a snapshot taken when
packing) sees every route by which values change: optimizer steps, ``load_state_dict``, ``.data`` writes,
``p.data = t``, ``vector_to_parameters`` and later writes into its vector, EMA updates, pruning masks,
parametrizations, numpy views (``.data`` writes and numpy views bump no version counter, so bytes are the only
witness). When the same tensor objects sit at the same addresses (the snapshot holds them, so no other
allocation can start there) the snapshot is compared in place; otherwise the new tensors' sizes are checked
before their bytes are. With the C extension the common case is one call, ``_cgru.held``: it looks the
Parameters up in the module's ``_parameters``, checks identity and ``data_ptr()`` against the held ones and runs
the ``memcmp`` (no Python list, map or frame per tensor: about 0.4 us of Python and call overhead around the
``memcmp`` at H=64, from 1.4 us).

The compiled float32 ``GRU.step`` keeps no copy at all: it reads the weight tensors where they are
(``fused_cpu.InPlaceWeights``), so nothing can be stale and it pays no comparison.

**The one exception:** inside :func:`frozen` (what ``GRU.frozen_weights()`` and ``grukit.nn.frozen_weights(...)``
open) a module's packed copy is checked once, on the first call in the scope, and then trusted until the scope
exits: changes to the weights inside the scope are not seen by the packed copies (the in-place step still sees
them); after it exits the rule above applies again. The cost of the rule and of the scope is measured in
``bench/README.md``.

:class:`WeightCache` keeps one :class:`Packed` per module; every packed form (the numba layers, the compiled
panels and ``_cgru.Plan``, the numba step weights, packed streams, kernel scratch) hangs off it and is dropped
with it.
"""
from __future__ import annotations

import contextlib
import operator
import threading
import weakref
from typing import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["WeightCache", "Packed", "Snapshot", "weight_tensors", "frozen"]


def weight_tensors(module) -> list[Tensor]:
    """The tensors a forward of ``module`` reads now, in torch's ``_flat_weights`` order (plus any layer-norm
    parameters): its Parameters, or what a parametrization or weight_norm hook puts under those names."""
    params = module._parameters
    names = module._flat_weights_names
    out = [params.get(n) for n in names]
    for t in out:
        if t is None:                                                  # parametrized or a plain attribute
            return [getattr(module, n) for n in names]
    return out


class _Scope:
    """One module's open :func:`frozen` scope (nested and concurrent entries share it). A fresh object per
    outermost entry, so a packed copy trusted in an earlier scope is checked again in the next one."""
    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


_FROZEN: dict[int, _Scope] = {}         # id(module) -> its open scope (the scope holds the module: the id is its)
_FROZEN_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen(module) -> Iterator:
    """Trust ``module``'s packed weights, once checked, until the scope exits (see the module docstring).

    The check runs on the first fused call inside the scope (so changes made before it, even after entering,
    are seen), then every call skips it: changes to the weights inside the scope are NOT seen. Nesting and
    entries from several threads share one scope per module, which ends when the last of them exits (an
    exception included); from then on every call checks again. The scope covers the module, not a thread:
    while any thread is inside, every call on the module skips the check."""
    key = id(module)
    with _FROZEN_LOCK:
        scope = _FROZEN.get(key)
        if scope is None:
            scope = _FROZEN[key] = _Scope()
        scope.depth += 1
    try:
        yield module
    finally:
        with _FROZEN_LOCK:
            scope.depth -= 1
            if scope.depth == 0 and _FROZEN.get(key) is scope:
                del _FROZEN[key]


def frozen_now(module) -> bool:
    """Whether ``module`` is inside a :func:`frozen` scope now."""
    return id(module) in _FROZEN


_data_ptr = Tensor.data_ptr


def _holds_now(module, snapshot: "Snapshot", held) -> bool:
    """The rule for ``module``'s current weights. The Parameters themselves are looked up first (no
    parametrization: ``_parameters`` has them all); when they are the held objects at the held addresses, the
    snapshot is compared in place (with the compiled check: one C call from the module's ``_parameters``), else
    the tensors a forward reads (``weight_tensors``) are checked in full."""
    if held is not None and snapshot.on_cpu:
        got = held(snapshot._np, snapshot.nbytes, snapshot.addrs, snapshot.held, module._parameters,
                   module._flat_weights_names)
        if got is not None:
            return got
    else:
        params = list(map(module._parameters.get, module._flat_weights_names))
        if snapshot.same_objects(params):
            return snapshot._compare(params, snapshot.addrs, held)
    return snapshot.holds(weight_tensors(module), held)


class Snapshot:
    """The bytes of some tensors, copied at one moment, and the check that they still hold them."""

    def __init__(self, tensors: list[Tensor]) -> None:
        ts = [t.detach() for t in tensors]
        self.shapes = [(t.shape, t.dtype) for t in ts]
        self.nbytes = tuple(t.numel() * t.element_size() for t in ts)
        flat = [t.contiguous().reshape(-1).view(torch.uint8) for t in ts]
        self.bytes = torch.cat(flat) if flat else torch.empty(0, dtype=torch.uint8)   # (sum nbytes,)
        self.on_cpu = self.bytes.device.type == "cpu"
        self._np = self.bytes.numpy() if self.on_cpu else None        # memcmp reads CPU memory only
        self.held = tuple(tensors)                                     # no new tensor can take a held address
        self.addrs = tuple(map(_data_ptr, tensors))

    def holds(self, tensors: list[Tensor], held: Callable | None) -> bool:
        """Whether ``tensors`` (the module's current weights) hold the snapshot's bytes. ``held`` is the compiled
        check (``_cgru.held``: identity and addresses, then one ``memcmp``) or ``None`` (then torch compares)."""
        if held is not None and self.on_cpu:
            got = held(self._np, self.nbytes, self.addrs, self.held, tensors)
            if got is not None:
                return got
        elif self.same_objects(tensors):
            return self._compare(tensors, self.addrs, held)            # same objects, sizes and addresses
        if len(tensors) != len(self.held):
            return False
        for t, (shape, dtype) in zip(tensors, self.shapes):
            if (t is None or t.shape != shape or t.dtype != dtype or t.device != self.bytes.device
                    or not t.is_contiguous()):
                return False
        tensors = tuple(tensors)
        addrs = tuple(map(_data_ptr, tensors))
        if not self._compare(tensors, addrs, held):
            return False
        self.held = tensors                                            # same values in new tensors: keep them
        self.addrs = addrs
        return True

    def same_objects(self, tensors: list) -> bool:
        """Whether ``tensors`` are the held tensor objects at the held addresses (so their sizes are the
        snapshot's: the held objects keep their memory, no other allocation can start at those addresses)."""
        return (len(tensors) == len(self.held) and all(map(operator.is_, tensors, self.held))
                and tuple(map(_data_ptr, tensors)) == self.addrs)

    def _compare(self, tensors: tuple, addrs: tuple, held) -> bool:
        if held is not None and self.on_cpu:
            return held(self._np, self.nbytes, addrs, tensors, tensors)   # sizes checked: compare in place
        off = 0
        for t, n in zip(tensors, self.nbytes):
            if not torch.equal(t.detach().reshape(-1).view(torch.uint8), self.bytes[off:off + n]):
                return False
            off += n
        return True


class Packed:
    """One generation of a module's packed weights: the snapshot they were built from and a slot per packed
    form (filled on first use by whoever needs it: ``packed.get(name, build)``)."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.snapshot = Snapshot(tensors)
        self.parts: dict = {}
        self.trusted: _Scope | None = None                            # the frozen scope it was checked in

    def get(self, name, build: Callable):
        hit = self.parts.get(name)
        if hit is None:
            hit = self.parts[name] = build()
        return hit


class WeightCache:
    """Per module (weakly held), the current :class:`Packed`; :meth:`get` applies the rule above."""

    def __init__(self, held: Callable | None = None) -> None:
        self._packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.held = held                                               # _cgru.held, or None: torch compares
        self.builds = 0                                                # how many generations were packed (tests)

    def get(self, module) -> Packed:
        """The packed weights of ``module``'s current values (a new, empty generation when they changed); inside
        a :func:`frozen` scope, the generation checked in it, unchecked."""
        packed = self._packed.get(module)
        scope = _FROZEN.get(id(module)) if _FROZEN else None
        if scope is not None and packed is not None and packed.trusted is scope:
            return packed
        if packed is None or not _holds_now(module, packed.snapshot, self.held):
            packed = self._packed[module] = Packed(weight_tensors(module))
            self.builds += 1
        packed.trusted = scope
        return packed

    def peek(self, module) -> Packed | None:
        """The current generation if it is still valid, else ``None`` (nothing is built); inside a
        :func:`frozen` scope, the generation checked in it, unchecked."""
        packed = self._packed.get(module)
        if packed is None:
            return None
        scope = _FROZEN.get(id(module)) if _FROZEN else None
        if scope is not None and packed.trusted is scope:
            return packed
        if not _holds_now(module, packed.snapshot, self.held):
            return None
        packed.trusted = scope
        return packed
