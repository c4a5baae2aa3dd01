"""Run directories you can trust (issue 22): a manifest checked on every load, checkpoints verified before a
resume, last.ckpt every epoch, options on --resume applied or refused, and one line with exit code 2 for every
damaged file.

Each test names the item of issue 22 it covers. Runs are tiny forecasts of the airline data (a few seconds).
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from grukit.cli import main
from grukit.errors import ConfigError, DataError
from grukit.runs import load_checkpoint, load_weights, open_run
from grukit.train import fit

SMALL = dict(data="airline", horizon=12, lookback=24, hidden_size=8, batch_size=8, backtests=1, seed=1,
             progress=False, checkpoint_every=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "ref"
    fit("forecast", out=out, max_epochs=4, **SMALL)
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A private copy of the finished run, to damage."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return rc, err


def one_line(err: str) -> str:
    assert err.startswith("grukit: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def flip(path: Path, start: int, n: int = 100) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tensor_offset_of_ckpt(path: Path) -> int:
    """Byte offset of the largest tensor member's data inside a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


# ---------------------------------------------------------------- item 1: last.ckpt every epoch
@pytest.fixture
def val_loss_is_the_epoch(monkeypatch):
    """Forecast validation loss = the epoch number, so epoch 0 stays the best checkpoint."""
    from grukit.tasks.forecast import ForecastTask

    original = ForecastTask.loss

    def worse_each_epoch(self, outputs, target, inputs):
        loss = original(self, outputs, target, inputs)
        return loss if self.training else loss * 0 + float(self.current_epoch)

    monkeypatch.setattr(ForecastTask, "loss", worse_each_epoch)


def test_last_checkpoint_follows_every_epoch_not_the_best_one(tmp_path, val_loss_is_the_epoch):
    fit("forecast", out=tmp_path / "r", max_epochs=5, patience=0, **SMALL)
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "best.ckpt")["epoch"] == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")["epoch"] == 4


def test_last_checkpoint_is_throttled_but_always_written_at_the_end(tmp_path, monkeypatch):
    from grukit import train

    writes = []
    real = train.record_files
    monkeypatch.setattr(train, "record_files",
                        lambda run_dir, files, **kw: (writes.extend(p.name for p in files), real(run_dir, files, **kw)))
    fit("forecast", out=tmp_path / "r", max_epochs=5, patience=0, **{**SMALL, "checkpoint_every": 3600})
    assert writes.count("last.ckpt") == 2                    # the first epoch, then the end
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")["epoch"] == 5   # all 5 epochs done


# ---------------------------------------------------------------- item 2: weights checked on load
def test_flipped_weights_are_refused_with_the_way_back(run, capsys):
    good = load_weights(run / "model.safetensors")
    size = (run / "model.safetensors").stat().st_size
    flip(run / "model.safetensors", size - 150)                 # inside the last tensors
    with pytest.raises(DataError, match=r"model.safetensors: the file changed after grukit wrote it .*sha256"):
        open_run(run).models()
    rc, err = cli(capsys, "predict", run)
    assert rc == 2 and "model.safetensors" in one_line(err)
    assert "best.ckpt is intact" in err and "--resume` writes the weights again" in err
    fit("forecast", out=run, resume=True, progress=False)      # the hint works: same weights as before
    again = load_weights(run / "model.safetensors")
    assert all(torch.equal(good[k], again[k]) for k in good)


def test_removed_checkpoints_leave_the_manifest(run):
    from grukit.train import remove_checkpoints

    remove_checkpoints(run)
    assert not (run / "checkpoints").exists()
    assert sorted(json.loads((run / "run.json").read_text())["files"]) == ["config.yaml", "meta.json",
                                                                          "model.safetensors"]
    assert len(open_run(run).models()) == 1


# ---------------------------------------------------------------- item 3: checkpoints verified before resume
def test_flipped_checkpoint_is_refused_before_resume(run, capsys):
    last = run / "checkpoints" / "last.ckpt"
    flip(last, tensor_offset_of_ckpt(last) + 4)
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume", "--max-epochs", 6)
    assert rc == 2 and "last.ckpt" in one_line(err) and "best.ckpt is intact" in err
    # without its manifest entry (a run from before manifests) the zip CRC still catches it
    record = json.loads((run / "run.json").read_text())
    del record["files"]["checkpoints/last.ckpt"]
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"last.ckpt: the checkpoint is damaged: its member .* fails its CRC"):
        fit("forecast", out=run, resume=True, max_epochs=6, progress=False)
    last.unlink()                                               # what the hint says: resume from best.ckpt
    fit("forecast", out=run, resume=True, max_epochs=6, progress=False, evaluate=False)
    assert load_checkpoint(last)["epoch"] == 5


# ---------------------------------------------------------------- item 4: options with --resume
def test_resume_options_are_applied_and_recorded_or_refused(run, capsys):
    before = (run / "config.yaml").read_text()
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume", "--max-epochs", 6, "--lr", 0.5)
    assert rc == 2 and "--lr (0.01 -> 0.5) cannot change on resume" in one_line(err)
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume", "--max-epochs", 6, "--lr", "inf")
    assert rc == 2 and "lr=inf: expected a finite number" in one_line(err)
    assert (run / "config.yaml").read_text() == before          # nothing recorded that was not used
    fit("forecast", out=run, resume=True, max_epochs=6, lr=0.01, progress=False, evaluate=False)  # same lr: fine
    assert open_run(run).config.max_epochs == 6
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 5


# ---------------------------------------------------------------- item 7: the CSV metrics log
@pytest.mark.parametrize("damage", [b"", b"\x00\xff garbled \x00" * 10, b"epoch,step,val_loss\n0,0,1.5\n1,1,"])
def test_resume_after_an_empty_or_garbled_metrics_log(run, damage):
    (run / "logs" / "metrics.csv").write_bytes(damage)
    fit("forecast", out=run, resume=True, max_epochs=6, progress=False)
    import pandas as pd
    log = pd.read_csv(run / "metrics.csv")
    assert {4, 5} <= set(log["epoch"].dropna().astype(int))
    assert (run / "metrics.json").is_file()


def test_metrics_log_is_replaced_atomically(tmp_path, monkeypatch):
    from grukit import callbacks

    writes = []
    real = callbacks.atomic_write
    monkeypatch.setattr(callbacks, "atomic_write", lambda p, d, **kw: (writes.append(Path(p).name), real(p, d, **kw))[1])
    fit("forecast", out=tmp_path / "r", max_epochs=2, **SMALL)
    assert "metrics.csv" in writes
    assert not list((tmp_path / "r").rglob("*.tmp"))


# ---------------------------------------------------------------- item 8: damaged files, one line, exit 2
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {
    "run.json truncated": ("run.json", _truncate, "the run record is not valid JSON"),
    "run.json a list": ("run.json", lambda p: p.write_text("[]"), "run.json: the run record is damaged"),
    "run.json task a number": ("run.json", lambda p: p.write_text('{"task": 3}'), "the run record is damaged"),
    "run.json not UTF-8": ("run.json", lambda p: p.write_bytes(b"\xff\xfe{"), "run.json, line 1: the run record "
                           "is not UTF-8"),
    "run.json deleted": ("run.json", Path.unlink, "not a grukit run directory (no run.json)"),
    "meta.json truncated": ("meta.json", _truncate, "meta.json: the file changed after grukit wrote it"),
    "meta.json deleted": ("meta.json", Path.unlink, "meta.json: the file is missing"),
    "config.yaml truncated": ("config.yaml", _truncate, "config.yaml: the file changed"),
    "config.yaml deleted": ("config.yaml", Path.unlink, "config.yaml: the file is missing"),
    "config.yaml hidden_size": ("config.yaml", lambda p: p.write_text(p.read_text().replace("hidden_size: 8",
                                "hidden_size: 16")), "config.yaml: the file changed after grukit wrote it"),
    "model truncated": ("model.safetensors", _truncate, "model.safetensors: the file changed"),
    "model deleted": ("model.safetensors", Path.unlink, "model.safetensors: the file is missing"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_files_end_in_one_line_and_exit_2(run, capsys, case):
    name, damage, message = DAMAGE[case]
    damage(run / name)
    for command in (["evaluate", run], ["predict", run]):
        rc, err = cli(capsys, *command)
        assert rc == 2 and message in one_line(err), err


NO_MANIFEST = {   # runs written before manifests: the files themselves are checked
    "python tag": ("config.yaml", lambda p: p.write_text("!!python/object/apply:os.system ['true']\n"),
                   "config.yaml, line 1: the run's configuration holds a YAML tag grukit refuses"),
    "hidden_size edited": ("config.yaml", lambda p: p.write_text(p.read_text().replace("hidden_size: 8",
                           "hidden_size: 16")), "model.safetensors: the weights do not fit the model"),
    "config truncated": ("config.yaml", lambda p: p.write_text("data: airline\nhorizon: [1,"),
                         "config.yaml, line 2: the run's configuration is not valid YAML"),
    "meta a list": ("meta.json", lambda p: p.write_text("[1, 2]"), "meta.json: the run's data state is damaged"),
    "meta truncated": ("meta.json", _truncate, "meta.json, line"),
    "model truncated": ("model.safetensors", _truncate, "model.safetensors: not a safetensors weight file"),
}


@pytest.mark.parametrize("case", list(NO_MANIFEST))
def test_damaged_files_of_a_run_without_manifest(run, capsys, case):
    record = json.loads((run / "run.json").read_text())
    record.pop("files", None)                                  # (absent on runs from before manifests)
    (run / "run.json").write_text(json.dumps(record))
    name, damage, message = NO_MANIFEST[case]
    damage(run / name)
    rc, err = cli(capsys, "evaluate", run)
    assert rc == 2 and message in one_line(err), err


def test_truncated_last_checkpoint_on_resume(run, capsys):
    _truncate(run / "checkpoints" / "last.ckpt")
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume", "--max-epochs", 6)
    assert rc == 2 and "last.ckpt: the checkpoint is truncated or damaged" in one_line(err)
    record = json.loads((run / "run.json").read_text())
    record.pop("files", None)                                  # (absent on runs from before manifests)
    (run / "run.json").write_text(json.dumps(record))
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume", "--max-epochs", 6)
    assert rc == 2 and "last.ckpt: the checkpoint is truncated or damaged" in one_line(err)


def test_python_tag_in_a_resumed_config_is_one_line(run, capsys):
    (run / "config.yaml").write_text("lr: !!python/object/apply:os.system ['true']\n")
    rc, err = cli(capsys, "train", "forecast", "--out", run, "--resume")
    assert rc == 2 and "config.yaml" in one_line(err)


# ---------------------------------------------------------------- item 9: validation before anything is written
@pytest.mark.parametrize("option, message", [
    (dict(lr=float("nan")), "lr=nan: expected a finite number"),
    (dict(weight_decay=float("inf")), "weight_decay=inf: expected a finite number"),
    (dict(hidden_size=10 ** 9), r"hidden_size=1000000000, num_layers=1: the GRU alone would have 3e\+18 "
                                r"parameters, 4.47e\+10 GiB"),
])
def test_invalid_values_are_refused_before_the_run_directory_exists(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        fit("forecast", out=tmp_path / "r", max_epochs=1, **{**SMALL, **option})
    assert not (tmp_path / "r").exists()


def test_graceful_stop_writes_last_checkpoint_at_its_step_and_resume_finishes(tmp_path, monkeypatch):
    import os
    import signal

    from grukit.errors import Interrupted
    from grukit.tasks.forecast import ForecastTask

    original, calls = ForecastTask.loss, {"n": 0}

    def stop_midway(self, outputs, target, inputs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 15:                                  # epoch 1, a few batches in
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, outputs, target, inputs)

    monkeypatch.setattr(ForecastTask, "loss", stop_midway)
    out = tmp_path / "r"
    with pytest.raises(Interrupted, match="stopped on SIGTERM") as e:
        fit("forecast", out=out, max_epochs=4, **{**SMALL, "checkpoint_every": 3600})
    assert e.value.exit_code == 128 + signal.SIGTERM
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 15                              # the stop's step, not an epoch end after it
    assert open_run(out).info["status"] == "interrupted"
    monkeypatch.setattr(ForecastTask, "loss", original)
    fit("forecast", out=out, resume=True, progress=False, evaluate=False)
    assert open_run(out).info["status"] == "trained"
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] == 4


def test_resume_of_a_moved_run_keeps_its_best_checkpoint(tmp_path, val_loss_is_the_epoch):
    import warnings

    fit("forecast", out=tmp_path / "a", max_epochs=2, patience=0, **SMALL)
    moved = Path(shutil.move(tmp_path / "a", tmp_path / "b"))  # renamed (or copied, or another cwd)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)              # Lightning's "dirpath has changed" warning
        fit("forecast", out=moved, resume=True, max_epochs=4, progress=False, evaluate=False)
    assert load_checkpoint(moved / "checkpoints" / "best.ckpt")["epoch"] == 0      # not epoch 2's worse model
    assert load_checkpoint(moved / "checkpoints" / "last.ckpt")["epoch"] == 3
