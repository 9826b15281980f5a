"""The training engine (the only layer that imports accelerate)."""

from bfn.training.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
