"""Configuration dataclasses: the single home of every default.

One set of names everywhere: a field ``hidden_size`` is the CLI option ``--hidden-size``, the config-file key
``hidden_size`` (YAML, TOML or JSON; flat, or grouped in sections that are flattened) and the estimator
argument ``hidden_size=``. Each field carries its one-line help in ``metadata["help"]`` (that is the comment,
and the CLI shows it).

This module imports neither torch nor lightning, so the CLI can build its options quickly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError, collect, nearest

__all__ = ["TaskConfig", "ClassifyConfig", "AutoencoderConfig", "opt", "load_config_file",
           "read_config_mapping", "nearest", "choice", "coerce"]


def opt(default: Any, help: str) -> Any:  # noqa: A002 - "help" is the natural name here
    """A dataclass field with its help text (the per-field comment, shown by ``--help``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TaskConfig:
    """Options shared by every task: the GRU encoder, the optimiser and the Trainer."""

    # ---- data
    data: str = opt("", "data file (CSV, Parquet, .npz, .ts) or a built-in data set name (see `grukit datasets`)")
    # ---- model: grukit.nn.GRU arguments
    hidden_size: int = opt(64, "GRU units per layer and direction")
    num_layers: int = opt(1, "stacked GRU layers")
    dropout: float = opt(0.0, "dropout between stacked GRU layers (needs num_layers > 1)")
    bidirectional: bool = opt(False, "run a second GRU backwards in time (needs the whole sequence)")
    layer_norm: bool = opt(False, "layer normalisation inside the GRU gates")
    recurrent_dropout: float = opt(0.0, "variational dropout on the recurrent state")
    zoneout: float = opt(0.0, "probability that a unit keeps its previous value at a step (training)")
    reset_after: bool = opt(True, "reset gate after the recurrent matmul (torch/cuDNN); False = Cho et al.")
    backend: str = opt("auto", "GRU backend: auto or a name from grukit.nn.backends.available()")
    head_dropout: float = opt(0.0, "dropout on the features entering the output head")
    # ---- optimisation
    max_epochs: int = opt(50, "upper bound on training epochs (early stopping usually ends sooner)")
    max_minutes: float = opt(0.0, "wall-clock training budget in minutes: training stops after the step that "
                                  "spends it, keeps the best checkpoint and evaluates (0 = none)")
    batch_size: int = opt(32, "sequences or windows per batch")
    lr: float = opt(3e-3, "AdamW learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    lr_schedule: str = opt("plateau", "learning-rate schedule: none, plateau (halve when val loss stalls), cosine")
    weight_average: str = opt("none", "keep an average of the weights along training instead of the last ones: "
                                      "none, swa (the equal average of every step's weights over the second "
                                      "half of the planned steps, where a cosine learning rate then stays at "
                                      "its halfway value; stochastic weight averaging, Izmailov et al. 2018) "
                                      "or ema (an exponential moving average, decay 0.99 a step); "
                                      "validation and checkpoints see the average (Lightning's "
                                      "WeightAveraging)")
    gradient_clip_val: float = opt(1.0, "clip the gradient norm to this value (0 = off)")
    patience: int = opt(10, "early stopping: epochs without validation-loss improvement before stopping")
    val_fraction: float = opt(0.2, "fraction of the training data held out for validation / early stopping")
    validate_start: bool = opt(False, "score the untrained model on the validation data first and keep it "
                                      "unless an epoch validates better (worth it where the untrained model "
                                      "is a forecast of its own: forecast's head_init=baseline)")
    seed: int = opt(0, "random seed (Python, NumPy, torch, data-loader workers)")
    # ---- hardware and Trainer
    accelerator: str = opt("cpu", "Lightning accelerator: cpu, gpu, auto")
    devices: str = opt("auto", "devices to use (Lightning syntax: auto, 1, 2, '0,1')")
    num_nodes: int = opt(1, "machines for DDP")
    strategy: str = opt("auto", "Lightning strategy: auto, ddp, ...")
    precision: str = opt("32-true", "Lightning precision: 32-true, bf16-mixed, 16-mixed")
    num_workers: int = opt(0, "data-loader worker processes")
    threads: int = opt(1, "torch threads (intra-op) for training and evaluation; 0 = as the process has them "
                          "(torch's default: one per core). 1 by default: on the 2-core machine a small model "
                          "trained 1.4x faster with 2 threads while nothing else ran, and 24x slower while another "
                          "process held one core (README); raise it for large models on an idle machine")
    deterministic: bool = opt(False, "bit-reproducible kernels (slower)")
    progress: bool = opt(True, "show the rich progress bar")
    limit_train_batches: float = opt(1.0, "fraction (<=1) or number (>1) of training batches per epoch")
    checkpoint_every: float = opt(5.0, "seconds between writes of checkpoints/last.ckpt at epoch ends (0 = every "
                                       "epoch); it is always written at the end and on Ctrl-C")

    #: options that ``--resume`` applies (and records); any other option given with ``--resume`` is refused
    resumable = ("max_epochs", "max_minutes", "progress", "num_workers", "threads", "accelerator", "devices",
                 "num_nodes", "strategy", "deterministic", "limit_train_batches", "checkpoint_every")

    # ---- `grukit tune` search space: field -> [choices] | {low, high, log, step} | fixed value (a config
    # file's `tune:` section overrides it per field; see grukit.tune_space)
    # fields that change what the validation loss measures (its units or weighting): a search that varied one
    # would rank trials on different scales, so `grukit tune` refuses to search them (a fixed value is fine)
    loss_fields: ClassVar[tuple[str, ...]] = ()
    # fields that a search may fix only to make trials cheap (a `tune:` section's `ensemble: 1` or
    # `max_minutes: 6`): after the search the best setting is trained again with them at the configuration's
    # own values (refit/) and that run is scored on test; see ClassifyConfig for one fixed by default
    tune_refit: ClassVar[tuple[str, ...]] = ("ensemble", "max_minutes")
    tune_space: ClassVar[dict[str, Any]] = {
        "hidden_size": [16, 32, 64, 128],
        "num_layers": [1, 2],
        "dropout": {"low": 0.0, "high": 0.3},
        "lr": {"low": 3e-4, "high": 3e-2, "log": True},
        "batch_size": [16, 32, 64],
    }

    # ------------------------------------------------------------ conversion
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TaskConfig":
        """Build from a flat mapping, converting strings; unknown keys fail with the nearest valid name."""
        names = cls.field_names()
        hints = typing.get_type_hints(cls)
        problems, kw = [], {}
        for key, value in values.items():
            k = str(key).replace("-", "_")
            if k not in names:
                problems.append(f"{source}: unknown option {key!r}{nearest(k, names)}")
                continue
            try:
                kw[k] = coerce(value, hints[k])
            except (TypeError, ValueError) as e:
                problems.append(f"{source}: option {key!r}: {e}")
        collect(problems, ConfigError, source)
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def replace(self, **changes) -> "TaskConfig":
        merged = self.to_dict()
        merged.update(changes)
        return type(self).from_dict(merged)

    def problems(self) -> list[str]:
        """Every invalid value, as 'name=value: expectation' lines (subclasses extend)."""
        p = []
        for name in ("hidden_size", "num_layers", "max_epochs", "batch_size", "num_nodes"):
            if getattr(self, name) < 1:
                p.append(f"{name}={getattr(self, name)}: expected an integer >= 1")
        for name in ("dropout", "recurrent_dropout", "zoneout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                p.append(f"{name}={getattr(self, name)}: expected a probability in [0, 1)")
        p += self._non_finite()
        if math.isfinite(self.lr) and self.lr <= 0:
            p.append(f"lr={self.lr}: expected a positive learning rate")
        if not 0.0 <= self.val_fraction < 1.0:
            p.append(f"val_fraction={self.val_fraction}: expected a fraction in [0, 1)")
        if self.lr_schedule not in ("none", "plateau", "cosine"):
            p.append(f"lr_schedule={self.lr_schedule!r}: expected none, plateau or cosine"
                     f"{nearest(self.lr_schedule, ['none', 'plateau', 'cosine'])}")
        if self.weight_average not in ("none", "swa", "ema"):
            p.append(f"weight_average={self.weight_average!r}: expected none, swa or ema"
                     f"{nearest(self.weight_average, ['none', 'swa', 'ema'])}")
        if self.patience < 0 or self.gradient_clip_val < 0:
            p.append("patience and gradient_clip_val must be >= 0")
        if self.checkpoint_every < 0:
            p.append(f"checkpoint_every={self.checkpoint_every}: expected seconds >= 0 (0 = every epoch)")
        if self.max_minutes < 0:
            p.append(f"max_minutes={self.max_minutes}: expected minutes >= 0 (0 = no budget)")
        if self.threads < 0:
            p.append(f"threads={self.threads}: expected an integer >= 1, or 0 for the process's own count")
        p += self._memory_problems()
        return p

    def _non_finite(self) -> list[str]:
        """Every float option (and float list) that is NaN or infinite."""
        hints = typing.get_type_hints(type(self))
        p = []
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints.get(f.name)
            values = value if typing.get_origin(hint) is tuple else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                p.append(f"{f.name}={value}: expected a finite number")
        return p

    def _memory_problems(self) -> list[str]:
        """A GRU whose parameters (with gradients and two AdamW moments) would not fit in this machine's memory
        is refused before anything is written, with the estimate."""
        if min(self.hidden_size, self.num_layers) < 1:
            return []
        params = gru_parameters(self.hidden_size, self.num_layers, self.bidirectional)
        need = 16 * params                                   # float32 weights, gradients, exp_avg, exp_avg_sq
        total = physical_memory()
        if total is None or need <= total:
            return []
        return [f"hidden_size={self.hidden_size}, num_layers={self.num_layers}: the GRU alone would have "
                f"{params:.3g} parameters, {need / 2 ** 30:.3g} GiB with gradients and optimiser state; this "
                f"machine has {total / 2 ** 30:.0f} GiB of memory"]

    def validate(self) -> None:
        collect(self.problems(), ConfigError, "the configuration")


def choice(p: list[str], name: str, value: str, choices: list[str]) -> None:
    """Append to ``p`` a problem (with the nearest valid name) when ``value`` is not one of ``choices``."""
    if value not in choices:
        p.append(f"{name}={value!r}: expected one of {', '.join(choices)}{nearest(value, choices)}")


@dataclass
class ClassifyConfig(TaskConfig):
    """Whole-sequence classification of variable-length multivariate sequences (GRU-FCN by default)."""

    id_col: str = opt("id", "long-format CSV: sequence-id column")
    time_col: str = opt("time", "long-format CSV: time/order column within a sequence")
    label_col: str = opt("label", "long-format CSV: label column")
    test_data: str = opt("", "held-out test file in the training file's format (built-in sets use their "
                             "official test split)")
    # ---- inputs
    normalize: str = opt("auto", "input scaling: series (z-normalise each series per feature: recordings "
                                 "differ in offset and gain), feature (training-set mean/std per feature: "
                                 "keeps amplitudes, which carry meaning in sensor channels), none; auto = "
                                 "series for one feature, feature for several")
    series_stats: bool = opt(True, "with per-series normalisation (normalize series, or auto on one feature): "
                                   "each series' own mean and log standard deviation, the level and scale "
                                   "that normalisation removes, join the features the classifier head reads, "
                                   "standardised over the training series; a statistic that does not vary "
                                   "there (a z-normalised archive) is left out, so such sets train as "
                                   "without (PigCVP 0.889 -> 0.933, PickupGestureWiimoteZ 0.80 -> 0.88 with "
                                   "5 models, see README)")
    mean_series: str = opt("auto", "subtract the training series' mean (step by step, on each series' "
                                   "z-normalised values) from every series before the rest of the input "
                                   "pipeline, so the model reads how a series departs from the typical one: "
                                   "on, off, or auto = on where the training series have one feature and one "
                                   "length and depart from their mean by under 5% of their size (spectra "
                                   "such as OliveOil, Wine, Meat, where the shapes are nearly identical and "
                                   "most members did not fit their training series: Wine 0.57 -> 0.69, "
                                   "OliveOil 0.70 -> 0.77 with 5 models, Meat 0.95 -> 0.93, see README); "
                                   "series_stats then describe the departure; a series to classify needs the "
                                   "training length")
    length_stat: bool = opt(False, "each series' log length joins the features the head reads (read from the "
                                   "lengths input, so streams have it; left out where all lengths are equal); "
                                   "off by default: it lost 0.046 on spoken digits of an unseen speaker, "
                                   "whose speaking rate differs, and gained 0-0.02 elsewhere, see README")
    value_quantiles: int = opt(0, "the distribution of each series' values joins the features the head "
                                  "reads: this many evenly spaced quantiles (0% to 100%) of every "
                                  "normalised feature and of its first difference, standardised over the "
                                  "training series (order-free: appliance load profiles differ in how long "
                                  "they spend at each level); 0 = off, the default: 11 raised ACSF1 "
                                  "0.85 -> 0.87-0.88 with 5 models but lowered ArrowHead 0.874 -> 0.70-0.83 "
                                  "however it was regularised, see README; grukit tune searches it")
    quantile_dropout: float = opt(0.5, "value_quantiles in training: each series' quantiles are withheld "
                                       "from the head with this probability (the rest scaled by 1/(1-p)), "
                                       "so the convolutional features learn to classify alone too")
    augment: tuple[str, ...] = opt((), "training-time augmentations, comma separated: jitter, scaling, "
                                       "window_slice, window_warp (off by default: window_slice,window_warp "
                                       "left the 5-model accuracy unchanged on ArrowHead/ItalyPowerDemand, "
                                       "jitter,scaling one model on five sets; see README)")
    mixup: float = opt(0.0, "mixup (Zhang et al. 2018) in training: each batch's series and their targets "
                            "are mixed in pairs with a weight drawn from Beta(mixup, mixup) (0.2-0.4 in the "
                            "paper); 0 = off, the default: 0.2 lowered the 5-model mean on the five hardest "
                            "suite sets with both seed sets (ACSF1 -0.02/-0.07), 0.4 more, see README")
    dba_augment: int = opt(0, "synthetic training series per real one by weighted DTW barycentre averaging "
                              "of its class (Forestier et al. 2017, Ismail Fawaz et al. 2018: 1 doubles a "
                              "small training set); made once before training; 0 = off, the default: 1 "
                              "lowered PigCVP, ACSF1 and OSULeaf with 5 models and cost up to 2x the CPU, "
                              "see README; classes whose series differ in length get none")
    # ---- model: GRU branch + fully convolutional branch (GRU-FCN, Elsayed et al. 2018)
    conv_channels: int = opt(32, "convolutional branch beside the GRU (fcn: kernels 8/5/3, channels C/2C/C, "
                                 "as in LSTM-FCN/GRU-FCN; inception: C channels out; see conv_branch); "
                                 "0 = GRU only")
    conv_steps: str = opt("256", "series longer than this are shortened to at most this many steps before "
                                 "both branches, in windows of s steps (cost grows with length; 0 = never); a "
                                 "comma-separated list is cycled through by ensemble members (512, for every "
                                 "member or some: OSULeaf gained, PickupGestureWiimoteZ and PigCVP lost, "
                                 "see README)")
    downsample: str = opt("mixed", "how those windows are shortened: mixed (the convolutional branch reads "
                                   "window means, the GRU branch the folded windows: smooth shape and fine "
                                   "detail side by side), fold (the s steps of a window become s*F features "
                                   "for both branches: lossless, no parameters), conv (a learned linear "
                                   "strided convolution to conv_channels features), mean (the window average "
                                   "for both: loses detail faster than s steps; measured in the README); "
                                   "a comma-separated list is cycled through by ensemble members")
    window_phase: str = opt("random", "series shortened in windows of s steps (see conv_steps): random (in "
                                      "training, each series starts 0 to s-1 steps later, drawn per series "
                                      "and batch, wherever the windows are read step by step: the folded "
                                      "windows of downsample fold and of mixed's GRU branch, or the conv "
                                      "stem; window means keep phase 0): a folded window otherwise ties each "
                                      "feature to one position in the window, which a set of 2 series per "
                                      "class overfits (PigCVP +0.03-0.05 with 5 models, see README); fixed "
                                      "(the windows start at the first step, the previous default); no "
                                      "effect at test or on series of at most conv_steps steps")
    conv_dilation: int = opt(1, "dilation growth of the convolutional branch: block i is dilated by d**i "
                                "(2: dilations 1, 2, 4, a receptive field of 24 steps instead of 14 at the "
                                "same cost; 1 = the FCN as published, the default: 2 raised single models but "
                                "lowered the 5-model suite mean, see README)")
    conv_branch: str = opt("inception,fcn,resnet", "convolutional branch: fcn (kernels 8/5/3 as in GRU-FCN), "
                           "inception (InceptionTime modules, Fawaz et al. 2020: a 1x1 bottleneck, parallel "
                           "kernels of 39/19/9 steps and a max-pool path with conv_channels/4 filters each, so "
                           "conv_channels channels out as for fcn; a residual shortcut every 3 modules), resnet "
                           "(the residual network of Wang et al. 2017: 3 residual blocks of kernels 8/5/3 with "
                           "conv_channels/2, conv_channels, conv_channels channels), or a comma-separated list "
                           "that ensemble members cycle through; the default inception,fcn,resnet gives the 5 "
                           "members inception, fcn, resnet, inception, fcn (one model is inception): families "
                           "that err differently average better than any one alone, see README; alternate = "
                           "inception,fcn (the previous default)")
    conv_depth: int = opt(3, "inception branches (conv_branch inception, alternate): number of inception "
                             "modules (InceptionTime has 6; 6 cost 2x and did not help one model, see README)")
    conv_pool: str = opt("mean", "summary of the convolutional branch over the valid steps: mean (global "
                                 "average pooling, as published), mean_max (the mean beside the maximum; "
                                 "lowered single models on the five hardest suite sets, see README), ppv "
                                 "(ROCKET's proportion of positive values made differentiable: the mean of "
                                 "sigmoid(z) of the last layer's pre-activation z; lost 0.03-0.13 on four of "
                                 "those sets) or mean_ppv (both: within the seed spread, see README)")
    first_difference: str = opt("off,on", "append each feature's first difference (the derivative, scaled "
                                          "to unit RMS per series) as extra input features, as MultiRocket "
                                          "and DrCIF do: off, on, or a comma-separated list of off/on that "
                                          "ensemble members cycle through; the default off,on gives it to the "
                                          "2nd and 4th member (one model has none): on for every member lost "
                                          "on PickupGestureWiimoteZ, see README")
    gru_steps: int = opt(64, "the GRU reads non-overlapping patches (a strided convolution) so that it runs "
                             "over at most this many steps (0 = every step)")
    pooling: str = opt("mean", "GRU summary fed to the classifier: mean (over valid steps; robust), last "
                               "(final state), attention")
    hidden_size: int = opt(32, "GRU units per direction (the convolutional branch carries most of the work)")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing (0.1: single models on the five hardest "
                                      "suite sets gained 0.02-0.09 each, see README)")
    # ---- training schedule
    schedule: str = opt("auto", "auto: from the training-set size N (fewer than 500 series: no validation "
                                "split, train on all series for a fixed budget and keep the lowest training "
                                "loss, as InceptionTime does; 500 or more: a stratified val_fraction split "
                                "with early stopping); validated: as auto but always with the validation "
                                "split and early stopping, one model unless --ensemble says otherwise (what "
                                "grukit tune runs: a search needs a validation score); manual: use "
                                "max_epochs, patience, val_fraction as given")
    train_steps: int = opt(1000, "schedule=auto: optimiser steps to train for (epochs = train_steps / batches "
                                 "per epoch, at most max_epochs), so small sets get enough updates; sets of "
                                 "many classes get more (train_class_samples)")
    train_passes: int = opt(100, "schedule=auto: sets of many classes that 1,000 steps pass over fewer than "
                                 "this many times train longer: for train_class_samples series drawn per "
                                 "class, but at most this many passes over the training series (0 = "
                                 "train_steps alone)")
    train_class_samples: int = opt(2000, "schedule=auto: ... series drawn per class (steps = the larger of "
                                         "train_steps and min(train_passes * series, train_class_samples * "
                                         "classes) / batch_size): 1,000 steps drew 430 series a class and 41 "
                                         "passes on Adiac (390 series, 37 classes): 0.70, 2,450 steps 0.79; "
                                         "FiftyWords 0.69 -> 0.76, WordSynonyms 0.65 -> 0.70; "
                                         "sets of 100 series or fewer keep 1,000 steps (ACSF1 lost 0.07 with "
                                         "1,250) and so do sets of few classes (6-class phalanx sets lost "
                                         "0.02-0.07 with 200 passes); see README (0 = train_steps alone)")
    ensemble: int = opt(0, "models trained with different seeds whose probabilities are averaged; 0 = auto: "
                           "5 below 300 training series (variance dominates there), else 3 (PLAID, 537 "
                           "series: 0.82 -> 0.85-0.87, see README)")
    batch_size: int = opt(16, "sequences per batch (16 as in FCN; smaller batches regularise small sets)")
    max_epochs: int = opt(1000, "upper bound on training epochs (schedule=auto picks fewer)")
    patience: int = opt(30, "early stopping patience in epochs when there is a validation split")
    lr_schedule: str = opt("cosine", "learning-rate schedule: cosine over max_epochs (a fixed budget needs no "
                                     "validation data), plateau, none")
    baselines: tuple[str, ...] = opt(("minirocket", "dtw"), "baselines scored by evaluate on the same split, "
                                                            "beside the majority class: minirocket (aeon "
                                                            "MiniRocket), dtw (1-NN DTW); empty = none")

    def __post_init__(self):
        if isinstance(self.normalize, bool) or str(self.normalize).lower() in ("true", "false"):
            self.normalize = "feature" if str(self.normalize).lower() == "true" else "none"  # older runs

    loss_fields: ClassVar[tuple[str, ...]] = ("label_smoothing",)
    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune classify` search space
        # the convolutional branch carries most of the work, so its width and inputs are searched beside the
        # GRU's; the member families (conv_branch) are not: a trial trains one model, the first member, and
        # the refit's ensemble cycles through the families whatever the first is
        "conv_channels": [16, 32, 64],
        "first_difference": ["off,on", "on"],
        "value_quantiles": [0, 11],            # helps where the value distribution carries the class (ACSF1)
        "hidden_size": [16, 32, 64],
        "bidirectional": [False, True],
        "pooling": ["mean", "attention", "last"],
        "head_dropout": {"low": 0.0, "high": 0.3},
        "lr": {"low": 3e-4, "high": 1e-2, "log": True},
        "batch_size": [8, 16, 32],
        "schedule": "validated",               # fixed: every trial needs a validation split to be scored on
    }
    # fields a search fixes only so that trials can be scored (above: schedule=validated, one model with a
    # validation split); after the search the best setting is trained again with them at the starting
    # configuration's values (default: the ensemble on all training series) and that model is scored on test
    tune_refit: ClassVar[tuple[str, ...]] = ("schedule", "ensemble", "max_minutes")

    def problems(self) -> list[str]:
        p = super().problems()
        choice(p, "pooling", self.pooling, ["last", "mean", "attention"])
        choice(p, "normalize", self.normalize, ["auto", "series", "feature", "none"])
        choice(p, "mean_series", self.mean_series, ["auto", "on", "off"])
        choice(p, "schedule", self.schedule, ["auto", "validated", "manual"])
        for d in str(self.downsample).split(","):
            choice(p, "downsample", d.strip(), ["conv", "fold", "mean", "mixed"])
        for b in str(self.conv_branch).split(","):
            choice(p, "conv_branch", b.strip(), ["fcn", "inception", "resnet", "alternate"])
        for d in str(self.first_difference).split(","):
            choice(p, "first_difference", d.strip(), ["off", "on"])
        choice(p, "conv_pool", self.conv_pool, ["mean", "mean_max", "ppv", "mean_ppv"])
        choice(p, "window_phase", self.window_phase, ["fixed", "random"])
        for a in self.augment:
            choice(p, "augment", a, ["jitter", "scaling", "window_slice", "window_warp"])
        for b in self.baselines:
            choice(p, "baselines", b, ["minirocket", "dtw"])
        if not (self.mixup >= 0 and math.isfinite(self.mixup)):
            p.append(f"mixup={self.mixup}: expected a Beta parameter > 0 (0.2 or 0.4), or 0 for off")
        if self.value_quantiles < 0 or self.value_quantiles == 1:
            p.append(f"value_quantiles={self.value_quantiles}: expected 0 (off) or an integer >= 2 (the "
                     "minimum and maximum at least)")
        if not 0 <= self.quantile_dropout < 1:
            p.append(f"quantile_dropout={self.quantile_dropout}: expected a probability in [0, 1)")
        if self.dba_augment < 0:
            p.append(f"dba_augment={self.dba_augment}: expected an integer >= 0 (0 = off)")
        if not 0 <= self.label_smoothing < 1:
            p.append(f"label_smoothing={self.label_smoothing}: expected a value in [0, 1)")
        if self.ensemble < 0:
            p.append(f"ensemble={self.ensemble}: expected an integer >= 1, or 0 for auto")
        if self.conv_depth < 1:
            p.append(f"conv_depth={self.conv_depth}: expected an integer >= 1")
        if self.conv_dilation < 1:
            p.append(f"conv_dilation={self.conv_dilation}: expected an integer >= 1")
        for name in ("conv_channels", "gru_steps"):
            if getattr(self, name) < 0:
                p.append(f"{name}={getattr(self, name)}: expected an integer >= 0")
        for v in str(self.conv_steps).split(","):
            if not v.strip().isdigit():
                p.append(f"conv_steps={self.conv_steps}: expected an integer >= 0 or a comma-separated list "
                         "of them")
                break
        if self.train_steps < 1:
            p.append(f"train_steps={self.train_steps}: expected an integer >= 1")
        for name in ("train_passes", "train_class_samples"):
            if getattr(self, name) < 0:
                p.append(f"{name}={getattr(self, name)}: expected an integer >= 0")
        return p


@dataclass
class AutoencoderConfig(TaskConfig):
    """Unsupervised anomaly detection from the reconstruction error of a GRU seq2seq autoencoder."""

    columns: tuple[str, ...] = opt((), "value columns (empty: every numeric column except time and label)")
    time_col: str = opt("", "time column (optional, used for plots)")
    label_col: str = opt("", "0/1 anomaly label column (optional; enables precision/recall/F1/ROC-AUC)")
    train_fraction: float = opt(0.5, "leading fraction of the series used for training (assumed mostly "
                                     "normal); built-in sets use their own train part")
    window: int = opt(64, "window length the autoencoder reconstructs")
    stride: int = opt(4, "step between training windows")
    latent_size: int = opt(32, "size of the bottleneck between encoder and decoder")
    threshold: str = opt("percentile", "how to set the anomaly threshold: percentile (of training scores) "
                                       "or f1 (best F1 on the labelled --valid-data file)")
    percentile: float = opt(99.9, "percentile of the training scores used as threshold (100 = the largest "
                                  "score seen on normal training data)")
    valid_data: str = opt("", "labelled validation series (same columns) for threshold=f1; the test labels "
                              "are never used to choose the threshold")
    smooth: int = opt(0, "moving-average width applied to per-step scores (0 = window // 16)")
    max_epochs: int = opt(40, "upper bound on training epochs")
    patience: int = opt(8, "early stopping patience in epochs")

    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune autoencoder` search space
        "hidden_size": [16, 32, 64, 128],
        "latent_size": [8, 16, 32, 64],
        "num_layers": [1, 2],
        "lr": {"low": 3e-4, "high": 1e-2, "log": True},
        "batch_size": [16, 32, 64],
    }

    def problems(self) -> list[str]:
        p = super().problems()
        choice(p, "threshold", self.threshold, ["percentile", "f1"])
        if self.window < 2 or self.stride < 1 or self.latent_size < 1:
            p.append(f"window={self.window}, stride={self.stride}, latent_size={self.latent_size}: expected "
                     "window >= 2, stride >= 1, latent_size >= 1")
        if self.threshold == "f1" and not self.valid_data:
            p.append("threshold=f1 needs --valid-data: a labelled validation series to choose the threshold on")
        if not 0 < self.percentile <= 100:
            p.append(f"percentile={self.percentile}: expected a value in (0, 100]")
        if not 0 < self.train_fraction < 1:
            p.append(f"train_fraction={self.train_fraction}: expected a fraction in (0, 1)")
        return p


# ---------------------------------------------------------------- size estimates
def gru_parameters(hidden_size: int, num_layers: int = 1, bidirectional: bool = False, input_size: int = 1) -> int:
    """Parameters of a GRU: per layer and direction 3H(I + H) weights and 6H biases (I = H * D above layer 1);
    a lower bound for the whole model (heads and embeddings come on top)."""
    d, h, layers = (2 if bidirectional else 1), int(hidden_size), int(num_layers)
    first = d * (3 * h * (int(input_size) + h) + 6 * h)
    return first + (layers - 1) * d * (3 * h * (h * d + h) + 6 * h)


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------- conversion helpers
def coerce(value: Any, hint: Any) -> Any:
    """Convert a CLI/file value to the field's type (comma-separated strings become tuples)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(v, item) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        return "" if value is None else str(value)
    return value


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML, TOML or JSON config file, as written (sections not flattened); every
    problem (missing, not UTF-8, unknown format, unparsable, not a mapping) is one ``ConfigError`` line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p}, line {line}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); "
                          "save the config file as UTF-8") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml
            raw = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            import tomllib
            raw = tomllib.loads(text)
        elif p.suffix == ".json":
            raw = json.loads(text)
        else:
            raise ConfigError(f"{p}: unknown config format {p.suffix!r}; expected .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as e:  # parse errors of the three formats
        raise ConfigError(f"{p}: cannot parse: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of option names to values at the top level")
    return raw


def load_config_file(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a flat dict.

    Sections are flattened: ``{model: {hidden_size: 64}, train: {lr: 0.01}}`` reads as
    ``{hidden_size: 64, lr: 0.01}``; a section named after another task is skipped.
    """
    raw = read_config_mapping(path)
    from .tasks.registry import names as task_names
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "tune":                                  # the search space of `grukit tune` (grukit.tune_space)
            continue
        if isinstance(v, dict):
            if k in task_names() and task is not None and k != task:
                continue
            flat.update(v)
        else:
            flat[k] = v
    return flat
