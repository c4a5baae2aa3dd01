"""Backends: the interchangeable implementations of a GRU forward pass, chosen from the spec.

A backend is an object with:

``name``
    short string, the value users pass as ``GRU(..., backend=name)``.
``supports(spec, x, training) -> str | None``
    ``None`` when it can run this spec on this input (device, dtype, size); otherwise a short reason.
``forward(module, x, hx, lengths) -> (out, h_n)``
    ``x`` is time-major ``(T, B, I)``; ``hx`` is ``(L*D, B, H)`` (zeros when the user gave none);
    ``lengths`` is ``None`` (every sequence is ``T`` long) or an int64 CPU tensor ``(B,)`` with values in
    ``[1, T]``. Returns ``out`` ``(T, B, D*H)`` with zeros past each length and ``h_n`` ``(L*D, B, H)``
    holding each sequence's state at its last valid step. Parameters are read with
    ``module.layer_params(layer, direction)``; ``module.training`` and ``module.spec`` say the rest.
``supports_step(spec, x, training) -> str | None`` and ``step(module, x_t, h) -> h'`` (optional)
    one time step for all layers: ``x_t`` ``(B, I)``, ``h`` ``(L, B, H)``; returns the new ``(L, B, H)``.

``select`` walks the registry in priority order (fastest first) and returns the first backend whose
``supports`` answers ``None``. Naming a backend that cannot run the spec raises :class:`BackendError` with
the reason and what to pass instead. The name of the backend that ran last is kept (``last_used()``), and
the kernel family inside it (``last_kernel()``: e.g. ``"fused_cpu/compiled"``, ``"fused_cpu/numba"``,
``"fused_cpu/numba+autograd"``, ``"fused_cpu/custom_op"``, ``"reference"``), so tests can prove which
kernels ran. A backend names its family in an attribute ``kernel`` set by the call that just ran.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ...errors import BackendError
from ..spec import GRUSpec

__all__ = ["Backend", "register", "get", "available", "select", "select_step", "last_used", "last_kernel",
           "record"]


@runtime_checkable
class Backend(Protocol):
    name: str

    def supports(self, spec: GRUSpec, x: Tensor, training: bool) -> str | None: ...

    def forward(self, module, x: Tensor, hx: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]: ...


_REGISTRY: dict[str, tuple[int, Backend]] = {}
_LAST: list[str | None] = [None, None]               # backend name, kernel family


def register(backend: Backend, priority: int) -> None:
    """Add ``backend``; ``auto`` tries higher ``priority`` first."""
    _REGISTRY[backend.name] = (priority, backend)


def available() -> list[str]:
    """Registered backend names, in the order ``auto`` tries them."""
    return [name for name, _ in sorted(_REGISTRY.items(), key=lambda kv: -kv[1][0])]


def get(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendError(f"backend={name!r} is unknown; expected 'auto' or one of {available()}")
    return _REGISTRY[name][1]


def _pick(requested: str, spec: GRUSpec, x: Tensor, training: bool, for_step: bool) -> Backend:
    method = "supports_step" if for_step else "supports"
    if requested != "auto":
        backend = get(requested)
        check = getattr(backend, method, None)
        reason = "it has no streaming step()" if check is None else check(spec, x, training)
        if reason is None:
            return backend
        can = [n for n in available() if n != requested and getattr(get(n), method, None) is not None
               and getattr(get(n), method)(spec, x, training) is None]
        raise BackendError(f"backend={requested!r} cannot run this GRU: {reason}; "
                           f"pass backend='auto' (or one of {can})")
    reasons = []
    for name in available():
        backend = get(name)
        check = getattr(backend, method, None)
        if check is None:
            continue
        reason = check(spec, x, training)
        if reason is None:
            return backend
        reasons.append(f"{name}: {reason}")
    raise BackendError("no backend can run this GRU: " + "; ".join(reasons))


def select(requested: str, spec: GRUSpec, x: Tensor, training: bool) -> Backend:
    """The backend that runs ``forward`` for this spec and input."""
    return _pick(requested, spec, x, training, for_step=False)


def select_step(requested: str, spec: GRUSpec, x: Tensor, training: bool) -> Backend:
    """The backend that runs ``step`` for this spec and input."""
    return _pick(requested, spec, x, training, for_step=True)


def record(name: str, kernel: str | None = None) -> None:
    _LAST[0] = name
    _LAST[1] = kernel                                    # formatted only when asked (last_kernel)


def last_used() -> str | None:
    """Name of the backend that ran the most recent GRU forward or step in this process."""
    return _LAST[0]


def last_kernel() -> str | None:
    """``backend/family`` of the kernels that ran the most recent GRU forward or step (see the module doc)."""
    name, kernel = _LAST
    return name if kernel is None else f"{name}/{kernel}"


def _register_builtin() -> None:
    from .aten import AtenBackend
    from .reference import ReferenceBackend

    register(ReferenceBackend(), priority=0)
    register(AtenBackend(), priority=10)
    try:  # the fused CPU kernels are optional: numba may be missing on exotic platforms
        from .fused_cpu import FusedCPUBackend
    except ImportError:
        return
    register(FusedCPUBackend(), priority=20)


_register_builtin()
