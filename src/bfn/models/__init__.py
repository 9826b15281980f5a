"""Generative models with one interface (`bfn.models.base.GenerativeModel`): BFN, DDPM and later families."""

from bfn.models.base import Capabilities, GenerativeModel, SampleStep
from bfn.models.bfn import BFN
from bfn.models.hub import build_model, from_pretrained, save_pretrained

__all__ = ["BFN", "Capabilities", "GenerativeModel", "SampleStep", "build_model", "from_pretrained",
           "save_pretrained"]
