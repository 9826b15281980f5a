"""Network name -> constructor: an explicit table, no reflection on class-name strings."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from bfn.errors import ConfigError
from bfn.networks.mlp import MLP
from bfn.networks.official_gpt import OfficialText8GPT
from bfn.networks.official_mnist import OfficialMNISTUNet
from bfn.networks.official_vdm import OfficialVDMUNet
from bfn.networks.siren import Siren
from bfn.networks.transformer import Transformer
from bfn.networks.unet import UNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {"unet": UNet, "transformer": Transformer, "mlp": MLP,
                                                 "siren": Siren,
                                                 # the official BFN networks (Graves et al. 2023), see models.official
                                                 "official-mnist-unet": OfficialMNISTUNet,
                                                 "official-cifar-unet": OfficialVDMUNet,
                                                 "official-text8-gpt": OfficialText8GPT}


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as `name` with keyword arguments from a config.

    Sequences (lists, OmegaConf ListConfig) become tuples, as YAML has no tuples. Raises ConfigError for an
    unknown name, an unknown or missing keyword, or a value the constructor rejects.
    """
    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(sorted(NETWORKS))}")
    factory = NETWORKS[name]
    params = inspect.signature(factory).parameters
    accepted = ", ".join(params)
    for key in kwargs:
        if key not in params:
            raise ConfigError(f"network {name!r} has no argument {key!r}; it accepts: {accepted}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"network {name!r} needs the argument(s) {', '.join(missing)}; it accepts: {accepted}")
    kwargs = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in kwargs.items()}
    try:
        return factory(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"network {name!r}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid arguments for network {name!r} ({e}); it accepts: {accepted}") from e
