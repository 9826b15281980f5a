"""Generative models with one interface: `loss(x) -> [B]`, `sample(n, steps, ...)`, `nll(x, steps) -> [B]`."""

from bfn.models.bfn import BFN
from bfn.models.hub import DataInfo, build_model, from_pretrained, save_pretrained

__all__ = ["BFN", "DataInfo", "build_model", "from_pretrained", "save_pretrained"]
