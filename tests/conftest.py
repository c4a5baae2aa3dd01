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
