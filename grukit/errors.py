"""grukit's errors: one base class, a few kinds, every message names the problem and the fix.

All of them subclass ``ValueError`` as well as :class:`GrukitError`. Where ``torch.nn.GRU`` raises another class
for the same mistake, the error raised is also an instance of that class, so ``except TypeError:`` or
``except RuntimeError:`` written against torch catches grukit's error too: :class:`ArgumentTypeError` (a
``TypeError``: an argument of the wrong type) and :class:`SizeMismatchError` (a ``RuntimeError``: a size that
disagrees with the module, or a sequence with no steps).
"""
from __future__ import annotations

import difflib
from pathlib import Path


class GrukitError(Exception):
    """Base class of every error grukit raises on purpose (the CLI prints these without a traceback)."""


class ShapeError(GrukitError, ValueError):
    """A tensor has the wrong number of dimensions, size or dtype."""


class SizeMismatchError(ShapeError, RuntimeError):
    """A tensor's size disagrees with the module's (torch raises ``RuntimeError`` for these)."""


class ConfigError(GrukitError, ValueError):
    """An option or combination of options that cannot be honoured."""


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong type (torch raises ``TypeError`` for these)."""


class BackendError(ConfigError):
    """A named backend cannot run the requested spec."""


class DataError(GrukitError, ValueError):
    """A data file cannot be used; names the file and, when known, the line/row and column."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 column: str | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f", line {line}"
            if column is not None:
                where += f", column {column!r}"
            where += ": "
        super().__init__(where + message)


def collect(problems: list[str], kind: type[GrukitError] = ConfigError, what: str = "") -> None:
    """Raise one ``kind`` error listing every problem found (nothing when the list is empty)."""
    if not problems:
        return
    if len(problems) == 1:
        raise kind(problems[0])
    head = f"{len(problems)} problems{(' in ' + what) if what else ''}:"
    raise kind("\n  - ".join([head, *problems]))


class StaleWeightsWarning(UserWarning):
    """A packed copy of a module's weights (a ``GRUStream``) no longer matches the module: call ``refresh()``."""


class TrainingError(GrukitError, RuntimeError):
    """Training cannot go on (a non-finite loss, ...); the last good checkpoint is kept."""


class Interrupted(GrukitError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; ``exit_code`` is 130 or 143."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def nearest(name: str, choices, n: int = 1) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices``, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
