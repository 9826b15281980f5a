"""Model family name -> builder: an explicit table of `module:function` paths, imported on first use so that
`import bfn` does not import every family. A new family adds one line here (and its module and preset)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bfn.errors import ConfigError

if TYPE_CHECKING:
    from bfn.data.spec import DataSpec
    from bfn.models.base import GenerativeModel

#: family name (the config's `model.type`) -> "module:builder"; a builder is `build(cfg: ModelConfig, data:
#: DataSpec) -> GenerativeModel`, reading its family's own options from `cfg.options`
FAMILIES: dict[str, str] = {
    "bfn": "bfn.models.bfn:build",
    "ddpm": "bfn.models.ddpm:build",
    "vae": "bfn.models.vae:build",
    "flow": "bfn.models.flow_model:build",
    "gan": "bfn.models.gan:build_gan",
    "wgan-gp": "bfn.models.gan:build_wgan_gp",
    "rbm": "bfn.models.rbm:build",
}


def family_builder(name: str) -> Callable[[Any, DataSpec], GenerativeModel]:
    """The builder registered for the model family `name` (ConfigError naming the choices otherwise)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model type {name!r}; choose one of: {', '.join(sorted(FAMILIES))}")
    module, func = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), func)
