"""The task registry: how a task reaches `grukit train|evaluate|predict` without editing cli.py.

A task registers a name, its config dataclass and the module that implements it, both as import strings so
nothing heavy is imported until the task runs::

    register("lm", config="grukit.tasks.language_config:LMConfig", module="grukit.tasks.language",
             help="character/word language model", examples=["grukit train lm --data input.txt"])

* ``config`` must live in a module that does not import torch (the CLI reads every config class at start-up
  to build ``grukit train <task> --help``). It subclasses :class:`grukit.config.TaskConfig`.
* ``module`` defines the task protocol (see :mod:`grukit.tasks.base` for the model hooks):

  - ``Task``: a :class:`~grukit.tasks.base.SequenceTask` subclass, built as ``Task(config, meta, member=i)`` (i: the
    ensemble member, 0 for a single model; a task may build members differently).
  - ``prepare(config) -> Prepared``: read ``config.data`` and return loaders and ``meta`` (sizes, scalers,
    vocabularies: JSON-able values only). Raise :class:`grukit.errors.DataError` on bad input, before anything
    is written.
  - ``evaluate(run, models, data=None) -> dict[str, dict[str, float]]``: rows (the model, baselines) of
    metrics; writes its plots under ``run.path / "plots"``.
  - ``predict(run, models, data, out=None) -> list[Path]``: writes predictions (CSV, PNG) and returns paths.
  - optional ``after_fit(config, prepared, load_models) -> dict``: meta entries learnt from the whole trained
    ensemble (``load_models()`` returns it; forecast: the conformal interval scales), added to meta.json
    before evaluation.
  - optional ``validation_folds(config) -> list[int]``: the folds ``grukit tune`` trains per setting, as values of
    the config's ``fold_shift`` (forecast: rolling origins, ``val_origins``); without it a trial is one run.

Built-in registrations are at the bottom of :mod:`grukit.tasks` (``grukit/tasks/__init__.py``): add one
``register(...)`` line there for a new task.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["TaskEntry", "register", "get", "names"]


@dataclass(frozen=True)
class TaskEntry:
    name: str
    config: str                     # "module:Class" of the config dataclass (torch-free module)
    module: str                     # module implementing Task / prepare / evaluate / predict
    help: str = ""                  # one line for `grukit train --help`
    examples: tuple[str, ...] = field(default_factory=tuple)   # shown by `grukit train <task> --help`

    def config_class(self):
        mod, _, cls = self.config.partition(":")
        return getattr(importlib.import_module(mod), cls)

    def load(self):
        """Import and return the implementing module."""
        return importlib.import_module(self.module)


_REGISTRY: dict[str, TaskEntry] = {}


def register(name: str, *, config: str, module: str, help: str = "",  # noqa: A002
             examples: list[str] | tuple[str, ...] = ()) -> TaskEntry:
    entry = TaskEntry(name, config, module, help, tuple(examples))
    _REGISTRY[name] = entry
    return entry


def names() -> list[str]:
    _ensure_builtins()
    return list(_REGISTRY)


def get(name: str) -> TaskEntry:
    _ensure_builtins()
    if name not in _REGISTRY:
        from ..errors import nearest
        raise ConfigError(f"unknown task {name!r}{nearest(name, _REGISTRY)}; expected one of "
                          f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _ensure_builtins() -> None:
    from .. import tasks  # noqa: F401  (its __init__ registers the built-in tasks)
