"""Which kernels the fused CPU backend runs, and on how many threads.

``kernels()`` loads the numba kernels (``_fused/kernels.py``) on first use, ``cgru()`` the compiled C ones
(``_fused/``, the parts listed in ``cgru.h``; ``None`` where not built or ``GRUKIT_CGRU=0``). The thread choices
below are rules; the measurements that set their thresholds are in ``bench/README.md``.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..spec import GRUSpec

__all__ = ["kernels", "cgru", "cgru_status", "stream_meta", "check_constants", "PANEL", "MAX_STACK_ROWS", "MAX_LAYERS", "threads_for", "compiled_threads", "unit_split", "plan_threads",
           "stream_threads", "cores", "PARALLEL_MIN_WORK", "SPLIT_MIN_HIDDEN", "COMPILED_PARALLEL_MIN_WORK",
           "STREAM_SPLIT_MIN_HIDDEN", "PIPELINE_MIN_WORK"]

# Batch rows are split across threads only when one call has this much recurrent work (B * H * H * T
# multiply-adds): below it one thread wins, the parallel region and a cold second core cost more.
PARALLEL_MIN_WORK = 4_000_000


_KERNELS: list = []


def kernels():
    """The numba kernels module (imported, and compiled or loaded from cache, on first use)."""
    if not _KERNELS:
        from ._fused import load
        _KERNELS.append(load())
    return _KERNELS[0]


_CGRU: list = []

PANEL = 16              # columns per panel of the compiled kernels' packed weights (cgru.h's PANEL)
MAX_STACK_ROWS = 256    # the most rows a compiled step, stream or split call takes (cgru.h's MAX_STACK_ROWS)
MAX_LAYERS = 64         # the most layers of a compiled step or stream (cgru.h's MAX_LAYERS)


def check_constants(mod) -> None:
    """The compiled module's sizes that Python also uses must be the ones Python packs for: a ``RuntimeError``
    naming each one that differs (an extension built from other sources: rebuild it)."""
    bad = [f"{name}: C {getattr(mod, name, None)}, Python {want}"
           for name, want in (("PANEL", PANEL), ("MAX_STACK_ROWS", MAX_STACK_ROWS), ("MAX_LAYERS", MAX_LAYERS))
           if getattr(mod, name, None) != want]
    if bad:
        raise RuntimeError("grukit's compiled kernels and its Python side disagree on " + "; ".join(bad)
                           + " (rebuild the extension: python setup.py build_ext --inplace)")


def cgru():
    """grukit's compiled float32 kernels (``_fused/_cgru``), or ``None`` where they were not built (no C
    compiler at install time) or ``GRUKIT_CGRU=0`` turns them off; then the numba kernels run everything."""
    if not _CGRU:
        mod = None
        if os.environ.get("GRUKIT_CGRU", "1") != "0":
            try:
                from ._fused import _cgru as mod
            except ImportError:
                mod = None
            if mod is not None:
                check_constants(mod)
        _CGRU.append(mod)
    return _CGRU[0]


def stream_meta(c, head: dict[str, int], layers: list[dict[str, int]]) -> np.ndarray:
    """A compiled stream's meta, filled by field name: ``head`` the ``StreamMeta`` fields and ``layers`` one dict
    of ``StreamLayerMeta`` fields per layer. The layout (names and order, all int64) is the C side's own
    (``c.STREAM_META``, ``c.STREAM_LAYER_META``, from ``cgru.h``), so the two cannot disagree on a position; a field
    one side has and the other lacks is a ``RuntimeError`` naming it (an extension built from other sources:
    rebuild it)."""
    out = []
    for what, names, values in [("StreamMeta", c.STREAM_META, head)] + [
            ("StreamLayerMeta", c.STREAM_LAYER_META, v) for v in layers]:
        missing, unknown = [n for n in names if n not in values], [n for n in values if n not in names]
        if missing or unknown:
            raise RuntimeError(
                f"grukit's compiled kernels and its Python side disagree on the {what} layout: "
                + "; ".join(filter(None, [missing and f"C has {missing} that Python does not fill",
                                          unknown and f"Python fills {unknown} that C does not have"]))
                + " (rebuild the extension: python setup.py build_ext --inplace)")
        rec = np.zeros((), np.dtype([(n, np.int64) for n in names]))
        for n in names:
            rec[n] = values[n]
        out.append(rec.reshape(1).view(np.int64))
    return np.concatenate(out)


def cgru_status() -> str:
    """Which kernels float32 inference runs: ``"compiled (avx2)"``, ``"compiled (generic)"`` or ``"numba"``."""
    c = cgru()
    return "numba" if c is None else f"compiled ({c.isa()})"


def threads_for(B: int, H: int, T: int) -> int:
    """How many batch chunks (threads) the kernels use for a call of this size."""
    n = torch.get_num_threads()
    if n < 2 or B < 2 or B * H * H * T < PARALLEL_MIN_WORK:
        return 1
    import numba
    return max(1, min(n, numba.get_num_threads(), B))


# A single sequence splits its hidden units across threads (one meeting per step) from this hidden size: below
# it the meetings cost more than the halved matmul saves (measurements: bench/README.md, "thread thresholds").
SPLIT_MIN_HIDDEN = 128
# Batch rows go to several threads from this much recurrent work (B * H * H * T multiply-adds) per call: the
# pool's helpers are handed work without a system call while they spin, and a call never waits for one, so
# the break-even is lower than the numba kernels' PARALLEL_MIN_WORK (bench/README.md).
COMPILED_PARALLEL_MIN_WORK = 1_000_000


# A stream frame splits the hidden units of every layer across the threads (one meeting per layer) from this
# hidden size; below it two threads do not win reliably, so frames stay on one (bench/README.md).
STREAM_SPLIT_MIN_HIDDEN = 192


def stream_threads(H: int) -> int:
    """Threads of a compiled stream (chosen when it is made): from ``STREAM_SPLIT_MIN_HIDDEN`` every frame is split
    by hidden units."""
    if H < STREAM_SPLIT_MIN_HIDDEN:
        return 1
    return max(1, min(torch.get_num_threads(), cores()))


_CORES: list = []


def cores() -> int:
    """The cores this process may use (read once: a stream frame asks per call)."""
    if not _CORES:
        try:
            _CORES.append(len(os.sched_getaffinity(0)))
        except AttributeError:                                         # not on Linux
            _CORES.append(os.cpu_count() or 1)
    return _CORES[0]


# Fewer rows than threads below SPLIT_MIN_HIDDEN: the recurrence stays on the calling thread while the helpers
# project the time steps ahead of it ("pipelined"), from this much projection work (T * B * 3H * I multiply-adds)
# and at least two chunks of steps (of _cgru.PIPE_STEPS): below it the helper's hand-off costs what it saves
# (bench/README.md).
PIPELINE_MIN_WORK = 200_000


def compiled_threads(B: int, H: int, T: int, I: int = 0) -> int:
    """Threads of a compiled inference call: batch chunks from ``COMPILED_PARALLEL_MIN_WORK``; for fewer rows than
    threads a hidden-unit split from ``SPLIT_MIN_HIDDEN`` (see :func:`unit_split`), below it a pipelined
    projection from ``PIPELINE_MIN_WORK``; never more than the cores this process may use (the split's threads
    wait for each other spinning, so they must not share a core)."""
    n = torch.get_num_threads()
    c = cgru()
    pipelined = c is not None and T >= 2 * c.PIPE_STEPS and T * B * 3 * H * I >= PIPELINE_MIN_WORK
    if n < 2 or (B * H * H * T < COMPILED_PARALLEL_MIN_WORK and (H < SPLIT_MIN_HIDDEN or T == 1) and not pipelined):
        return 1                                            # decided without asking the OS (~0.6 us)
    n = min(n, cores())
    if n < 2:
        return 1
    if B < n:
        return n if (H >= SPLIT_MIN_HIDDEN and T > 1) or pipelined else 1
    return min(n, B) if B * H * H * T >= COMPILED_PARALLEL_MIN_WORK else 1


def unit_split(H: int) -> bool:
    """Whether a call with fewer rows than threads splits the hidden units (else it is pipelined)."""
    return H >= SPLIT_MIN_HIDDEN


def plan_threads(spec: GRUSpec, T: int, B: int) -> tuple[int, int, bool]:
    """``(threads of the first layer, threads of the layers above, unit_split)`` for a ``_cgru.Plan`` call."""
    H = spec.hidden_size
    n0 = compiled_threads(B, H, T, spec.input_size)
    n1 = n0 if spec.num_layers == 1 else compiled_threads(B, H, T, spec.num_directions * H)
    return n0, n1, unit_split(H)
