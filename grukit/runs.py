"""Run directories: a manifest that says what each file holds, safe loading, and reopening a trained model
without its training data.

A run directory holds::

    run.json              grukit version, task name, status, times, data, and the manifest ("files")
    config.yaml           the resolved configuration that training used (every field, defaults included)
    meta.json             data-dependent state: sizes, scalers, class names, vocabularies (JSON only)
    model.safetensors     the best weights (state_dict; ``model-1.safetensors``... for extra ensemble members)
    checkpoints/          ``best.ckpt`` and ``last.ckpt`` (for ``--resume``; ``member-N/`` for ensembles)
    metrics.csv           per-epoch training/validation metrics (also ``logs/metrics.csv``)
    metrics.json          evaluation metrics of the model and its baselines
    plots/*.png           loss curve and task plots
    predictions*.csv      written by ``grukit predict``

Every file is written atomically (:mod:`grukit.io`). The manifest in ``run.json`` records the size and sha256
of every weight, checkpoint and metadata file (config.yaml, meta.json); it is updated in steps around each
write (first the new entry with the old one still accepted, then the file, then the new entry alone; for
checkpoints during training the last step waits for the end of training), so a kill at any moment leaves a run
whose files all match it. Every load checks the files it reads against the manifest:
a file changed, truncated or deleted afterwards is a one-line :class:`~grukit.errors.DataError` naming it.
Nothing here unpickles: weights load through safetensors, checkpoints through ``torch.load(weights_only=True)``
after their zip CRCs are checked, everything else is JSON/YAML text. See docs/run-directory.md.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, DataError
from .io import (atomic_write, digest, file_digest, json_bytes, read_json, read_yaml, storage_error, write_json,
                 write_yaml)

__all__ = ["atomic_write", "write_json", "read_json", "write_yaml", "save_weights", "load_weights",
           "load_checkpoint", "verify_checkpoint", "new_run_dir", "Run", "open_run", "record_files",
           "read_info", "update_info"]

RUN_FILE = "run.json"
MANIFEST = "files"          # the manifest's key in run.json: {relative path: {"size": n, "sha256": hex}}


# ------------------------------------------------------------------ run.json and its manifest
def read_info(run_dir: str | Path) -> dict:
    """run.json of ``run_dir``, checked for the shape grukit writes (a one-line DataError otherwise)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file() and not path.exists():
        raise ConfigError(f"{run_dir} is not a grukit run directory (no {RUN_FILE}); pass the --out directory "
                          "of `grukit train`")
    info = read_json(path, "run record")
    if not isinstance(info, dict) or not isinstance(info.get("task"), str):
        raise DataError("the run record is damaged: expected a JSON object with a \"task\" name", path=path)
    files = info.get(MANIFEST, {})
    ok = isinstance(files, dict) and all(_entry_ok(e) for e in files.values())
    if not ok:
        raise DataError(f"the run record is damaged: its \"{MANIFEST}\" manifest is not a mapping of file "
                        "names to size and sha256", path=path)
    return info


def _entry_ok(e) -> bool:
    if not isinstance(e, dict) or not isinstance(e.get("size"), int) or not isinstance(e.get("sha256"), str):
        return False
    return "or" not in e or e["or"] is None or _entry_ok(e["or"])


def update_info(run_dir: str | Path, **changes) -> dict:
    """Read run.json afresh, apply ``changes``, settle the manifest (see :func:`record_files`), write it back
    atomically; returns the new record."""
    info = read_info(run_dir)
    info.update(changes)
    _settle(Path(run_dir), info)
    write_json(Path(run_dir) / RUN_FILE, info)
    return info


def _relative(run_dir: Path, path: Path) -> str | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        return None


def record_files(run_dir: str | Path, files: dict[Path, bytes], settle: bool = True) -> None:
    """Write ``files`` (path -> bytes) atomically and record them in the manifest of run.json.

    In steps, so that a kill at any moment leaves files that match the manifest: (1) each entry is recorded as
    "new, or the old one" (``or``), (2) the files are written, (3) with ``settle``, the entries are recorded
    alone. Checkpoints during training skip (3) to keep each save to one extra small write; :func:`update_info`
    settles every entry whose file is the new one (at the end of training, or when it stops)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        for p, data in files.items():
            atomic_write(p, data)
        return
    info = read_info(run_dir)
    manifest = info.setdefault(MANIFEST, {})
    new = {}
    for p, data in files.items():
        rel = _relative(run_dir, p)
        if rel is not None:
            new[rel] = digest(data)
            old = manifest.get(rel)
            old = {k: v for k, v in old.items() if k != "or"} if old else None
            if old != new[rel]:
                manifest[rel] = {**new[rel], "or": old}
    write_json(run_dir / RUN_FILE, info)
    for p, data in files.items():
        atomic_write(p, data)
    if settle:
        manifest.update(new)
        info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(run_dir / RUN_FILE, info)


def _settle(run_dir: Path, info: dict) -> None:
    """Drop the ``or`` of every manifest entry whose file is the new version (its write completed)."""
    for rel, entry in info.get(MANIFEST, {}).items():
        if "or" not in entry:
            continue
        p = run_dir / rel
        try:
            now = file_digest(p) if p.is_file() else None
        except OSError:
            continue
        if now is not None and now["size"] == entry["size"] and now["sha256"] == entry["sha256"]:
            del entry["or"]


def verify_file(run_dir: str | Path, path: str | Path, info: dict | None = None, hint: str = "") -> None:
    """Check ``path`` against the run's manifest; a file that differs or is missing is a one-line DataError.

    A file the manifest does not list (a run written before manifests existed) passes unchecked."""
    run_dir, path = Path(run_dir), Path(path)
    info = read_info(run_dir) if info is None else info
    rel = _relative(run_dir, path)
    entry = info.get(MANIFEST, {}).get(rel) if rel else None
    if entry is None:
        return
    hint = f"; {hint}" if hint else ""
    accepted = [entry] + ([entry["or"]] if "or" in entry and entry["or"] is not None else [])
    if not path.is_file():
        if "or" in entry and entry["or"] is None:     # killed before its first write finished: never existed
            return
        raise DataError(f"the file is missing (run.json's manifest lists it with {entry['size']} bytes){hint}",
                        path=path)
    try:
        actual = file_digest(path)
    except OSError as e:
        raise storage_error(e, path, "read") from None
    if any(actual["size"] == a["size"] and actual["sha256"] == a["sha256"] for a in accepted):
        return
    if all(actual["size"] != a["size"] for a in accepted):
        why = f"it has {actual['size']} bytes, run.json's manifest says {entry['size']}"
    else:
        why = "its sha256 differs from the one in run.json's manifest"
    raise DataError(f"the file changed after grukit wrote it ({why}): it is damaged or was edited{hint}",
                    path=path)


# ------------------------------------------------------------------ weights and checkpoints
def save_weights(state_dict: dict, path: str | Path, metadata: dict[str, str] | None = None,
                 run_dir: str | Path | None = None) -> Path:
    """Save a state_dict as safetensors (tensors made contiguous and unshared), atomically; recorded in the
    manifest of ``run_dir`` when given."""
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata=metadata)
    if run_dir is None:
        return atomic_write(path, data)
    record_files(run_dir, {Path(path): data})
    return Path(path)


def load_weights(path: str | Path) -> dict:
    """Load a safetensors state_dict (no pickle involved); anything else is refused with a DataError."""
    from safetensors.torch import load
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("the weight file is missing", path=path) from None
    except OSError as e:
        raise storage_error(e, path, "read") from None
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own SafetensorError (and others) on foreign bytes
        raise DataError(f"not a safetensors weight file ({type(e).__name__}: {e}); grukit never unpickles "
                        "weights, so a file of any other format is refused", path=path) from None


def verify_checkpoint(path: str | Path) -> None:
    """Check a checkpoint's zip structure and every member's CRC (``torch.load`` checks neither)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except FileNotFoundError:
        raise DataError("the checkpoint is missing", path=path) from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise DataError(f"the checkpoint is truncated or damaged (not a complete zip archive: {e})",
                        path=path) from None
    except OSError as e:
        raise storage_error(e, path, "read") from None
    if bad is not None:
        raise DataError(f"the checkpoint is damaged: its member {bad!r} fails its CRC check", path=path)


def safe_torch_load(path: str | Path):
    """``torch.load(weights_only=True)``: tensors and plain containers only; a pickle that would build or call
    anything else is refused with a :class:`DataError` and never executed."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, OSError) as e:
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
    """Load a Lightning checkpoint with ``torch.load(weights_only=True)`` after checking its zip CRCs; check it
    belongs to ``task``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    if _is_zip(path):
        verify_checkpoint(path)
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


def _is_zip(path: Path) -> bool:
    """True unless the file starts like a legacy (pre-zip) torch pickle, which safe_torch_load judges."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise storage_error(e, path, "read") from None
    return not head.startswith(b"\x80")


def checkpoint_bytes(checkpoint: dict) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


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
    """An opened run directory: its task, config and meta, and the trained model(s).

    Opening checks run.json, config.yaml and meta.json against the manifest; :meth:`models` checks the weight
    files. Any damage is a one-line :class:`DataError` naming the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.info = read_info(self.path)
        from .tasks import registry
        self.entry = registry.get(self.info["task"])
        config_file, meta_file = self.path / "config.yaml", self.path / "meta.json"
        verify_file(self.path, config_file, self.info)
        verify_file(self.path, meta_file, self.info)
        cfg = read_yaml(config_file, "run's configuration") or {}
        if not isinstance(cfg, dict):
            raise DataError("the run's configuration is damaged: expected a mapping of option names to values",
                            path=config_file)
        try:
            self.config = self.entry.config_class().from_dict(cfg, source=str(config_file))
        except ConfigError as e:
            raise DataError(f"the run's configuration is damaged: {' '.join(str(e).split())}",
                            path=config_file) from None
        self.meta = read_json(meta_file, "run's data state (meta.json)")
        if not isinstance(self.meta, dict):
            raise DataError("the run's data state is damaged: expected a JSON object", path=meta_file)

    @property
    def task(self) -> str:
        return self.info["task"]

    def module(self):
        return self.entry.load()

    def verify(self, path: str | Path, hint: str = "") -> None:
        """Check one file of this run against its manifest as it is now on disk (see :func:`verify_file`)."""
        self.info = read_info(self.path)
        verify_file(self.path, path, self.info, hint)

    def intact_checkpoint(self, name: str = "best.ckpt", member: int = 0) -> Path | None:
        """``checkpoints/[member-N/]name`` when it exists and matches the manifest and its CRCs, else None."""
        p = self.path / "checkpoints" / ("" if member == 0 else f"member-{member}") / name
        try:
            verify_file(self.path, p, read_info(self.path))
            verify_checkpoint(p)
        except (DataError, OSError):
            return None
        return p if p.is_file() else None

    def weight_files(self) -> list[Path]:
        files = sorted(self.path.glob("model*.safetensors"), key=lambda p: (len(p.name), p.name))
        listed = [self.path / r for r in self.info.get(MANIFEST, {}) if r.startswith("model")
                  and r.endswith(".safetensors")]
        for f in listed:
            if f not in files:
                self._verify_weights(f)                        # listed but deleted: says so
        if not files:
            raise ConfigError(f"{self.path} has no trained weights (model.safetensors); the run may have been "
                              f"interrupted: continue it with `grukit train {self.task} --out {self.path} "
                              "--resume`")
        return files

    def _verify_weights(self, weights: Path) -> None:
        """:meth:`verify`, with the way back (an intact checkpoint) worked out only when the check fails."""
        try:
            self.verify(weights)
        except DataError as e:
            raise DataError(f"{e}; {self._weights_hint(weights)}") from None

    def _weights_hint(self, weights: Path) -> str:
        member = 0 if weights.name == "model.safetensors" else int(weights.stem.split("-")[-1])
        best = self.intact_checkpoint("best.ckpt", member) or self.intact_checkpoint("last.ckpt", member)
        if best is None:
            return "retrain the run (no intact checkpoint is left to rebuild it from)"
        return (f"{best.relative_to(self.path)} is intact: `grukit train {self.task} --out {self.path} --resume` "
                "writes the weights again from it")

    def models(self) -> list:
        """The trained model(s), in eval mode (several for an ensemble)."""
        Task = self.module().Task
        out = []
        for f in self.weight_files():
            self._verify_weights(f)
            state = load_weights(f)
            member = 0 if f.stem == "model" else int(f.stem.rpartition("-")[2])   # model-3 is member 3
            try:
                m = Task(self.config, self.meta, member=member)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                if isinstance(e, (ConfigError, DataError)):
                    raise
                raise DataError(f"the run's data state does not fit a {self.task!r} model ({type(e).__name__}: "
                                f"{e}); it is damaged", path=self.path / "meta.json") from None
            try:
                m.load_state_dict(state)
            except RuntimeError as e:
                first = " ".join(str(e).split())[:300]
                raise DataError(f"the weights do not fit the model that config.yaml and meta.json describe "
                                f"({first}); was config.yaml edited after training?", path=f) from None
            out.append(m.eval())
        return out

    def update_meta(self, changes: dict) -> None:
        """Add ``changes`` to meta.json (written atomically, recorded in the manifest); nothing when empty."""
        if changes:
            self.meta.update(changes)
            record_files(self.path, {self.path / "meta.json": json_bytes(self.meta)})

    def update_info(self, **changes) -> None:
        self.info = update_info(self.path, **changes, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))

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
    """Write run.json, config.yaml and meta.json of a new run (resume keeps run.json and its manifest)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if not (path / RUN_FILE).is_file():
        write_json(path / RUN_FILE, {"grukit_version": __version__, "task": task, "status": "training",
                                     "created": now, "updated": now, "data": config.data, MANIFEST: {}})
    from .io import yaml_bytes
    record_files(path, {path / "config.yaml": yaml_bytes(config.to_dict()), path / "meta.json": json_bytes(meta)})
    return Run(path)
