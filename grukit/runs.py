"""Run directories: atomic writes, safe loading, and reopening a trained model without its training data.

A run directory holds::

    run.json              grukit version, task name, status, created/updated times, data it was trained on
    config.yaml           the resolved configuration (every field, defaults included)
    meta.json             data-dependent state: sizes, scalers, class names, vocabularies (JSON only)
    model.safetensors     the best weights (state_dict; ``model-1.safetensors``... for extra ensemble members)
    checkpoints/          Lightning ``best.ckpt`` and ``last.ckpt`` (for ``--resume``)
    metrics.csv           per-epoch training/validation metrics (Lightning CSVLogger)
    metrics.json          evaluation metrics of the model and its baselines
    plots/*.png           loss curve and task plots
    predictions*.csv      written by ``grukit predict``

Every file is written atomically: a temporary file in the same directory, ``fsync``, then ``os.replace``. So a
crash leaves either the old file or the new one, never half of one. Nothing here unpickles: weights load through
safetensors, checkpoints through ``torch.load(weights_only=True)``, everything else is JSON/YAML text.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, DataError

__all__ = ["atomic_write", "write_json", "read_json", "write_yaml", "save_weights", "load_weights",
           "load_checkpoint", "new_run_dir", "Run", "open_run"]

RUN_FILE = "run.json"


# ------------------------------------------------------------------ atomic writes
def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_yaml(path: str | Path, obj: Any) -> Path:
    import yaml
    return atomic_write(path, yaml.safe_dump(obj, sort_keys=False))


def save_weights(state_dict: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a state_dict as safetensors (tensors made contiguous and unshared), atomically."""
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return atomic_write(path, save(tensors, metadata=metadata))


def load_weights(path: str | Path) -> dict:
    """Load a safetensors state_dict (no pickle involved); anything else is refused with a DataError."""
    from safetensors.torch import load
    data = Path(path).read_bytes()
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own SafetensorError (and others) on foreign bytes
        raise DataError(f"not a safetensors weight file ({type(e).__name__}: {e}); grukit never unpickles "
                        "weights, so a file of any other format is refused", path=path) from None


def safe_torch_load(path: str | Path):
    """``torch.load(weights_only=True)``: tensors and plain containers only; a pickle that would build or call
    anything else is refused with a :class:`DataError` and never executed."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"refused to load this checkpoint: it is not a plain tensor checkpoint ({first[:200]}). "
                        "grukit loads checkpoints with torch.load(weights_only=True) and never runs code from "
                        "them", path=path) from None


def check_version(version, path) -> None:
    """A checkpoint from another major version of grukit (or none) fails with what it is and what is expected."""
    ours = __version__.split(".")[0]
    if not isinstance(version, str) or version.split(".")[0] != ours:
        raise ConfigError(f"{path} was written by grukit {version!r}; this is grukit {__version__} and reads "
                          f"checkpoints of grukit {ours}.x; retrain, or load it with the version that wrote it")


def load_checkpoint(path: str | Path, task: str | None = None) -> dict:
    """Load a Lightning checkpoint with ``torch.load(weights_only=True)``; check it belongs to ``task``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    ckpt = safe_torch_load(path)
    info = ckpt.get("grukit") if isinstance(ckpt, dict) else None
    if info is None:
        raise ConfigError(f"{path} is not a grukit checkpoint (it has no 'grukit' entry with version, task and "
                          "config)")
    check_version(info.get("version"), path)
    if task is not None and info.get("task") != task:
        raise ConfigError(f"{path} holds a {info.get('task')!r} model, not {task!r}; load it with the "
                          f"{info.get('task')!r} task")
    return ckpt


# ------------------------------------------------------------------ run directories
MIN_FREE_BYTES = 50 * 2 ** 20   # refuse to start a run on a disk with less free space than this


def check_writable(path: Path) -> None:
    """Fail before training when ``path`` cannot take files: unwritable, or the disk nearly full."""
    import shutil
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"cannot write the run directory {str(path)!r}: {e.strerror or e}; choose another "
                          "--out") from None
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"only {free / 2 ** 20:.0f} MiB free on the disk of {str(path)!r}; checkpoints need "
                          f"more (at least {MIN_FREE_BYTES // 2 ** 20} MiB): free space or choose another --out")


def new_run_dir(out: str | Path | None, task: str, resume: bool = False) -> Path:
    """The directory for a new run: ``out`` if given, else ``runs/<task>`` (``-2``, ``-3``... if taken).

    An explicit ``out`` that already holds a run is refused unless ``resume``: nothing written is overwritten.
    """
    if out is not None:
        p = Path(out)
        if resume:
            if not (p / RUN_FILE).is_file():
                raise ConfigError(f"--resume: {p} is not a run directory (no {RUN_FILE}); train without "
                                  "--resume first")
            check_writable(p)
            return p
        if p.exists() and any(p.iterdir()):
            raise ConfigError(f"run directory {str(p)!r} already exists and is not empty; pass --resume to "
                              "continue that run or choose another --out")
        check_writable(p)
        return p
    if resume:
        raise ConfigError("--resume needs --out DIR naming the run to continue")
    base = Path("runs") / task
    p, i = base, 1
    while p.exists():
        i += 1
        p = base.with_name(f"{base.name}-{i}")
    check_writable(p)
    return p


class Run:
    """An opened run directory: its task, config and meta, and the trained model(s)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        info_file = self.path / RUN_FILE
        if not info_file.is_file():
            raise ConfigError(f"{self.path} is not a grukit run directory (no {RUN_FILE}); pass the --out "
                              "directory of `grukit train`")
        self.info = read_json(info_file)
        from .tasks import registry
        self.entry = registry.get(self.info["task"])
        import yaml
        cfg = yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8")) or {}
        self.config = self.entry.config_class().from_dict(cfg, source=str(self.path / "config.yaml"))
        meta_file = self.path / "meta.json"
        self.meta = read_json(meta_file) if meta_file.is_file() else {}

    @property
    def task(self) -> str:
        return self.info["task"]

    def module(self):
        return self.entry.load()

    def weight_files(self) -> list[Path]:
        files = sorted(self.path.glob("model*.safetensors"), key=lambda p: (len(p.name), p.name))
        if not files:
            raise ConfigError(f"{self.path} has no trained weights (model.safetensors); the run may have been "
                              f"interrupted: continue it with `grukit train {self.task} --out {self.path} "
                              "--resume`")
        return files

    def models(self) -> list:
        """The trained model(s), in eval mode (several for an ensemble)."""
        Task = self.module().Task
        out = []
        for f in self.weight_files():
            m = Task(self.config, self.meta)
            m.load_state_dict(load_weights(f))
            out.append(m.eval())
        return out

    def update_info(self, **changes) -> None:
        self.info.update(changes, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.path / RUN_FILE, self.info)

    def evaluate(self, data: str | None = None) -> dict:
        """Evaluate on ``data`` (default: the held-out part of the training data); writes metrics.json."""
        metrics = self.module().evaluate(self, self.models(), data)
        write_json(self.path / ("metrics.json" if data is None else "metrics-eval.json"), metrics)
        return metrics

    def predict(self, data: str | None = None, out: str | Path | None = None, **options) -> list[Path]:
        """Write predictions for ``data`` (CSV, and a PNG where the task has one); returns the paths.

        ``options`` are task-specific (forecast: ``holdout``); ``None`` values are ignored."""
        options = {k: v for k, v in options.items() if v is not None}
        if options:
            import inspect
            accepted = inspect.signature(self.module().predict).parameters
            unknown = [k for k in options if k not in accepted]
            if unknown:
                raise ConfigError(f"predict option(s) {unknown} do not apply to a {self.task!r} run")
        return self.module().predict(self, self.models(), data, out, **options)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, task={self.task!r})"


def open_run(path: str | Path, task: str | None = None) -> Run:
    run = Run(path)
    if task is not None and run.task != task:
        raise ConfigError(f"{path} is a {run.task!r} run, not {task!r}")
    return run


def start_run(path: Path, task: str, config, meta: dict) -> Run:
    """Write run.json, config.yaml and meta.json of a new run (resume keeps existing files)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if not (path / RUN_FILE).is_file():
        write_json(path / RUN_FILE, {"grukit_version": __version__, "task": task, "status": "training",
                                     "created": now, "updated": now, "data": config.data})
    write_yaml(path / "config.yaml", config.to_dict())
    write_json(path / "meta.json", meta)
    return Run(path)


def checkpoint_bytes(checkpoint: dict) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()
