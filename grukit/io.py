"""Files written atomically and read back with one-line errors: the leaf every layer of grukit writes through.

``atomic_write`` puts the bytes in a temporary file in the target's directory, ``fsync``s it and renames it over
the target (``os.replace``), then ``fsync``s the directory. A crash, a kill or a full disk leaves the old file or
the new one, never half of one, and never a stray temporary file. New files get the mode an ordinary ``open``
would give them (``0o666`` less the umask), so a team sharing a runs folder reads each other's runs.

A write that the disk refuses (full, read-only, no permission) raises :class:`StorageError`: one line naming the
file and the reason. Readers (``read_json``, ``read_yaml``) name the file and the problem in one line
(:class:`grukit.errors.DataError`); YAML is read with ``yaml.safe_load``, so a ``!!python`` tag is refused, never
constructed. This module imports nothing of grukit but its errors.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import DataError, GrukitError

__all__ = ["StorageError", "atomic_write", "write_json", "read_json", "write_yaml", "read_yaml", "digest",
           "file_digest", "storage_error"]

_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}


class StorageError(GrukitError, OSError):
    """A file could not be written or read because of the disk (full, read-only, no permission, I/O error).

    Also an ``OSError``, so code that handles ``OSError`` keeps working; ``errno`` is the original one."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


def storage_error(e: OSError, path: str | Path, doing: str = "write") -> StorageError:
    """A one-line :class:`StorageError` for ``e`` raised while doing ``doing`` to ``path``."""
    reason = _REASONS.get(e.errno or -1) or (e.strerror or str(e) or type(e).__name__)
    return StorageError(f"{path}: cannot {doing} it: {reason}", e.errno)


def _mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, os.replace).

    A killed process always leaves the old file or the new one, never a part. ``durable=False`` skips the two
    fsyncs (file and folder): still atomic against kills, but a power loss may lose the newest version; for
    files rewritten many times a second whose loss costs nothing (the CSV metrics log).
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode())                # mkstemp makes 0600; respect the umask instead
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if isinstance(e, StorageError):
            raise
        raise storage_error(e, path) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if not durable:
        return path
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def digest(data: bytes) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of ``data``: one entry of a run's manifest."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_digest(path: str | Path) -> dict[str, Any]:
    """:func:`digest` of a file, read in 1 MiB blocks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


# ------------------------------------------------------------------ JSON and YAML
def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json_bytes(obj))


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, yaml_bytes(obj))


def yaml_bytes(obj: Any) -> bytes:
    import yaml
    return yaml.safe_dump(obj, sort_keys=False).encode("utf-8")


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is a one-line DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"the {what} is missing", path=path) from None
    except IsADirectoryError:
        raise DataError(f"expected a {what}, found a directory", path=path) from None
    except OSError as e:
        raise storage_error(e, path, "read") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"the {what} is not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r}); it "
                        "is damaged", path=path, line=line) from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing, truncated or garbled file is a one-line DataError naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        problem = "it is empty" if not text.strip() else f"{e.msg} (column {e.colno})"
        raise DataError(f"the {what} is not valid JSON: {problem}; it is truncated or damaged", path=path,
                        line=e.lineno if text.strip() else None) from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (no tag ever builds an object); errors are one line."""
    import yaml
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        tag = getattr(e, "problem", "") or str(e).splitlines()[0]
        line = e.problem_mark.line + 1 if getattr(e, "problem_mark", None) else None
        raise DataError(f"the {what} holds a YAML tag grukit refuses ({tag.strip()}); only plain values are "
                        "read, no tag ever runs code", path=path, line=line) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"the {what} is not valid YAML: {problem}; it is truncated or damaged", path=path,
                        line=mark.line + 1 if mark else None) from None
