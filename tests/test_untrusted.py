"""Untrusted run directories: planted pickles are refused, never executed; foreign checkpoints are named."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from grukit.errors import ConfigError, DataError
from grukit.runs import load_checkpoint, open_run
from grukit.train import fit


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: the attack a weights_only load must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("untrusted")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 6, 2)).astype("float32")
    np.savez(tmp / "d.npz", X=X, y=(X[:, :, 0].mean(1) > 0).astype(int))
    fit("classify", data=str(tmp / "d.npz"), max_epochs=1, hidden_size=4, out=tmp / "run", progress=False,
        evaluate=False, ensemble=1)                      # one weights file (the auto ensemble trains 5 here)
    return tmp / "run"


def test_planted_pickle_checkpoint_is_refused_not_run(run_dir, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, evil)       # a real torch pickle with a payload
    with pytest.raises(DataError, match=r"refused to load this checkpoint.*never runs code"):
        load_checkpoint(evil)
    assert not marker.exists()
    # through --resume: the run's manifest notices the planted file first ...
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    good, info = ckpt.read_bytes(), (run_dir / "run.json").read_bytes()
    try:
        ckpt.write_bytes(evil.read_bytes())
        with pytest.raises(DataError, match="last.ckpt: the file changed after grukit wrote it"):
            fit("classify", out=run_dir, resume=True, max_epochs=3, progress=False, evaluate=False)
        assert not marker.exists()
        # ... and where the attacker also removed it from the manifest, Lightning reads checkpoints/last.ckpt
        # with the same safe loader
        import json
        record = json.loads(info)
        del record["files"]["checkpoints/last.ckpt"]
        (run_dir / "run.json").write_text(json.dumps(record))
        with pytest.raises(DataError, match="refused to load"):
            fit("classify", out=run_dir, resume=True, max_epochs=3, progress=False, evaluate=False)
        assert not marker.exists()
    finally:
        ckpt.write_bytes(good)
        (run_dir / "run.json").write_bytes(info)


def test_planted_pickle_weights_are_refused(run_dir, tmp_path):
    marker = tmp_path / "pwned"
    weights = run_dir / "model.safetensors"
    good, info = weights.read_bytes(), (run_dir / "run.json").read_bytes()
    try:
        weights.write_bytes(pickle.dumps(_Payload(marker)))
        with pytest.raises(DataError, match="model.safetensors: the file changed after grukit wrote it"):
            open_run(run_dir).models()                                # the manifest notices first
        import json
        record = json.loads(info)
        del record["files"]["model.safetensors"]
        (run_dir / "run.json").write_text(json.dumps(record))
        with pytest.raises(DataError, match="not a safetensors weight file"):
            open_run(run_dir).models()
        assert not marker.exists()
    finally:
        weights.write_bytes(good)
        (run_dir / "run.json").write_bytes(info)
    assert len(open_run(run_dir).models()) == 1


def test_checkpoint_of_another_task_or_version_is_named(run_dir, tmp_path):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    with pytest.raises(ConfigError, match="holds a 'classify' model, not 'forecast'"):
        load_checkpoint(run_dir / "checkpoints" / "last.ckpt", task="forecast")
    ckpt["grukit"]["version"] = "7.0.0"
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match=r"written by grukit '7.0.0'.*reads checkpoints of grukit 0.x"):
        load_checkpoint(tmp_path / "old.ckpt")
    del ckpt["grukit"]
    torch.save(ckpt, tmp_path / "foreign.ckpt")
    with pytest.raises(ConfigError, match="not a grukit checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")
    assert os.listdir(run_dir)   # nothing in the run was touched


def test_unwritable_or_full_output_is_reported_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from grukit import runs
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")                      # unwritable as a parent, even for root
    with pytest.raises(ConfigError, match="cannot write the run directory"):
        runs.new_run_dir(blocker / "run", "classify")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 2 ** 20, 2 ** 20))
    with pytest.raises(ConfigError, match=r"only 1 MiB free .* choose another --out"):
        runs.new_run_dir(tmp_path / "full", "classify")
