"""Search spaces of ``grukit tune``: parsed, checked against the task's config, and sampled by an Optuna trial.

A space maps config field names to one of

* a list: the choices (``hidden_size: [32, 64, 128]``, ``pooling: [last, mean]``),
* a mapping ``{low, high, log, step}``: a range, integer or float by the field's type
  (``lr: {low: 1e-4, high: 1e-2, log: true}``, ``lookback: {low: 12, high: 72, step: 12}``),
* anything else: a fixed value, taken out of the search (``batch_size: 32``).

Each config class declares its default space next to its fields (``tune_space`` on the dataclasses in
:mod:`grukit.config` and ``grukit/tasks/*_config.py``); a config file's ``tune:`` section overrides it field
by field. A bad entry (unknown field, low > high, a choice the field cannot take) is a one-line
:class:`~grukit.errors.ConfigError` naming the field.

This module imports neither torch nor optuna (the CLI's ``--help`` describes the spaces).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TaskConfig, coerce, nearest, read_config_mapping
from .errors import ConfigError

__all__ = ["Dim", "parse_space", "task_space", "describe_space", "read_tune_section"]

_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dim:
    """One searched (or fixed) config field."""

    name: str
    kind: str                       # "choice", "int", "float" or "fixed"
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    value: Any = None               # kind == "fixed"

    def suggest(self, trial) -> Any:
        """The value an Optuna trial picks for this field."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def holds(self, value: Any) -> bool:
        """Whether a trial of this (searched) field can take ``value``: one of the choices, or in range and on
        the step grid."""
        if self.kind == "fixed":
            return False
        if self.kind == "choice":
            return any(value == c and (type(value) is type(c) or not isinstance(value, bool) and
                                       not isinstance(c, bool)) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and value != int(value):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.name}={self.value}"
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        extra = [x for x in ("log" if self.log else "", f"step {self.step:g}" if self.step else "") if x]
        return f"{self.name} {self.low:g}..{self.high:g}" + (f" ({', '.join(extra)})" if extra else "")


def _comparable(cls: type[TaskConfig], name: str, where: str) -> None:
    """Refuse to search a field that changes what the validation loss measures (``cls.loss_fields``)."""
    if name in getattr(cls, "loss_fields", ()):
        raise ConfigError(f"{where}: it changes what the validation loss measures (its units or weighting), so "
                          "trials with different values could not be ranked by it; give one value")


def _dim(cls: type[TaskConfig], name: str, spec: Any, source: str) -> Dim:
    names = cls.field_names()
    if name not in names:
        raise ConfigError(f"{source}: unknown field {name!r} in the search space{nearest(name, names)}")
    hint = typing.get_type_hints(cls)[name]
    where = f"{source}: field {name!r}"
    if isinstance(spec, (list, tuple)) and typing.get_origin(hint) is not tuple:
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices; give at least one value")
        choices = []
        for v in spec:
            try:
                choices.append(coerce(v, hint))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: choice {v!r} does not fit the field ({e})") from None
        dim = Dim(name, "choice", choices=tuple(dict.fromkeys(choices)))
        if len(dim.choices) > 1:
            _comparable(cls, name, where)
        return dim
    if isinstance(spec, dict):
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise ConfigError(f"{where}: a range needs low and high (and optionally log, step); got keys "
                              f"{sorted(spec)}")
        if hint not in (int, float):
            raise ConfigError(f"{where}: a range needs a numeric field, but {name} is {getattr(hint, '__name__', hint)}"
                              "; give a list of choices instead")
        try:
            low, high = coerce(spec["low"], hint), coerce(spec["high"], hint)
            step = None if spec.get("step") in (None, 0) else coerce(spec["step"], hint)
            log = coerce(spec.get("log", False), bool)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
        if low > high:
            raise ConfigError(f"{where}: low={low} is greater than high={high}")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got low={low}")
        if log and step is not None:
            raise ConfigError(f"{where}: log and step cannot be combined (Optuna samples either)")
        if step is not None and step <= 0:
            raise ConfigError(f"{where}: step={step} must be > 0")
        if low < high:
            _comparable(cls, name, where)
        return Dim(name, "int" if hint is int else "float", low=low, high=high, log=log, step=step)
    try:
        return Dim(name, "fixed", value=coerce(spec, hint))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: fixed value {spec!r} does not fit the field ({e})") from None


def parse_space(cls: type[TaskConfig], spec: dict[str, Any], source: str = "tune") -> dict[str, Dim]:
    """Parse a ``{field: spec}`` mapping for config class ``cls``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: expected a mapping of field names to choices, ranges or values")
    return {str(k).replace("-", "_"): _dim(cls, str(k).replace("-", "_"), v, source) for k, v in spec.items()}


def task_space(cls: type[TaskConfig], overrides: dict[str, Any] | None = None,
               base: TaskConfig | None = None, source: str = "tune") -> dict[str, Dim]:
    """The class's default space with ``overrides`` applied field by field, checked against ``base``.

    Every choice and both ends of every range are tried on ``base`` (the config the search starts from), so a
    value the task refuses (``pooling: [max]``, ``dropout: {low: 0, high: 1.5}``) fails now, naming the field.
    """
    space = parse_space(cls, dict(cls.tune_space), f"{cls.__name__}.tune_space")
    space.update(parse_space(cls, overrides or {}, source))
    if base is not None:
        for dim in space.values():
            values = dim.choices if dim.kind == "choice" else (dim.value,) if dim.kind == "fixed" else \
                (dim.low, dim.high)
            for v in values:
                try:
                    base.replace(**{dim.name: v})
                except ConfigError as e:
                    problem = next((ln.strip(" -") for ln in str(e).splitlines() if ln.strip(" -").startswith(
                        f"{dim.name}=")), str(e).splitlines()[-1].strip(" -"))
                    raise ConfigError(f"{source}: field {dim.name!r}: value {v!r} is refused by the task "
                                      f"({problem})") from None
    return space


def describe_space(cls: type[TaskConfig]) -> str:
    """One line per searched field, for ``grukit tune --help``."""
    return "; ".join(d.describe() for d in parse_space(cls, dict(cls.tune_space), cls.__name__).values())


def read_tune_section(path: str | Path) -> dict[str, Any]:
    """The ``tune:`` section of a YAML/TOML/JSON config file ({} when it has none)."""
    section = read_config_mapping(path).get("tune", {})
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: the tune: section must map field names to choices, ranges or fixed values")
    return section


def start_params(dims: dict[str, Dim], base: TaskConfig) -> dict[str, Any]:
    """The starting configuration's values of the searched fields that the space can hold: the setting of the
    search's first trial (a value outside its field's range or choices is left to the sampler)."""
    return {name: getattr(base, name) for name, d in dims.items() if d.holds(getattr(base, name))}
