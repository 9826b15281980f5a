"""Datasets and their registry: MNIST (binarized, grey), multi-digit MNIST, mixtures, CIFAR-10,
text8 and user data.

Every dataset yields `(x, label)`: x in the model's data format for its kind, label an int64 scalar
(-1 if none).
"""

from bfn.data.registry import list_datasets, load_dataset
from bfn.data.spec import DataSpec

__all__ = ["DataSpec", "list_datasets", "load_dataset"]
