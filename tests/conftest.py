import os

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
