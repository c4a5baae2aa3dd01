"""grukit: GRU sequence modeling end to end.

Re-exports only; everything heavy is imported on first use, so ``import grukit`` (and the CLI) stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "GRU": "grukit.nn", "GRUCell": "grukit.nn", "MinGRU": "grukit.nn",
    "GRURegressor": "grukit.estimators", "GRUClassifier": "grukit.estimators",
    "GRUForecaster": "grukit.estimators",
    "fit": "grukit.train", "open_run": "grukit.runs", "to_onnx": "grukit.export",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grukit' has no attribute {name!r}")
