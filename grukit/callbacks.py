"""Lightning callbacks that keep long trainings safe: stop on a non-finite loss, warn on exploding gradients,
turn SIGINT/SIGTERM into "finish this step, write a checkpoint, stop", write ``last.ckpt`` at epoch ends
(throttled), and a CSV metrics log that a kill never leaves unreadable.

``grukit.train.build_trainer`` adds all of them to every run.
"""
from __future__ import annotations

import csv
import io
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from .errors import TrainingError
from .io import atomic_write

__all__ = ["NonFiniteGuard", "GradientWatch", "GracefulStop", "LastCheckpoint", "BestCheckpoint",
           "StartScore", "AtomicCSVLogger"]


def _loss_of(outputs):
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    return outputs if isinstance(outputs, torch.Tensor) else None


class NonFiniteGuard(Callback):
    """Stop with a :class:`TrainingError` naming the epoch and batch when the training loss is NaN or inf.

    It raises before any checkpoint of the broken weights can be written, so ``checkpoints/last.ckpt`` stays
    the last good one.
    """

    def __init__(self, ckpt_dir: Path | None = None):
        self.ckpt_dir = ckpt_dir

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = _loss_of(outputs)
        if loss is None or bool(torch.isfinite(loss.detach()).all()):
            return
        kept = ""
        if self.ckpt_dir is not None and (self.ckpt_dir / "last.ckpt").is_file():
            kept = f"; the last good checkpoint is kept at {self.ckpt_dir / 'last.ckpt'}"
        raise TrainingError(
            f"the training loss became {float(loss.detach().reshape(-1)[0])} at epoch {trainer.current_epoch}, "
            f"batch {batch_idx} (global step {trainer.global_step}){kept}. Lower --lr, keep "
            "--gradient-clip-val on, or look for extreme or non-finite values in the data")


class GradientWatch(Callback):
    """Warn (once) when the gradient norm before clipping is non-finite or far above the clipping threshold."""

    def __init__(self, clip: float, factor: float = 100.0):
        self.clip, self.factor, self.warned = clip, factor, False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.warned:
            return
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))          # one fused (foreach) pass
        limit = self.factor * (self.clip if self.clip > 0 else 1.0)
        if math.isfinite(norm) and norm <= limit:
            return
        self.warned = True
        advice = (f"clipping at {self.clip:g} keeps the step bounded; if the loss diverges, lower --lr"
                  if self.clip > 0 else "turn on --gradient-clip-val (e.g. 1.0) or lower --lr")
        warnings.warn(f"exploding gradients: norm {norm:.3g} at global step {trainer.global_step}; {advice}",
                      RuntimeWarning, stacklevel=2)


def flush_deferred(trainer) -> None:
    """Write checkpoints grukit's checkpoint IO deferred (``best.ckpt``; see ``grukit.train``)."""
    flush = getattr(trainer.strategy.checkpoint_io, "flush", None)
    if flush is not None:
        flush()


class GracefulStop(Callback):
    """On SIGINT or SIGTERM: finish the current step, write ``last.ckpt``, stop; ``signal_received`` says which.

    A second SIGINT interrupts at once (the default handler). Handlers are installed only in the main thread
    and restored when training ends.
    """

    def __init__(self, ckpt_dir: Path | None):
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None      # None: stop without a checkpoint
        self.signal_received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.signal_received = signum
        if signum == signal.SIGINT:                      # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.signal_received is None or trainer.should_stop:
            return
        trainer.should_stop = True
        if self.ckpt_dir is not None:
            flush_deferred(trainer)
            trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")   # atomic through grukit's checkpoint IO

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` at the end of every epoch, at most once per ``every_seconds`` (0: every epoch), always at
    the end of training; independent of the best-model saves.

    It saves where Lightning's own ``save_last`` would (see :meth:`_at_epoch_end`), so a resume replays
    exactly. As a :class:`Checkpoint` it runs after the other
    callbacks (Lightning orders checkpoint callbacks last), so their state in the file is this epoch's.
    A graceful stop (:class:`GracefulStop`) writes its own mid-epoch checkpoint, which this one leaves alone.
    """

    def __init__(self, path: Path, every_seconds: float = 0.0):
        self.path = Path(path)
        self.every_seconds = float(every_seconds)
        self._last_time = -math.inf
        self._saved_step: int | None = None

    def _save(self, trainer, force: bool = False) -> None:
        if trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        if any(isinstance(c, GracefulStop) and c.signal_received is not None for c in trainer.callbacks):
            return                                       # the stop wrote its own checkpoint at its step
        now = time.monotonic()
        if not force and now - self._last_time < self.every_seconds:
            return
        flush_deferred(trainer)                          # the best.ckpt this file's callback state names
        trainer.save_checkpoint(self.path)               # atomic and recorded in the manifest (grukit's IO)
        self._last_time, self._saved_step = now, trainer.global_step

    @staticmethod
    def _at_epoch_end(trainer) -> bool:
        """Where Lightning's ModelCheckpoint saves: at the training-epoch end (after validation and early
        stopping) when validation runs once per epoch or never, else at the validation end."""
        if getattr(trainer, "_val_check_time_interval", None) is not None or trainer.check_val_every_n_epoch != 1:
            return False
        n = trainer.num_val_batches
        return (sum(n) if isinstance(n, list) else n) == 0 or trainer.val_check_interval == 1.0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._at_epoch_end(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        from lightning.pytorch.trainer.states import TrainerFn
        if trainer.state.fn == TrainerFn.FITTING and not self._at_epoch_end(trainer):
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        flush_deferred(trainer)
        self._save(trainer, force=True)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (``best.ckpt``) that keeps its best score when the run directory was moved,
    copied or named from another working directory before a resume.

    Lightning forgets the best score when the checkpoint's absolute ``dirpath`` differs from the current one,
    and the first epoch after the resume then overwrites ``best.ckpt`` however bad it is. Here the recorded
    paths are moved to the current directory instead. The state key stays ModelCheckpoint's, so checkpoints
    written with either class resume with either."""

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if isinstance(old, str) and self.dirpath and old != self.dirpath:
            def moved(p):
                if isinstance(p, str) and p and os.path.dirname(p) == old:
                    return os.path.join(self.dirpath, os.path.basename(p))
                return p
            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: moved(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path",
                                                                   "last_model_path") if k in state_dict},
                          "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
        super().load_state_dict(state_dict)


class StartScore(Callback):
    """Score the untrained model on the validation data before the first epoch (``validate_start``) and make it
    the one to beat: ``best.ckpt`` starts as the untrained model with that score, and early stopping counts
    epochs without improvement from it. When no epoch validates better, the run keeps the model it started
    with. That is worth it only where the untrained model is a forecast of its own (the forecaster's skip at
    its naive or exponential-smoothing start with ``head_init=baseline``): on a short, noisy series the
    training then has to beat that statistical forecast on the validation windows to be kept.

    Runs only on a fresh start (a resumed run has the start's score in its checkpoint state already); a task
    that carries its recurrent state across batches is scored from a zero state per batch."""

    @torch.no_grad()
    def validation_loss(self, trainer, pl_module) -> torch.Tensor | None:
        loaders = trainer.val_dataloaders
        if loaders is None:
            return None
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        total, count = torch.zeros((), dtype=torch.float64), 0
        was_training = pl_module.training
        pl_module.eval()
        try:
            for loader in loaders:
                for batch in loader:
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    inputs, target = pl_module.batch_to_inputs(batch)
                    outputs, _ = pl_module(inputs)
                    b = pl_module.batch_size_of(inputs)
                    total += float(pl_module.loss(outputs, target, inputs)) * b
                    count += b
        finally:
            pl_module.train(was_training)
        if count == 0:
            return None
        mean = (total / count).to(torch.float32).to(pl_module.device)
        return trainer.strategy.reduce(mean, reduce_op="mean")   # as the epoch's val_loss: averaged over ranks

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step != 0 or trainer.current_epoch != 0:
            return                                     # resumed: the checkpoint's state has the start's score
        if getattr(pl_module, "monitor", "val_loss") != "val_loss":
            return                                     # the loss is not what the run's best is chosen by
        loss = self.validation_loss(trainer, pl_module)
        if loss is None or not torch.isfinite(loss):
            return
        score = loss.detach().cpu()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.save_top_k == 1 and cb.dirpath:
                path = os.path.join(cb.dirpath, f"{cb.filename or 'best'}{cb.FILE_EXTENSION}")
                trainer.save_checkpoint(path, weights_only=False)
                cb.best_model_score, cb.best_model_path = score, path
                cb.kth_value, cb.kth_best_model_path = score, path
                cb.best_k_models = {path: score}
        from lightning.pytorch.callbacks import EarlyStopping
        for cb in trainer.callbacks:
            if isinstance(cb, EarlyStopping):
                cb.best_score = score.clone()
                cb.wait_count = 0


SWA_START = 0.5      # weight_average=swa: the average starts halfway through the planned optimiser steps
EMA_DECAY = 0.99     # weight_average=ema: the average's decay per step (a memory of about 100 steps)


def weight_averaging(kind: str) -> Callback:
    """Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` for ``weight_average`` ``swa`` or ``ema``.

    Lightning's callback swaps the average in for validation, writes it as the checkpoints' ``state_dict`` (the
    current weights beside it, so a resumed run continues both) and copies it into the model when training
    ends. Before its first update the average is a copy of the untrained model, so here it takes no part
    until it has averaged at least one step: ``swa`` updates from ``SWA_START`` of the planned steps on, and a
    run that stops earlier (early stopping, a time budget) keeps its own weights."""
    from lightning.pytorch.callbacks import WeightAveraging
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    class StepAverage(WeightAveraging):
        def __init__(self):
            super().__init__(**({"multi_avg_fn": get_ema_multi_avg_fn(EMA_DECAY)} if kind == "ema" else {}))
            self.start = 0

        def started(self) -> bool:
            return self._average_model is not None and int(self._average_model.n_averaged) > 0

        def on_train_start(self, trainer, pl_module) -> None:
            if kind == "swa":
                self.start = int(trainer.estimated_stepping_batches * SWA_START)

        def should_update(self, step_idx=None, epoch_idx=None) -> bool:
            return step_idx is not None and step_idx >= self.start

        def on_validation_epoch_start(self, trainer, pl_module) -> None:
            if self.started():
                super().on_validation_epoch_start(trainer, pl_module)

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if self.started():
                super().on_validation_epoch_end(trainer, pl_module)

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            if self.started():
                super().on_save_checkpoint(trainer, pl_module, checkpoint)

        def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            if "current_model_state" in checkpoint:      # else saved before the first update: nothing averaged
                super().on_load_checkpoint(trainer, pl_module, checkpoint)

        def on_train_end(self, trainer, pl_module) -> None:
            if self.started():
                super().on_train_end(trainer, pl_module)
    return StepAverage()


class _AtomicWriter(ExperimentWriter):
    """Lightning's CSV experiment writer that never leaves a broken file: the first save (and any save that brings
    a new column) rewrites the whole file atomically, keeping the rows of a run being resumed for the epochs
    before the resumed one; other saves append their rows as whole lines in one write, so a kill can cut at most
    the last line, which :func:`_readable_rows` drops. Each save costs its new rows, not the whole log."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        self._previous = _readable_rows(Path(self.metrics_file_path))
        self._rows: list[dict] = []
        self._kept: list[dict] | None = None
        self._written: list[str] | None = None          # the header of the file on disk, once this writer wrote it

    def _check_log_dir_exists(self) -> None:
        """Lightning warns that an existing log will be deleted; this writer keeps its readable rows."""

    def save(self) -> None:
        if not self.metrics:
            return
        if self._kept is None:                           # epochs of a resumed run replayed from here on
            first = min((_epoch(r) for r in self.metrics if _epoch(r) is not None), default=None)
            self._kept = [r for r in self._previous if first is None or (_epoch(r) is not None
                                                                          and _epoch(r) < first)]
        new, self.metrics = self.metrics, []
        self._rows += new
        if self._written is not None and set().union(*new) <= set(self._written):
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=self._written, lineterminator="\n").writerows(new)
            with open(self.metrics_file_path, "a", encoding="utf-8") as f:
                f.write(buf.getvalue())
            return
        rows = self._kept + self._rows
        keys = sorted(set().union(*rows))
        self.metrics_keys = keys
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics_file_path, buf.getvalue(), durable=False)   # per log call: no fsync
        self._written = keys


def _epoch(row: dict) -> float | None:
    try:
        return float(row.get("epoch"))
    except (TypeError, ValueError):
        return None


def _readable_rows(path: Path) -> list[dict]:
    """The complete rows of an existing metrics CSV; an empty, truncated or garbled file gives what is readable
    (nothing, with a warning, when even its header is not)."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        warnings.warn(f"{path}: unreadable metrics log ({e}); the epochs before the resume are not in it",
                      RuntimeWarning, stacklevel=2)
        return []
    if not rows or "epoch" not in rows[0]:
        if text.strip():
            warnings.warn(f"{path}: the metrics log has no epoch column; the epochs before the resume are not in it",
                          RuntimeWarning, stacklevel=2)
        return []
    return [r for r in rows if None not in r and None not in r.values()]    # a cut last line is dropped


class AtomicCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``metrics.csv`` atomically (see :class:`_AtomicWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicWriter(log_dir=self.log_dir)
        return self._experiment


def rich_progress_bar(refresh_rate: int):
    """Lightning's ``RichProgressBar`` (one line kept per epoch) without its ~70 ms wait per epoch.

    With ``leave=True`` Lightning stops and restarts the rich display at every epoch, and the stop joins the
    display's refresh thread, which sleeps 0.1 s between checks: measured with ``bench/fit_overhead.py``, 67 ms
    of every epoch of a small model went to that join (2.0 of 3.4 s for 30 epochs on airline). Here the stop
    tells the thread to end and does not wait for it: it wakes from its sleep, sees that, and exits without
    drawing again (the display is stopped under the same lock either way)."""
    from lightning.pytorch.callbacks import RichProgressBar

    class Bar(RichProgressBar):
        def _stop_progress(self) -> None:
            live = getattr(self.progress, "live", None)
            thread = getattr(live, "_refresh_thread", None)
            if thread is not None and hasattr(thread, "done"):
                live._refresh_thread = None
                thread.done.set()
            super()._stop_progress()

    return Bar(leave=True, refresh_rate=refresh_rate)
