"""Runtime choices shared by every command: which device to run on."""

from __future__ import annotations

import torch

from bfn.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> str:
    """"auto" -> cuda > mps > cpu; an explicit device that is not there is a one-line ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return name
