"""The Lightning callback that connects a training run to an Optuna trial.

Pruning lives here, not in the training loop (the loop does not know about search): at each validation end
the callback reports the task's monitored validation metric to the trial and raises ``optuna.TrialPruned``
when the pruner says so. It follows ``PyTorchLightningPruningCallback`` of ``optuna-integration``, and also
remembers the best value seen, which is the trial's objective (the value of the best checkpoint).

With rolling-origin validation (several folds trained one after the other for one setting), fold ``j`` reports
its epoch ``e`` as step ``j * max_epochs + e`` and the value averaged with the earlier folds' best values
(``prior``), so the pruner compares every trial at the same fold and epoch on the quantity the objective
averages; a later fold's first ``warmup`` epochs are not pruned (a fresh model's first epochs say little).
"""
from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback

__all__ = ["TrialPruning"]


class TrialPruning(Callback):
    """Report ``monitor`` (default: the task's ``monitor``, e.g. ``val_loss``) each epoch; prune weak trials.
    ``step_offset`` and ``prior``: the fold's first step and the earlier folds' best values (see above);
    ``warmup``: epochs reported but never pruned (a later fold's first epochs, as the pruner's own warm-up spares
    the first fold's).

    Attributes after training: ``best`` (lowest finite value reported, ``inf`` if none), ``epochs`` (validation
    ends seen), ``pruned_at`` (the epoch it was pruned at, or None).
    """

    def __init__(self, trial, monitor: str | None = None, step_offset: int = 0, prior: list[float] = (),
                 warmup: int = 0):
        self.trial, self.monitor = trial, monitor
        self.step_offset, self.prior, self.warmup = step_offset, list(prior), warmup
        self.best, self.epochs, self.pruned_at = math.inf, 0, None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.monitor is None:
            self.monitor = getattr(pl_module, "monitor", "val_loss")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        import optuna
        v, epoch = float(value), trainer.current_epoch
        self.epochs += 1
        if math.isfinite(v):
            self.best = min(self.best, v)
        reported = (sum(self.prior) + v) / (len(self.prior) + 1)
        self.trial.report(reported, step=self.step_offset + epoch)
        if epoch >= self.warmup and self.trial.should_prune():
            self.pruned_at = epoch
            fold = f" of fold {len(self.prior)}" if self.prior else ""
            raise optuna.TrialPruned(f"pruned at epoch {epoch}{fold}: {self.monitor}={v:.4g}")
