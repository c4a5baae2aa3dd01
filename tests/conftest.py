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
