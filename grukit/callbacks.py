"""Lightning callbacks that keep long trainings safe: stop on a non-finite loss, warn on exploding gradients,
and turn SIGINT/SIGTERM into "finish this step, write a checkpoint, stop".

``grukit.train.build_trainer`` adds all three to every run.
"""
from __future__ import annotations

import math
import signal
import threading
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from .errors import TrainingError

__all__ = ["NonFiniteGuard", "GradientWatch", "GracefulStop"]


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


class GracefulStop(Callback):
    """On SIGINT or SIGTERM: finish the current step, write ``last.ckpt``, stop; ``signal_received`` says which.

    A second SIGINT interrupts at once (the default handler). Handlers are installed only in the main thread
    and restored when training ends.
    """

    def __init__(self, ckpt_dir: Path):
        self.ckpt_dir = Path(ckpt_dir)
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
        trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")   # atomic through grukit's checkpoint IO

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()
