import os
from pathlib import Path

import pytest
import torch

# The suite runs tiny tensors: one intra-op thread avoids OpenMP spin-wait overhead on a busy 2-core box.
torch.set_num_threads(1)

DATA = Path(os.environ.get("GRUKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    """../shared/data (or $GRUKIT_DATA); tests that need a file skip with a reason when it is missing."""
    return DATA


def need(path: Path) -> Path:
    """Skip the calling test, saying which file is missing, unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"data file {path} is not present (set GRUKIT_DATA to the shared data folder)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------- shared by the task tests
# One tolerance table for comparing a task's outputs with a hand computation or another path of the same model
# (the engine's parity tests keep their own table beside the engine case table).
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}

# Tiny options per task: a model that trains in seconds on the tests' small data.
TINY = {
    "autoencoder": dict(window=16, stride=2, hidden_size=8, latent_size=4, batch_size=16, progress=False,
                        patience=0, lr=1e-2, train_fraction=0.5),
    "music": dict(hidden_size=8, max_epochs=1, batch_size=4, chunk=16, progress=False, patience=0, nade_hidden=4,
                  backend="aten"),                  # torch kernels: no JIT compile in a short test
    "lm": dict(hidden_size=32, embedding_size=16, num_layers=1, dropout=0.0, bptt=16, batch_size=4,
               eval_batch_size=2, lr=1e-2, max_epochs=6, patience=0, progress=False, seed=0),
}


@pytest.fixture(scope="session")
def train_tiny(tmp_path_factory):
    """``train_tiny(task, **options)``: a run of ``grukit.train.fit`` with the task's TINY options (overridden
    by ``options``), trained once per session for the same arguments."""
    import warnings

    from grukit.train import fit
    runs: dict = {}

    def train(task: str, **options):
        key = (task, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in runs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs[key] = fit(task, out=tmp_path_factory.mktemp(task) / "run", **{**TINY.get(task, {}),
                                                                                    **options})
        return runs[key]

    return train


def padded(seqs):
    """Sequences of different lengths (T_i, F) as a zero-padded batch (B, T, F) and their lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.as_tensor(s)
    return x, lengths


def assert_padding_ignored(module, seqs, garbage_row: int = 1):
    """``module(x, lengths)`` on the padded batch of ``seqs`` (garbage written into row ``garbage_row``'s
    padding) equals ``module`` on each sequence alone; returns the batch output."""
    x, lengths = padded(seqs)
    x[garbage_row, len(seqs[garbage_row]):] = 1e3                      # garbage padding must not matter
    out = module(x, lengths)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(out[i], module(torch.as_tensor(s)[None], None)[0], atol=1e-5, rtol=1e-5)
    return out


def bump_set(folder, n: int = 32, T: int = 60):
    """A two-class univariate set of variable lengths (class 1 has a bump at steps 20-29) saved as
    ``folder/train.npz``; returns (path, X, y, lengths)."""
    import numpy as np
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    X = rng.normal(0, 0.3, size=(n, T)).astype(np.float32)
    X[y == 1, 20:30] += 2.0
    lengths = rng.integers(45, T + 1, n)
    np.savez(folder / "train.npz", X=X, y=y.astype(str), lengths=lengths)
    return folder / "train.npz", X, y, lengths


def assert_model_ignores_padding_and_follows_seed(make):
    """``make(seed)`` builds a classify model (eval mode, 2 features): its logits on a padded batch (garbage in
    one row's padding) equal each sequence's alone; the same seed gives the same model, another seed another.
    Returns the batch logits."""
    import numpy as np
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(n, 2)).astype(np.float32) for n in (30, 11, 5)]
    x, lengths = padded(seqs)
    x[2, 5:] = 1e3
    m = make(0)
    with torch.no_grad():
        logits, _ = m({"x": x, "lengths": lengths})
        for i, s in enumerate(seqs):
            alone, _ = m({"x": torch.as_tensor(s)[None], "lengths": torch.tensor([len(s)])})
            torch.testing.assert_close(logits[i], alone[0], atol=1e-5, rtol=1e-5)
        again, _ = make(0)({"x": x, "lengths": lengths})
        other, _ = make(1)({"x": x, "lengths": lengths})
    torch.testing.assert_close(logits, again)                        # same seed, same model
    assert not torch.allclose(logits, other)
    return logits


def tiny_classifier(seed: int = 0, member: int = 0, **kw):
    """A small classify model (2 features, 3 classes, series of 30 steps shortened as prepare() would) built
    as ensemble member ``member`` with ``seed``, in eval mode; ``kw`` are ClassifyConfig overrides."""
    from grukit.config import ClassifyConfig
    from grukit.tasks.classify import ClassifyTask
    from grukit.tasks.conv import strides
    torch.manual_seed(seed)
    cfg = ClassifyConfig(**{"hidden_size": 6, "conv_channels": 8, "conv_steps": 8, "gru_steps": 4, **kw})
    s, r = strides(30, cfg.conv_steps, cfg.gru_steps)
    meta = {"input_size": 2, "classes": ["a", "b", "c"], "pool_stride": s, "patch_stride": r,
            "normalize": "series", "downsample": cfg.downsample, "conv_branch": cfg.conv_branch,
            "first_difference": cfg.first_difference}                 # what prepare() records
    return ClassifyTask(cfg, meta, member=member).eval()
