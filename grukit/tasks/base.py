r"""SequenceTask: the one LightningModule every grukit task builds on.

It holds the only training / validation / test / predict step, THE optimiser builder (``configure_optimizers``),
THE time budget (``configure_callbacks``: ``max_minutes``), the metric logging, and below the class the one
inference loop :func:`infer` and the one writer of predictions :func:`write_predictions`. A task supplies small
hooks and never copies the loop::

    batch ──batch_to_inputs──> (inputs, target)
    inputs, state ──encode──> (seq (B, T, D*H), h_n (L*D, B, H))        # grukit.nn.GRU by default
    seq, h_n, inputs ──readout──> outputs                                # self.head(seq) by default
    outputs, target, inputs ──loss──> scalar
    outputs, target, inputs ──metric_inputs──> (preds, target) for self.val_metrics / self.test_metrics
    outputs, inputs ──decode──> predictions                              # predict_step's return value

Hooks (override what you need):

``build_encoder(input_size=None)``
    THE GRU-from-config builder: ``grukit.nn.GRU(input_size or meta["input_size"], ...)`` with every engine option
    of the config, batch_first. A task with a front end (embedding, convolutions) builds that first and calls
    ``super().build_encoder(its output size)``.
``build_head()``
    The output module (``grukit.tasks.heads``: regression, classification, tied LM, CTC; music's
    Bernoulli and NADE heads live in ``grukit.tasks.music``).
``build_metrics()``
    A ``torchmetrics.MetricCollection`` (or None). Cloned with ``val_``/``test_`` prefixes and logged per epoch.
``batch_to_inputs(batch)``
    Returns ``(inputs, target)``. The default expects the dict batches of :mod:`grukit.data.batching`:
    ``{"x": (B, T, F), "lengths": (B,), "y": ...}`` and returns ``(batch, batch["y"])``. Token tasks put
    integer ids in ``x`` and embed them in ``encode``.
``encode(inputs, state)``
    Runs the encoder; default passes ``inputs["lengths"]`` so padding never reaches the state.
``readout(seq, h_n, inputs)``
    Turns encoder output into task outputs (pooling for classification, a decoder for the autoencoder).
``loss(outputs, target, inputs)``
    A scalar tensor. ``inputs`` carries lengths, masks or CTC target lengths.
``metric_inputs(outputs, target, inputs)``
    ``(preds, target)`` for the metric collection; default ``(outputs, target)``.
``decode(outputs, inputs)``
    What ``predict_step`` returns (labels, de-scaled forecasts, scores, transcripts...).

Carrying state (truncated BPTT for language models): set the class attribute ``carry_state = True``. The
state returned by ``encode`` is then detached and fed to the next batch of the same stage; it restarts from
zeros at each epoch start and whenever the batch size changes. Override ``detach_state`` for non-tensor states.

Examples of plugging in: language modelling = embedding in ``encode``, ``heads.TiedLMHead``, cross-entropy
``loss``, ``carry_state = True``; music = ``music.BernoulliHead`` with ``BCEWithLogits`` loss summed over 88
keys; speech = ``heads.CTCHead`` and ``loss`` calling ``F.ctc_loss`` with ``inputs["lengths"]`` and
``inputs["target_lengths"]``, ``decode`` returning the posteriors that ``infer`` averages.

Checkpoints carry ``checkpoint["grukit"] = {"version", "task", "config", "meta"}`` (plain JSON values, so
``torch.load(weights_only=True)`` reads them); loading a checkpoint of another task raises ConfigError.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_write
from ..nn import GRU

__all__ = ["SequenceTask", "member_config", "infer", "combine", "write_predictions"]


def member_config(config, meta: dict[str, Any], member: int):
    """The config of ensemble member ``member``: the run's, with that member's entry of ``meta["member_configs"]``
    applied where there is one (an ensemble assembled from runs of different settings, such as the best trials
    of a ``grukit tune`` search: each entry holds the fields in which that member's setting differs)."""
    over = meta.get("member_configs") or []
    return config.replace(**over[member]) if member < len(over) and over[member] else config


class SequenceTask(L.LightningModule):
    """Base LightningModule; subclasses set ``task_name`` and override hooks (see the module docstring)."""

    task_name: ClassVar[str] = "sequence"
    carry_state: ClassVar[bool] = False
    ensemble_rule: ClassVar[str] = "mean"   # how infer() combines the members' decode() outputs: mean | median

    def __init__(self, config, meta: dict[str, Any], member: int = 0):
        super().__init__()
        self.config = member_config(config, meta, member)
        self.meta = dict(meta)
        self.member = member                # index in the run's ensemble (members may differ in architecture)
        if meta.get("ensemble_rule"):       # an assembled ensemble may say how its members combine
            self.ensemble_rule = meta["ensemble_rule"]
        self.encoder = self.build_encoder()
        self.head = self.build_head()
        metrics = self.build_metrics()
        self.val_metrics = metrics.clone(prefix="val_") if metrics is not None else None
        self.test_metrics = metrics.clone(prefix="test_") if metrics is not None else None
        self._states: dict[str, Any] = {}

    # ------------------------------------------------------------------ hooks: construction
    @property
    def encoder_size(self) -> int:
        """Features per time step of the encoder output (D*H)."""
        c = self.config
        return c.hidden_size * (2 if c.bidirectional else 1)

    def build_encoder(self, input_size: int | None = None) -> nn.Module:
        c = self.config
        size = int(self.meta["input_size"] if input_size is None else input_size)
        return GRU(size, c.hidden_size, c.num_layers, batch_first=True,
                   dropout=c.dropout if c.num_layers > 1 else 0.0, bidirectional=c.bidirectional,
                   reset_after=c.reset_after, layer_norm=c.layer_norm, recurrent_dropout=c.recurrent_dropout,
                   zoneout=c.zoneout, backend=c.backend, deterministic=c.deterministic)

    def build_head(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define build_head()")

    def build_metrics(self):
        return None

    # ------------------------------------------------------------------ hooks: computation
    def batch_to_inputs(self, batch) -> tuple[Any, Any]:
        return batch, batch.get("y")

    def encode(self, inputs, state=None) -> tuple[Tensor, Any]:
        return self.encoder(inputs["x"], state, lengths=inputs.get("lengths"))  # (B, T, D*H), (L*D, B, H)

    def readout(self, seq: Tensor, h_n: Any, inputs) -> Any:
        return self.head(seq)

    def loss(self, outputs, target, inputs) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def metric_inputs(self, outputs, target, inputs) -> tuple[Any, Any]:
        return outputs, target

    def decode(self, outputs, inputs) -> Any:
        return outputs

    def detach_state(self, state):
        if isinstance(state, Tensor):
            return state.detach()
        if isinstance(state, (tuple, list)):
            return type(state)(self.detach_state(s) for s in state)
        return state

    # ------------------------------------------------------------------ the one step
    def forward(self, inputs, state=None) -> tuple[Any, Any]:
        seq, h_n = self.encode(inputs, state)
        return self.readout(seq, h_n, inputs), h_n

    @staticmethod
    def batch_size_of(inputs) -> int:
        x = inputs.get("x") if isinstance(inputs, dict) else inputs
        return int(x.shape[0]) if isinstance(x, Tensor) else 1

    def _state_for(self, stage: str, batch_size: int):
        if not self.carry_state:
            return None
        state = self._states.get(stage)
        if isinstance(state, Tensor) and state.shape[-2] != batch_size:   # (L*D, B, H): batch size changed
            state = None
        return state

    def _step(self, batch, stage: str):
        inputs, target = self.batch_to_inputs(batch)
        B = self.batch_size_of(inputs)
        outputs, state = self(inputs, self._state_for(stage, B))
        if self.carry_state:
            self._states[stage] = self.detach_state(state)
        loss = self.loss(outputs, target, inputs)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=B,
                 sync_dist=not on_step)                 # epoch values averaged over DDP ranks
        metrics = {"val": self.val_metrics, "test": self.test_metrics}.get(stage)
        if metrics is not None:
            metrics.update(*self.metric_inputs(outputs.detach() if isinstance(outputs, Tensor) else outputs,
                                               target, inputs))
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=B)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        inputs, _ = self.batch_to_inputs(batch)
        outputs, state = self(inputs, self._state_for("predict", self.batch_size_of(inputs)))
        if self.carry_state:
            self._states["predict"] = self.detach_state(state)
        return self.decode(outputs, inputs)

    def on_train_epoch_start(self) -> None:
        self._states.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._states.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._states.pop("test", None)

    def on_predict_epoch_start(self) -> None:
        self._states.pop("predict", None)

    # ------------------------------------------------------------------ optimiser, time budget
    def configure_optimizers(self):
        """THE optimiser builder: AdamW (or SGD where the config has ``optimizer="sgd"``) with ``lr`` and
        ``weight_decay``; schedule ``plateau`` (factor ``lr_decay``, default 0.5; patience ``lr_patience``,
        default ``max(1, patience // 3)``), ``cosine`` over ``max_epochs``, or none."""
        c = self.config
        if getattr(c, "optimizer", "adam") == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        if c.lr_schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=getattr(c, "lr_decay", 0.5), patience=getattr(c, "lr_patience", max(1, c.patience // 3)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}
        if c.lr_schedule == "cosine" and getattr(c, "weight_average", "none") == "swa":
            from ..callbacks import SWA_START                 # the cosine until the average starts, then flat
            T, hold = max(1, c.max_epochs), int(max(1, c.max_epochs) * SWA_START)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, hold) / T)))
            return {"optimizer": opt, "lr_scheduler": sched}
        if c.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, c.max_epochs))
            return {"optimizer": opt, "lr_scheduler": sched}
        return opt

    def configure_callbacks(self):
        """THE time budget of every task: ``max_minutes`` > 0 stops training after the step that spends it
        (Lightning's Timer; its elapsed time is saved in checkpoints, so a resumed run keeps counting)."""
        minutes = float(getattr(self.config, "max_minutes", 0.0) or 0.0)
        if minutes > 0:
            from datetime import timedelta

            from lightning.pytorch.callbacks import Timer
            return [Timer(duration=timedelta(minutes=minutes), interval="step", verbose=False)]
        return []

    @property
    def monitor(self) -> str:
        """The metric early stopping, the LR schedule and the best checkpoint follow."""
        return "val_loss" if self.meta.get("has_val", True) else "train_loss"

    def on_fit_start(self) -> None:
        """Say so when there is no validation data: early stopping, the plateau schedule and the best
        checkpoint then follow the training loss (a stated choice, never a silent switch)."""
        c = self.config
        follows = [what for what, on in (("early stopping", c.patience > 0), ("the learning-rate schedule",
                                                                            c.lr_schedule == "plateau"))
                   if on]
        if self.monitor == "train_loss" and follows and self.trainer.is_global_zero:
            import warnings
            warnings.warn(f"no validation data (val_fraction={getattr(c, 'val_fraction', 0)}): "
                          f"{' and '.join(follows)} and the best checkpoint follow the TRAINING loss, which keeps "
                          "falling as the model overfits; give validation data (--val-fraction > 0 or --valid-data "
                          "where the task has it), or pass --patience 0 to train for all --max-epochs",
                          stacklevel=2)

    # ------------------------------------------------------------------ checkpoints
    def grukit_info(self) -> dict[str, Any]:
        return {"version": __version__, "task": self.task_name, "config": self.config.to_dict(),
                "meta": self.meta}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["grukit"] = self.grukit_info()
        checkpoint["grukit_rng"] = torch.get_rng_state()   # dropout/zoneout masks continue as uninterrupted

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        info = checkpoint.get("grukit")
        if info is None:
            raise ConfigError("the checkpoint has no 'grukit' entry (version, task, config); it was not written "
                              "by grukit")
        if info.get("task") != self.task_name:
            raise ConfigError(f"the checkpoint holds a {info.get('task')!r} model; it cannot be loaded into a "
                              f"{self.task_name!r} task")
        rng = checkpoint.get("grukit_rng")
        if isinstance(rng, Tensor) and rng.dtype == torch.uint8:
            torch.set_rng_state(rng)


# ====================================================================== the one inference loop
def combine(outputs: list, rule: str = "mean"):
    """Combine ensemble members' decoded outputs elementwise (``mean`` or ``median``), through dicts, lists
    and tuples; non-tensor leaves are taken from the first member."""
    first = outputs[0]
    if isinstance(first, Tensor):
        stacked = torch.stack(outputs)                                   # (M, ...) one row per member
        return stacked.median(0).values if rule == "median" else stacked.mean(0)
    if isinstance(first, dict):
        return {k: combine([o[k] for o in outputs], rule) for k in first}
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], (Tensor, dict, list, tuple)):
        return type(first)(combine([o[i] for o in outputs], rule) for i in range(len(first)))
    return first


def infer(models, batches, *, rule: str | None = None) -> list:
    """THE batched no-grad inference loop every task's evaluate / predict / serving path goes through.

    ``models`` is one :class:`SequenceTask` or a list of them (an ensemble); ``batches`` any iterable of the
    task's batches (what its loaders yield). Each batch runs through every member's ``predict_step`` (so
    ``batch_to_inputs`` / ``forward`` / ``decode`` are the ones training used) in eval mode without autograd,
    and the members' decoded outputs are combined with the task's ``ensemble_rule`` (or ``rule``). Returns one
    combined output per batch, in order.
    """
    members = [models] if isinstance(models, SequenceTask) else list(models)
    if not members:
        raise ConfigError("infer() needs at least one model")
    rule = rule or members[0].ensemble_rule
    if rule not in ("mean", "median"):
        raise ConfigError(f"ensemble rule {rule!r} is not one of: mean, median")
    was_training = [m.training for m in members]
    for m, t in zip(members, was_training):
        if t:                                            # train()/eval() walk every submodule: only when needed
            m.eval()
        m.on_predict_epoch_start()
    out = []
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                preds = [m.predict_step(batch, i) for m in members]
                out.append(preds[0] if len(preds) == 1 else combine(preds, rule))   # one member: as decoded
    finally:
        for m, t in zip(members, was_training):
            if t:
                m.train(True)
    return out


def write_predictions(frame, path):
    """THE writer of a task's ``predictions.csv`` (any CSV of predictions): a pandas frame written atomically
    without its index. Returns the path."""
    return atomic_write(path, frame.to_csv(index=False))
