"""Full and read-only disks, the umask, and grukit.io's one-line errors (issue 22 items 10 and 11).

A full disk is simulated by making ``os.fsync`` of the files grukit writes fail with ENOSPC (every write goes
through grukit.io.atomic_write, which fsyncs before it renames), a read-only one by making the temporary file
fail with EROFS."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from grukit.cli import main
from grukit.errors import DataError
from grukit.io import StorageError, atomic_write, read_json, read_yaml
from grukit.runs import load_checkpoint, load_weights
from grukit.train import fit

SMALL = dict(data="airline", horizon=12, lookback=24, hidden_size=8, batch_size=8, backtests=1, seed=1,
             progress=False, checkpoint_every=0, lr_schedule="none")


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return rc, err


class FullDisk:
    """``os.fsync`` fails with ENOSPC once ``after`` writes of files named like ``name`` went through (and for
    every file from then on): the disk filled up."""

    def __init__(self, monkeypatch, name: str = "", after: int = 0):
        self.real, self.name, self.after, self.seen, self.full = os.fsync, name, after, 0, after == 0
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not self.full and self.name in Path(target).name:
            self.seen += 1
            self.full = self.seen > self.after
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("disk") / "ref"
    fit("forecast", out=out, max_epochs=6, **SMALL)
    return out


# ---------------------------------------------------------------- item 10: full or read-only disks
def test_disk_full_during_training_keeps_last_checkpoint_and_resume_finishes(finished, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    disk = FullDisk(monkeypatch, ".last.ckpt.", after=2)          # epochs 0 and 1 saved, then the disk is full
    with pytest.raises(StorageError, match=r"disk is full; .*last.ckpt \(epoch 1\) is intact: free space .* "
                                           r"continue with `grukit train forecast --out .* --resume`"):
        fit("forecast", out=out, max_epochs=6, **SMALL)
    monkeypatch.setattr(os, "fsync", disk.real)                      # space freed
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not list(out.rglob("*.tmp"))
    fit("forecast", out=out, resume=True, progress=False, evaluate=False)
    a, b = load_weights(finished / "model.safetensors"), load_weights(out / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_disk_full_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    FullDisk(monkeypatch, ".best.ckpt.", after=1)
    rc, err = cli(capsys, "train", "forecast", "--data", "airline", "--horizon", 12, "--lookback", 24,
                  "--hidden-size", 8, "--max-epochs", 4, "--checkpoint-every", 0, "--no-progress",
                  "--out", tmp_path / "r")
    assert rc == 2 and "the disk is full" in err and "--resume" in err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_on_a_full_disk(finished, tmp_path, monkeypatch, capsys, command):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    FullDisk(monkeypatch)
    rc, err = cli(capsys, command, run)
    assert rc == 2 and err.startswith(f"grukit: error: {run}") and "cannot write it: the disk is full" in err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_on_a_read_only_disk(finished, tmp_path, monkeypatch, capsys, command):
    run = Path(shutil.copytree(finished, tmp_path / "run"))

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc, err = cli(capsys, command, run)
    assert rc == 2 and "cannot write it: the file system is read-only" in err


# ---------------------------------------------------------------- item 11: the umask
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        p = atomic_write(tmp_path / "x" / "f.txt", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode and p.read_text() == "hello"


def test_run_files_are_readable_by_the_team(finished):
    for name in ("run.json", "config.yaml", "meta.json", "model.safetensors", "checkpoints/last.ckpt",
                 "metrics.csv"):
        mode = stat.S_IMODE((finished / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# ---------------------------------------------------------------- grukit.io errors
def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = atomic_write(tmp_path / "a.json", "old")
    FullDisk(monkeypatch)
    with pytest.raises(StorageError, match=r"a.json: cannot write it: the disk is full") as e:
        atomic_write(p, "new")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


@pytest.mark.parametrize("text, message", [
    ("", r"x.json: the thing is not valid JSON: it is empty"),
    ('{"a": [1,', r"x.json, line 1: the thing is not valid JSON: Expecting value \(column 10\)"),
])
def test_read_json_errors_are_one_line(tmp_path, text, message):
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(DataError, match=message):
        read_json(tmp_path / "x.json", "thing")
    with pytest.raises(DataError, match=r"nope.json: the thing is missing"):
        read_json(tmp_path / "nope.json", "thing")


def test_read_yaml_refuses_python_tags_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "c.yaml").write_text(f"a: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(DataError, match=r"c.yaml, line 1: the YAML file holds a YAML tag grukit refuses"):
        read_yaml(tmp_path / "c.yaml")
    assert not marker.exists()
    assert torch is not None
