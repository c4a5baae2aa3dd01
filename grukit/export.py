"""ONNX export of grukit GRUs and of whole task models, checked against onnxruntime before it is kept.

A grukit :class:`~grukit.nn.GRU` becomes one ONNX ``GRU`` operator per layer (``linear_before_reset=1`` for
the torch-style GRU, ``0`` for the Cho variant), gates reordered to ONNX's ``(z, r, h)``, with dynamic batch
and time axes, the initial state as an input and ``sequence_lens`` for padded batches. Whole models (a task's
network with its heads) export through ``torch.onnx.export``; every grukit GRU inside them is emitted as
those ``GRU`` operators.

Every export checks itself: the file runs in onnxruntime on random inputs with batch and time sizes other
than the example's (and on ``check_inputs`` you pass, e.g. real data) and is deleted, with an
:class:`ExportError`, when its outputs differ from PyTorch's by more than ``atol``.

What has no ONNX operator is refused with a message naming the option: ``layer_norm=True`` and
``zoneout > 0`` change the recurrence itself, and MinGRU's log-space scan has no ONNX counterpart.
(``recurrent_dropout`` and inter-layer ``dropout`` are identities at inference and export fine.)
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError, GrukitError
from .nn.onnx import gru_export_forward, onnx_layer_weights  # noqa: F401  (re-exported)

__all__ = ["ExportError", "Exported", "to_onnx", "export_module", "check_exportable"]

OPSET = 17


class ExportError(GrukitError, RuntimeError):
    """The model cannot be exported, or the exported file does not reproduce PyTorch's outputs."""


@dataclass(frozen=True)
class Exported:
    """A verified ONNX file: where it is, and how far onnxruntime's outputs were from PyTorch's."""
    path: Path
    max_abs_diff: float          # worst |onnxruntime - PyTorch| over every checked input and output
    checked: int                 # input tuples run through both


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`ExportError` naming every module and option that has no ONNX form."""
    from .nn import GRU, MinGRU

    problems = []
    for name, m in model.named_modules():
        where = name or type(model).__name__
        if isinstance(m, MinGRU):
            problems.append(f"{where}: MinGRU's log-space parallel scan has no ONNX operator")
        if isinstance(m, GRU):
            if m.spec.layer_norm:
                problems.append(f"{where}: layer_norm=True has no ONNX GRU form (train with layer_norm=False "
                                "to export)")
            if m.spec.zoneout > 0:
                problems.append(f"{where}: zoneout={m.spec.zoneout} changes the recurrence at inference; the "
                                "ONNX GRU operator cannot express it (train with zoneout=0 to export)")
    if problems:
        raise ExportError("cannot export to ONNX:\n  - " + "\n  - ".join(problems))


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_module(model: nn.Module, path: str | os.PathLike, example_inputs: Sequence[Tensor], *,
                  input_names: Sequence[str], output_names: Sequence[str],
                  dynamic_axes: dict[str, dict[int, str]] | None = None,
                  check_inputs: Sequence[Sequence[Tensor]] = (), atol: float = 1e-4) -> Exported:
    """Export ``model(*example_inputs)`` to ``path`` and verify it in onnxruntime (see module docstring).

    ``check_inputs`` are more input tuples to verify on (other batch/time sizes, real data). The file is
    written to a temporary name and renamed only after it passed.
    """
    check_exportable(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(model, tuple(example_inputs), tmp, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes or {},
                              opset_version=OPSET, dynamo=False)
        runs = [tuple(example_inputs), *[tuple(c) for c in check_inputs]]
        worst = _verify(model, tmp, runs, list(input_names), atol)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    return Exported(path, worst, len(runs))


def _verify(model: nn.Module, file: str, inputs: list[tuple], names: list[str], atol: float) -> float:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is in grukit[export]
        raise ExportError("verifying the export needs onnxruntime: pip install 'grukit[export]'") from e
    sess = ort.InferenceSession(file, providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for args in inputs:
        with torch.no_grad():
            expected = model(*args)
        expected = [expected] if isinstance(expected, Tensor) else list(expected)
        feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args) if n in feed_names}
        got = sess.run(None, feeds)
        for i, (e, g) in enumerate(zip(expected, got)):
            diff = float(np.max(np.abs(e.detach().cpu().numpy() - g))) if e.numel() else 0.0
            worst = max(worst, diff)
            if not diff <= atol:
                raise ExportError(f"the ONNX file's output {i} differs from PyTorch by {diff:.3g} (> atol "
                                  f"{atol:g}) on inputs of shapes {[tuple(a.shape) for a in args]}; the file "
                                  "was not kept")
    return worst


class _BareGRU(nn.Module):
    """``(x, h0[, lengths]) -> (output, h_n)`` around a grukit GRU, for export."""

    def __init__(self, gru, with_lengths: bool):
        super().__init__()
        self.gru, self.with_lengths = gru, with_lengths

    def forward(self, x, h0, lengths=None):
        return self.gru(x, h0, lengths=lengths) if self.with_lengths else self.gru(x, h0)


def to_onnx(model: nn.Module, path: str | os.PathLike, *, lengths: bool = False, atol: float = 1e-4,
            check_inputs: Sequence[Sequence[Tensor]] = ()) -> Exported:
    """Export a bare grukit ``GRU`` to ``path``: inputs ``x``, ``h0`` (and ``lengths``), outputs ``y``, ``h_n``.

    Axes: ``x`` is ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``), ``h0`` ``(L*D, B, H)``, ``lengths``
    ``(B,)`` int64; batch and time are dynamic. Returns the verified :class:`Exported`; raises :class:`ExportError` (and writes
    nothing) when the model has no ONNX form or onnxruntime disagrees with PyTorch beyond ``atol``.
    """
    from .nn import GRU

    if not isinstance(model, GRU):
        raise ConfigError(f"to_onnx exports a grukit.nn.GRU, got {type(model).__name__}; for a whole model use "
                          "export_module (or `grukit export RUN`)")
    s = model.spec
    dtype = model.weight_ih_l0.dtype

    def sample(B: int, T: int):
        x = torch.randn((B, T, s.input_size) if s.batch_first else (T, B, s.input_size), dtype=dtype)
        h0 = torch.randn(s.num_layers * s.num_directions, B, s.hidden_size, dtype=dtype)
        if not lengths:
            return (x, h0)
        return (x, h0, torch.randint(1, T + 1, (B,)).index_fill_(0, torch.tensor([0]), T))

    bt = {0: "batch", 1: "time"} if s.batch_first else {0: "time", 1: "batch"}
    axes = {"x": bt, "h0": {1: "batch"}, "y": bt, "h_n": {1: "batch"}}
    names = ["x", "h0"]
    if lengths:
        axes["lengths"] = {0: "batch"}
        names.append("lengths")
    torch.manual_seed(0)
    wrapper = _BareGRU(model, lengths).train(model.training)   # restored to the GRU's own mode afterwards
    return export_module(wrapper, path, sample(3, 7), input_names=names,
                         output_names=["y", "h_n"], dynamic_axes=axes, atol=atol,
                         check_inputs=[sample(1, 1), sample(5, 13), *check_inputs])


# ---------------------------------------------------------------- whole task models
class _TaskGraph(nn.Module):
    """``(*tensors) -> outputs``: a task model with its batch dict flattened into positional inputs."""

    def __init__(self, task: nn.Module, keys: Sequence[str]):
        super().__init__()
        self.task, self.keys = task, list(keys)

    def forward(self, *tensors):
        outputs, _ = self.task(dict(zip(self.keys, tensors)))
        return outputs


def _random_like(key: str, t: Tensor, time_len: int) -> Tensor:
    if key == "lengths":
        lens = torch.randint(1, time_len + 1, t.shape, dtype=t.dtype)
        return lens.index_fill_(0, torch.tensor([0]), time_len)     # one full-length sequence
    if t.is_floating_point():
        return torch.randn_like(t)
    return t.clone()                                                  # ids and the like: the real values


def export_run(run, out: str | os.PathLike | None = None, data: str | None = None, member: int = 0,
               atol: float = 1e-4) -> Exported:
    """Export a trained run's model (a task module may define ``export_model(run, model, batch)``).

    The graph's inputs are the tensors of one input batch of the task (``x``, ``lengths``, ...) with a
    dynamic batch axis (and time axis for ``x``); it is verified in onnxruntime on a real batch of ``data``
    (default: the run's training data) and on random inputs of the same shapes.
    """
    model = run.models()[member]
    if run.meta.get("combine"):
        warnings.warn(f"{run.path}: the ONNX graph is the network alone; this run's forecasts average it with "
                      f"{', '.join(run.meta['combine'])} fitted on each history (combine, in meta.json), which the "
                      "graph does not do", stacklevel=2)
    own = model.config                  # the member's own setting (an assembled ensemble's members differ)
    cfg = own if data is None else own.replace(data=data)
    module = run.module()
    try:
        prepared = module.prepare(cfg)
    except GrukitError as e:
        raise ExportError(f"exporting checks the file on real inputs, but the run's data could not be read "
                          f"({e}); pass --data PATH") from None
    batch = next(iter(prepared.val or prepared.train))
    out = Path(out) if out is not None else run.path / "model.onnx"
    if hasattr(module, "export_model"):
        return module.export_model(run, model, batch, out)
    inputs, _ = model.batch_to_inputs(batch)
    keys = [k for k, v in inputs.items() if isinstance(v, Tensor) and k not in ("y", "target")]
    real = tuple(inputs[k] for k in keys)
    T = int(inputs["x"].shape[1]) if inputs["x"].ndim >= 2 else 1
    axes = {k: ({0: "batch", 1: "time"} if k == "x" and inputs[k].ndim == 3 else {0: "batch"}) for k in keys}
    axes["output"] = {0: "batch"}
    rand = tuple(_random_like(k, v, T) for k, v in zip(keys, real))
    return export_module(_TaskGraph(model, keys), out, real, input_names=keys, output_names=["output"],
                         dynamic_axes=axes, check_inputs=[rand], atol=atol)
