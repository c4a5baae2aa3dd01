"""Numba kernels of the ``fused_cpu`` backend, split by concern.

``act``      vectorisable activations (a rational tanh for float32, exact math for float64)
``kernels``  the fused recurrence: forward (inference and training), backward (BPTT) and the streaming step

Nothing here is imported by ``import grukit``: :func:`load` imports numba and the kernels on first use, after
pointing numba's on-disk cache somewhere writable (:func:`configure_cache`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["configure_cache", "load", "user_cache_dir"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/grukit/numba`` (``~/.cache/grukit/numba`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "grukit" / "numba"


def _writable(folder: Path) -> bool:
    pycache = folder / "__pycache__"
    target = pycache if pycache.exists() else folder
    return os.access(target, os.W_OK | os.X_OK)


def configure_cache(folder: Path | None = None) -> str | None:
    """Send numba's compiled-kernel cache to a user cache dir when the install location is read-only.

    numba writes its cache next to the source (``__pycache__``); an install owned by root or a read-only
    image cannot take it. Then ``NUMBA_CACHE_DIR`` is set to :func:`user_cache_dir` (unless the user set it
    already) before any grukit kernel compiles. Returns the cache dir chosen, or ``None`` for in-tree.
    """
    folder = Path(__file__).parent if folder is None else folder
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if not chosen and not _writable(folder):
        d = user_cache_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None                       # nowhere to write: numba compiles in memory, still correct
        chosen = os.environ["NUMBA_CACHE_DIR"] = str(d)
    if chosen and "numba" in sys.modules:     # numba read the environment already: tell its config too
        import numba
        numba.config.CACHE_DIR = chosen
    return chosen or None


_KERNELS = []


def load():
    """The kernels module, imported (and its cache dir configured) on first call."""
    if not _KERNELS:
        configure_cache()
        from . import kernels
        _KERNELS.append(kernels)
    return _KERNELS[0]
