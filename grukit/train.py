"""fit(): train a registered task into a run directory with Lightning.

The Trainer gets a rich progress bar (TQDM when rich is missing), early stopping on the validation loss,
gradient clipping from the config, best/last checkpoints, a CSV metrics log and seeding. ``resume=True``
continues an interrupted run from ``checkpoints/last.ckpt`` through Lightning's ``ckpt_path``.

Checkpoints: ``last.ckpt`` is written at epoch ends, at most once per ``checkpoint_every`` seconds, and always at
the end (:class:`grukit.callbacks.LastCheckpoint`), independent of ``best.ckpt``. Both are written by
:class:`AtomicCheckpointIO` (temp file, fsync, rename, recorded in the run's manifest) and read with
``torch.load(weights_only=True)`` (we pass ``weights_only=True`` to ``Trainer.fit`` and the IO plugin
forces it). That works because everything grukit puts in a checkpoint is tensors or plain JSON-like values;
Lightning's own callback and loop states are too. After training, the best weights are exported to
``model.safetensors``, which is what ``grukit evaluate/predict`` load.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from .config import TaskConfig, load_config_file
from .errors import ConfigError, DataError
from .io import StorageError, atomic_write, storage_error
from .runs import Run, checkpoint_bytes, new_run_dir, record_files, save_weights, start_run

__all__ = ["fit", "build_trainer", "resolve_config", "torch_threads", "AtomicCheckpointIO"]


def resolve_config(task: str, config: TaskConfig | str | Path | dict | None = None, **overrides) -> TaskConfig:
    """The task's config from a dataclass, a config file or a dict, then ``overrides`` (None values ignored)."""
    from .tasks import registry
    cls = registry.get(task).config_class()
    if isinstance(config, TaskConfig):
        if not isinstance(config, cls):
            raise ConfigError(f"task {task!r} takes a {cls.__name__}, got a {type(config).__name__}")
        values = config.to_dict()
    elif isinstance(config, (str, Path)):
        values = load_config_file(config, task)
    else:
        values = dict(config or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls.from_dict(values, source=str(config) if isinstance(config, (str, Path)) else "options")


def _checkpoint_io(run_dir: Path | None = None):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class _Atomic(TorchCheckpointIO):
        """Lightning checkpoint IO with atomic writes (recorded in ``run_dir``'s manifest) and
        ``weights_only=True`` loads.

        ``best.ckpt`` is serialised when Lightning saves it but reaches the disk only at :meth:`flush`, which
        :class:`~grukit.callbacks.LastCheckpoint` calls just before it writes ``last.ckpt`` (and at the end of
        training): every ``last.ckpt`` on disk thus has the ``best.ckpt`` its callback state names, and a small
        model improving every epoch pays one write per ``checkpoint_every`` seconds instead of one per epoch."""

        def __init__(self):
            super().__init__()
            self.pending: dict[Path, bytes] = {}

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            data = checkpoint_bytes(checkpoint)
            if Path(path).name == "best.ckpt":
                self.pending[Path(path)] = data
                return
            self._write({Path(path): data})

        def _write(self, files: dict) -> None:
            if run_dir is None:
                for path, data in files.items():
                    atomic_write(path, data)
            else:
                record_files(run_dir, files, settle=False)          # one small write per file

        def flush(self) -> None:
            """Write the deferred ``best.ckpt`` (if any) now."""
            if self.pending:
                files, self.pending = self.pending, {}
                self._write(files)

        def load_checkpoint(self, path, map_location=None, weights_only=None):
            self.flush()
            from .runs import safe_torch_load
            return safe_torch_load(path)

        def remove_checkpoint(self, path) -> None:
            self.pending.pop(Path(path), None)
            super().remove_checkpoint(path)

    return _Atomic()


AtomicCheckpointIO = _checkpoint_io  # factory: AtomicCheckpointIO() returns the plugin instance


# ---- per-epoch overhead (bench/fit_overhead.py): step-level logging and progress refreshes are kept off the
# hot path; epoch-level values (what metrics.csv, early stopping and the loss plot use) are logged every epoch.
LOG_EVERY_N_STEPS = 50        # train_loss_step rows in metrics.csv every 50 steps instead of every step
BAR_REFRESH_BATCHES = 10      # the progress bar redraws every 10 batches and at each epoch end


def build_trainer(cfg: TaskConfig, run_dir: Path | None, monitor: str = "val_loss", ckpt_dir: Path | None = None,
                  extra_callbacks: list | None = None, log_version: str = ""):
    """A Lightning Trainer for ``cfg`` writing into ``run_dir``; ``run_dir=None`` (the scikit-learn
    estimators) keeps the same guards and early stopping but writes nothing: no checkpoints, no logs."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from .callbacks import (AtomicCSVLogger, BestCheckpoint, GracefulStop, GradientWatch, LastCheckpoint,
                            NonFiniteGuard, StartScore)
    files = run_dir is not None
    ckpt_dir = (ckpt_dir or run_dir / "checkpoints") if files else None
    callbacks = [NonFiniteGuard(ckpt_dir), GradientWatch(cfg.gradient_clip_val), GracefulStop(ckpt_dir)]
    if files:
        best = BestCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                              save_last=False, enable_version_counter=False)
        callbacks = [best, LastCheckpoint(ckpt_dir / "last.ckpt", cfg.checkpoint_every)] + callbacks
        if getattr(cfg, "validate_start", False):
            callbacks.append(StartScore())
    if getattr(cfg, "weight_average", "none") != "none":
        from .callbacks import weight_averaging
        callbacks.append(weight_averaging(cfg.weight_average))
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=cfg.patience))
    if cfg.progress:
        try:
            import rich  # noqa: F401

            from .callbacks import rich_progress_bar
            callbacks.append(rich_progress_bar(BAR_REFRESH_BATCHES))
        except (ImportError, ModuleNotFoundError):
            from lightning.pytorch.callbacks import TQDMProgressBar
            callbacks.append(TQDMProgressBar(refresh_rate=BAR_REFRESH_BATCHES))
    callbacks += extra_callbacks or []
    devices: Any = cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    limit = cfg.limit_train_batches
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision,
        gradient_clip_val=cfg.gradient_clip_val or None, deterministic=cfg.deterministic or None,
        callbacks=callbacks, logger=AtomicCSVLogger(run_dir, name="logs", version=log_version) if files else False,
        enable_progress_bar=cfg.progress, enable_model_summary=False, log_every_n_steps=LOG_EVERY_N_STEPS,
        limit_train_batches=int(limit) if limit > 1 else limit, plugins=[_checkpoint_io(run_dir)] if files else None,
        enable_checkpointing=files, num_sanity_val_steps=0)


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)`.*")
    warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")   # lm: no workers


RUN_DIR_ENV = "GRUKIT_RUN_DIR"


def process_rank() -> int:
    """This process's global rank under DDP (0 when not distributed).

    Lightning's subprocess launcher sets ``LOCAL_RANK``/``NODE_RANK`` for the processes it starts; torchrun and
    cluster schedulers set ``RANK`` (SLURM: ``SLURM_PROCID``).
    """
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def _rank_run_dir(out) -> Path:
    """The run directory of rank 0, seen from another rank (never created or written here)."""
    shared = os.environ.get(RUN_DIR_ENV)
    if shared:
        return Path(shared)
    if out is None:
        raise ConfigError("multi-process training started by torchrun or a scheduler needs --out DIR (the same "
                          "on every rank) so that all ranks agree on the run directory")
    return Path(out)


def fit(task: str, config: TaskConfig | str | Path | dict | None = None, *, out: str | Path | None = None,
        resume: bool = False, evaluate: bool = True, callbacks: list | None = None, after_fit: bool = True,
        **overrides) -> Run | None:
    """Train ``task`` and return its :class:`~grukit.runs.Run`.

    Args:
        task: a registered task name (``forecast``, ``classify``, ``autoencoder``...).
        config: a config dataclass, a YAML/TOML/JSON file, or a dict; ``overrides`` (config field names) win.
        out: the run directory (default ``runs/<task>``, numbered when taken). An existing run is never
            overwritten: pass ``resume=True`` to continue it from ``checkpoints/last.ckpt``.
        resume: continue the run in ``out`` with its recorded config; options given with it must be in the
            config's ``resumable`` list (``max_epochs``...) and are then applied and recorded, others refused.
        evaluate: evaluate on the held-out data after training and write ``metrics.json``.
        callbacks: extra Lightning callbacks for the Trainer (``grukit tune`` passes its pruning callback).
        after_fit: learn what the task learns from the trained members (forecast: interval calibration and the
            statistical combination's choice) now; ``grukit tune``'s trials pass False, and only the best run
            learns it (:func:`learn_after_fit`) before its one test score.

    Under DDP (``devices``/``num_nodes``/``strategy="ddp"``) every rank trains and only rank 0 writes the run
    directory and returns the Run; the other ranks return None.

    Example::

        run = grukit.train.fit("forecast", data="airline", horizon=24, max_epochs=50)
        run.evaluate()["grukit"]["MASE"]
    """
    from .tasks import registry

    entry = registry.get(task)
    previous = _resumed_run(task, out) if resume else None
    if previous is not None:
        cfg = resume_config(previous, config, **overrides)
    else:
        cfg = resolve_config(task, config, **overrides)
    if not cfg.data:
        raise ConfigError(f"no data: pass --data PATH or a built-in name (see `grukit datasets`) to "
                          f"`grukit train {task}`")
    with torch_threads(cfg.threads):
        return _train(task, entry, cfg, previous, out=out, resume=resume, evaluate=evaluate, callbacks=callbacks,
                      learn=after_fit)


def learn_after_fit(run: Run) -> None:
    """For a run trained with ``after_fit=False``: what the task learns from its trained members, learnt now
    from the run's recorded config (the same data and validation windows) and written to meta.json."""
    if not run.meta.get("after_fit_pending"):
        return
    module = run.module()
    with torch_threads(run.config.threads):
        changes = module.after_fit(run.config, module.prepare(run.config), run.models)
    run.update_meta({**changes, "after_fit_pending": False})


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch (intra-op) threads, then restore the count it had; ``n`` 0: unchanged.

    Training and evaluating grukit's models takes many small operations, each split over the threads: a
    thread that another process has pushed off its core holds up every one of them (on the 2-core machine,
    with one other busy process, a small classifier's step took 24x longer with 2 threads than with 1)."""
    import torch
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(task: str, entry, cfg: TaskConfig, previous: Run | None, *, out, resume: bool, evaluate: bool,
           callbacks: list | None, learn: bool = True) -> Run | None:
    """:func:`fit` once its configuration is resolved (and its thread count set)."""
    import lightning as L
    quiet_lightning()
    module = entry.load()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    prepared = module.prepare(cfg)                       # bad input fails here, before anything is written
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    first = _build_model(module, cfg, prepared.meta)     # so does a model that cannot be built
    rank = process_rank()
    members = int(getattr(cfg, "ensemble", 1))
    starts = {i: _resume_checkpoint(previous, task, i) for i in range(members)} \
        if previous is not None and rank == 0 else {}     # verified before anything is written
    if rank == 0:
        run_dir = new_run_dir(out, task, resume=resume)
        run = start_run(run_dir, task, cfg, prepared.meta)
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())  # DDP ranks that Lightning starts later inherit it
    else:                                                # only rank 0 writes the run directory
        run_dir, run = _rank_run_dir(out), None
    t0 = time.time()
    for i in range(members):
        weights = run_dir / ("model.safetensors" if i == 0 else f"model-{i}.safetensors")
        ckpt_dir = run_dir / "checkpoints" / ("" if i == 0 else f"member-{i}")
        if resume and weights.is_file() and not (ckpt_dir / "last.ckpt").is_file() \
                and not (ckpt_dir / "best.ckpt").is_file():
            continue                                     # finished, and its checkpoints were removed
        if i == 0:
            model = first
        else:
            L.seed_everything(cfg.seed + i, workers=True, verbose=False)
            model = module.Task(cfg, prepared.meta, member=i)
        log_version = "" if i == 0 else f"member-{i}"
        trainer = build_trainer(cfg, run_dir, monitor=model.monitor, ckpt_dir=ckpt_dir, log_version=log_version,
                                extra_callbacks=callbacks)
        ckpt_path = starts.get(i)
        if resume and rank != 0:
            ckpt_path = next((str(p) for p in (ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt") if p.is_file()), None)
        with _disk_errors(task, run_dir, ckpt_dir):
            trainer.fit(model, train_dataloaders=prepared.train, val_dataloaders=prepared.val,
                        ckpt_path=ckpt_path, weights_only=True)
            _raise_if_interrupted(trainer, run, task, run_dir)
            if process_rank() != 0:                      # training is done; rank 0 saves and evaluates
                continue
            from .callbacks import flush_deferred
            flush_deferred(trainer)                      # a best.ckpt still in memory reaches the disk
            best = ckpt_dir / "best.ckpt"
            averaged = cfg.weight_average != "none" and model.monitor == "train_loss"
            if best.is_file() and not averaged:     # with no validation, a weight average is kept as it ends
                from .runs import load_checkpoint
                run.verify(best)
                kept = load_checkpoint(best, task)
                model.load_state_dict(kept["state_dict"])
                if kept.get("global_step") == 0 and getattr(cfg, "validate_start", False):
                    warnings.warn(f"validate_start: no epoch validated better than the untrained model"
                                  f"{'' if i == 0 else f' (member {i})'}; the run keeps it", stacklevel=2)
            save_weights(model.state_dict(), weights, metadata={"task": task, "member": str(i)}, run_dir=run_dir)
    if process_rank() != 0:
        return None
    with _disk_errors(task, run_dir, run_dir / "checkpoints"):
        after_fit = getattr(module, "after_fit", None)   # state learnt from the whole trained ensemble
        if after_fit is not None and learn:
            run.update_meta(after_fit(cfg, prepared, run.models))   # loads the members only if it needs them
        elif after_fit is not None:
            run.update_meta({"after_fit_pending": True})              # learn_after_fit(run) completes it
        _collect_metrics(run_dir)
        run.update_info(status="trained", train_seconds=round(time.time() - t0, 1))
    if evaluate:
        run.evaluate()
    return run


# ------------------------------------------------------------------ resume, integrity, disk errors
def _resumed_run(task: str, out) -> Run | None:
    """The run ``--resume`` continues, opened (run.json, config.yaml and meta.json checked against the manifest)."""
    if out is None:
        raise ConfigError("--resume needs --out DIR naming the run to continue")
    from .runs import RUN_FILE
    if not (Path(out) / RUN_FILE).is_file():
        return None                                      # new_run_dir says it is not a run directory
    run = Run(out)
    if run.task != task:
        raise ConfigError(f"--resume: {out} is a {run.task!r} run, not {task!r}; continue it with "
                          f"`grukit train {run.task} --out {out} --resume`")
    return run


def resume_config(run: Run, config=None, **overrides) -> TaskConfig:
    """The config a resumed run trains with: its recorded one, with the options given now applied where they can
    be (``type(config).resumable``); any other changed option is refused with one line naming it."""
    recorded = run.config
    given = dict(load_config_file(config, run.task) if isinstance(config, (str, Path)) else
                 config.to_dict() if isinstance(config, TaskConfig) else (config or {}))
    given.update({k: v for k, v in overrides.items() if v is not None})
    cfg = type(recorded).from_dict({**recorded.to_dict(), **given}, source="options")
    changed = [f for f in recorded.field_names() if getattr(cfg, f) != getattr(recorded, f)]
    refused = [f for f in changed if f not in recorded.resumable]
    if refused:
        what = ", ".join(f"--{f.replace('_', '-')} ({_show(getattr(recorded, f))} -> {_show(getattr(cfg, f))})"
                         for f in refused)
        raise ConfigError(f"--resume continues {run.path} with the options it was trained with; {what} cannot "
                          f"change on resume (only {', '.join('--' + f.replace('_', '-') for f in recorded.resumable)}"
                          " can): drop them, or start a new run with another --out")
    return cfg


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else repr(v) if isinstance(v, str) else str(v)


def _build_model(module, cfg: TaskConfig, meta: dict):
    """The task's model, built before the run directory is written; a size torch cannot allocate is one line."""
    try:
        return module.Task(cfg, meta)
    except (RuntimeError, MemoryError, OverflowError) as e:
        if isinstance(e, ConfigError):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"cannot build the model with hidden_size={cfg.hidden_size}, num_layers="
                          f"{cfg.num_layers} ({type(e).__name__}: {first}); choose smaller sizes") from None


def _resume_checkpoint(run: Run, task: str, member: int) -> str | None:
    """The checkpoint a resume starts from, verified (zip CRCs and the manifest): ``last.ckpt``, or
    ``best.ckpt`` when ``last.ckpt`` was deleted; a damaged one is a one-line DataError with what to do."""
    from .runs import load_checkpoint, verify_checkpoint
    ckpt_dir = run.path / "checkpoints" / ("" if member == 0 else f"member-{member}")
    last, best = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    chosen = last if last.is_file() else best if best.is_file() else None
    if chosen is None:
        return None
    other = best if chosen == last else None
    intact = other is not None and run.intact_checkpoint(other.name, member) is not None
    hint = (f"{other} is intact: delete {chosen} and --resume continues from it" if intact else
            "no other intact checkpoint is left: start a new run with another --out")
    try:
        verify_checkpoint(chosen)
        run.verify(chosen, hint)
        load_checkpoint(chosen, task)                    # refuses planted code and foreign checkpoints now
    except DataError as e:
        if hint in str(e):
            raise
        raise DataError(f"{e}; {hint}") from None
    return str(chosen)


class _disk_errors:
    """Turn an OSError of the disk during training (full, read-only, quota) into one line that says what is kept
    and how to continue."""

    def __init__(self, task: str, run_dir: Path, ckpt_dir: Path):
        self.task, self.run_dir, self.ckpt_dir = task, run_dir, ckpt_dir

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or not isinstance(e, OSError):
            return False
        err = e if isinstance(e, StorageError) else storage_error(e, getattr(e, "filename", None) or self.run_dir)
        last = self.ckpt_dir / "last.ckpt"
        kept = ""
        if last.is_file():
            try:
                from .runs import load_checkpoint
                kept = f"; {last} (epoch {load_checkpoint(last)['epoch']}) is intact"
            except Exception:  # noqa: BLE001 - only the message depends on it
                kept = ""
        raise StorageError(f"{err}{kept}: free space (or make the disk writable) and continue with `grukit train "
                           f"{self.task} --out {self.run_dir} --resume`", err.errno) from None


def _raise_if_interrupted(trainer, run, task: str, run_dir: Path) -> None:
    """After a SIGINT/SIGTERM stop: record it and raise :class:`Interrupted` saying how to resume."""
    import signal

    from .callbacks import GracefulStop
    from .errors import Interrupted
    stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
    if stop is None or stop.signal_received is None:
        return
    name = signal.Signals(stop.signal_received).name
    if run is not None:
        run.update_info(status="interrupted")
    raise Interrupted(f"training stopped on {name} at epoch {trainer.current_epoch}, global step "
                      f"{trainer.global_step}; checkpoint written to {stop.ckpt_dir / 'last.ckpt'}; continue with "
                      f"`grukit train {task} --out {run_dir} --resume`",
                      exit_code=128 + int(stop.signal_received))


def _collect_metrics(run_dir: Path) -> None:
    """Copy logs/metrics.csv to metrics.csv and draw the loss curve."""
    src = run_dir / "logs" / "metrics.csv"
    if not src.is_file():
        return
    atomic_write(run_dir / "metrics.csv", src.read_bytes())
    try:
        from .plots import loss_curve
        loss_curve(run_dir / "metrics.csv", run_dir / "plots" / "loss.png")
    except Exception as e:  # a plot must never lose a trained model
        warnings.warn(f"could not draw the loss curve: {e}", stacklevel=2)


def remove_checkpoints(run_dir: Path) -> None:
    """Delete checkpoints/ once a run is finished and exported (optional; keeps the run small); their entries
    leave the manifest first, so the run's record never lists a file it does not have."""
    from .runs import MANIFEST, RUN_FILE, read_info, update_info
    if (Path(run_dir) / RUN_FILE).is_file():
        files = read_info(run_dir).get(MANIFEST, {})
        update_info(run_dir, **{MANIFEST: {k: v for k, v in files.items() if not k.startswith("checkpoints/")}})
    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
