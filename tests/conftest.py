import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs as two xdist workers on two cores: one thread each (and in the processes the tests start), since
# oversubscribed OpenMP threads spin and slow everything down many times over.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


#: the tiny continuous BFN that many tests read: 30 steps of a 16-wide MLP on the 1-D mixture
TINY_RUN = ["model.network.kwargs.hidden=16", "model.network.kwargs.depth=1", "train.batch_size=16",
            "train.log_every=1", "train.checkpoint_every=10", "train.steps=30", "train.warmup_steps=5",
            "data.options.size=256", "sample.n=100", "sample.steps=5"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run per test session (per xdist worker): read-only for the tests, which copy it before
    damaging or extending it."""
    from bfn.config import load_config
    from bfn.training import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(load_config("mixture-1d", TINY_RUN), out, progress=False)
    return out
