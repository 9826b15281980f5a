"""Architectures only: every network maps (x, t [B] in [0, 1], cond [B] or None) to a tensor and knows nothing
of BFNs or diffusion."""

from bfn.networks.mlp import MLP
from bfn.networks.registry import NETWORKS, build_network
from bfn.networks.siren import Siren
from bfn.networks.transformer import Transformer
from bfn.networks.unet import UNet

__all__ = ["MLP", "NETWORKS", "Siren", "Transformer", "UNet", "build_network"]
