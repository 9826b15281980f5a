"""Official BFN checkpoints (nnaisense/bayesian-flow-networks) as bfn models.

An official checkpoint (`mnist_ema.pt`, `cifar10_256d_ema.pt`, ..., or the `ema_model.pt` its training writes) is
`torch.save` of the whole official BFN module's state dict. Its keys map onto a bfn `BFN` model by this table:

| official key                        | bfn key                        | note                                        |
|-------------------------------------|--------------------------------|---------------------------------------------|
| `net.<name>`                        | `network.<name>`               | every parameter, same name and shape        |
| `net.input_adapter.pos_embedding`   | `network.input_adapter.pos_embedding` | text8: the fixed base-1000 positions  |
| `net.input_adapter.pos_feats`       | (dropped, shape checked)       | MNIST/CIFAR-10: Fourier position table the  |
|                                     |                                | official configs build but never use        |

The network and its sizes are read from the keys and shapes (`detect`, `infer`); what shapes cannot tell (attention
heads, GroupNorm groups, the number of bins a CIFAR-10 model was trained for) comes from the paper preset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bfn.config import RunConfig, load_config
from bfn.data.spec import DataSpec
from bfn.errors import CheckpointError, ConfigError
from bfn.models.bfn import BFN
from bfn.models.hub import build_model

PREFIX = "net."
OUR_PREFIX = "network."
UNUSED_BUFFERS = {"net.input_adapter.pos_feats"}

#: network of each detected kind, and its paper preset(s)
NETWORK = {"mnist": "official-mnist-unet", "cifar10": "official-cifar-unet", "text8": "official-text8-gpt"}
PRESETS = {"mnist": ("mnist-discrete-paper",), "text8": ("text8-discrete",),
           "cifar10": ("cifar10-discretized-256", "cifar10-discretized-16", "cifar10-continuous-256",
                       "cifar10-continuous-16")}
#: the published files (hf://rupspace/pretrained-BFNs/<name>) and their presets; other CIFAR-10 file names are read
#: for "<bins><c|d>" (e.g. my_cifar10_16d.pt), else --preset is needed
HUB_REPO = "rupspace/pretrained-BFNs"
HUB_FILES = {"mnist_ema.pt": "mnist-discrete-paper", "cifar10_256d_ema.pt": "cifar10-discretized-256",
             "cifar10_16d_ema.pt": "cifar10-discretized-16", "cifar10_256c_ema.pt": "cifar10-continuous-256",
             "cifar10_16c_ema.pt": "cifar10-continuous-16", "text8_ema.pt": "text8-discrete"}


@dataclass
class Imported:
    """An official checkpoint converted: the run config, the bfn model with the weights loaded, and facts."""

    config: RunConfig
    model: BFN
    kind: str
    preset: str
    parameters: int
    dropped: list[str] = field(default_factory=list)


def detect(state: dict[str, Tensor]) -> str:
    """Which official network a state dict holds: "mnist", "cifar10" or "text8" (CheckpointError otherwise)."""
    if not any(k.startswith(PREFIX) for k in state):
        first = next(iter(state), "<none>")
        raise CheckpointError(f"not an official BFN checkpoint: no key starts with {PREFIX!r} (first key {first!r});"
                              " give the *_ema.pt file the official code saves (torch.save(bfn.state_dict()))")
    if "net.input_projection.weight" in state:
        return "mnist"
    if "net.conv_in.weight" in state:
        return "cifar10"
    if "net.input_adapter.inp_embedding.weight" in state:
        return "text8"
    raise CheckpointError("the checkpoint's keys match none of the official networks (MNIST U-Net, CIFAR-10 VDM "
                          "U-Net, text8 GPT); give --preset only for those checkpoints")


def _shape(state: dict[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"the checkpoint lacks {key}, which every official {key.split('.')[1]} network has")
    return tuple(state[key].shape)


def _side(rows: int, key: str) -> int:
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointError(f"{key} has {rows} rows, not a square image's pixel count")
    return side


def _count(state: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def infer(kind: str, state: dict[str, Tensor]) -> tuple[dict[str, Any], tuple[int, ...], int]:
    """(network kwargs that shapes determine, data shape, output features per variable) of a checkpoint."""
    if kind == "mnist":
        mc, in_feats = _shape(state, "net.input_projection.weight")
        side = _side(_shape(state, "net.input_adapter.pos_feats")[0], "net.input_adapter.pos_feats") \
            if "net.input_adapter.pos_feats" in state else 28
        levels: list[list[int]] = [[]]
        attention: list[int] = []
        i = 1
        while f"net.input_blocks.{i}.0.op.weight" in state or f"net.input_blocks.{i}.0.in_layers.2.weight" in state:
            if f"net.input_blocks.{i}.0.op.weight" in state:
                levels.append([])
            else:
                levels[-1].append(state[f"net.input_blocks.{i}.0.in_layers.2.weight"].shape[0])
                if f"net.input_blocks.{i}.1.qkv.weight" in state:
                    attention.append(2 ** (len(levels) - 1))
            i += 1
        blocks = {len(level) for level in levels}
        if len(blocks) != 1 or not levels[0] or any(len(set(level)) != 1 for level in levels):
            raise CheckpointError("the MNIST U-Net's input blocks do not form levels of equal residual blocks")
        out_g = _shape(state, "net.output_adapter.output_projection.weight")[0]
        kwargs = {"model_channels": mc, "channel_mult": [level[0] // mc for level in levels],
                  "num_res_blocks": blocks.pop(), "attention_resolutions": sorted(set(attention)),
                  "unet_out_channels": _shape(state, "net.out.2.weight")[0]}
        return kwargs, (in_feats - 1, side, side), out_g
    if kind == "cifar10":
        emb, total_in = _shape(state, "net.conv_in.weight")[:2]
        side = _side(_shape(state, "net.input_adapter.pos_feats")[0], "net.input_adapter.pos_feats") \
            if "net.input_adapter.pos_feats" in state else 32
        if total_in not in (3, 15):
            raise CheckpointError(f"net.conv_in.weight takes {total_in} channels; the official CIFAR-10 network takes "
                                  "3 (RGB) or 15 (RGB and its Fourier features)")
        fourier, channels = total_in == 15, 3
        out = _shape(state, "net.output_adapter.output_projection.weight")[0]
        kwargs = {"embedding_dim": emb, "n_blocks": _count(state, r"net\.down_blocks\.(\d+)\..*"),
                  "attention_everywhere": "net.down_blocks.0.attention_block.layers.1.weight" in state,
                  "use_fourier_features": fourier}
        return kwargs, (channels, side, side), out // channels
    n_embd, vocab = _shape(state, "net.input_adapter.inp_embedding.weight")
    seq_len = _shape(state, "net.input_adapter.pos_embedding")[0]
    kwargs = {"n_layer": _count(state, r"net\.transformer\.h\.(\d+)\..*"), "n_embd": n_embd,
              "bias": "net.transformer.ln_f.bias" in state}
    return kwargs, (seq_len,), _shape(state, "net.lm_head.weight")[0]


def choose_preset(kind: str, out_features: int, preset: str | None, filename: str | None) -> str:
    """The paper preset for a checkpoint: `preset` if given (checked against the network), else the only one
    for MNIST and text8, else for CIFAR-10 the published file name (e.g. cifar10_256d_ema.pt)."""
    if preset is not None:
        if preset not in PRESETS[kind]:
            raise ConfigError(f"--preset {preset} does not fit this checkpoint, which holds the official {kind} "
                              f"network; use {' or '.join(PRESETS[kind])}")
        return preset
    if len(PRESETS[kind]) == 1:
        return PRESETS[kind][0]
    if filename in HUB_FILES:
        return HUB_FILES[filename]
    match = re.search(r"(16|256)([cd])", filename or "")
    if match is None:
        flavour = "discretized" if out_features == 2 else "continuous"
        raise ConfigError(f"the weights do not say how many bins this CIFAR-10 model was trained for; add "
                          f"--preset cifar10-{flavour}-256 or --preset cifar10-{flavour}-16")
    return f"cifar10-{'discretized' if match.group(2) == 'd' else 'continuous'}-{match.group(1)}"


def data_spec(cfg: RunConfig, shape: tuple[int, ...]) -> DataSpec:
    """The spec of a preset's dataset (with its bins option), with the checkpoint's example shape."""
    from dataclasses import replace

    from bfn.data.registry import REGISTRY

    spec = REGISTRY[cfg.data.name].spec
    bins = cfg.data.options.get("bins", spec.num_bins) if spec.kind == "discretized" else None
    return replace(spec, shape=shape, num_bins=bins)


def convert(state: dict[str, Any], *, preset: str | None = None, filename: str | None = None) -> Imported:
    """Map an official state dict onto a bfn model: every key and shape checked, one line naming the first
    problem (CheckpointError)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError("the file does not hold a state dict (names -> tensors); give the *_ema.pt file the "
                              "official code saves")
    kind = detect(state)
    kwargs, shape, out_g = infer(kind, state)
    name = choose_preset(kind, out_g, preset, filename)
    cfg = load_config(name)
    cfg.model.network.kwargs = {**cfg.model.network.kwargs, **kwargs}
    data = data_spec(cfg, shape)
    try:
        model = build_model(cfg.model, data)
    except ConfigError as err:
        raise CheckpointError(f"cannot build the {NETWORK[kind]} these weights describe ({err})") from None
    assert isinstance(model, BFN), "the paper presets build BFNs"
    if kind == "cifar10" and out_g != model.flow.output_features:
        raise CheckpointError(f"the network emits {out_g} number(s) per channel but preset {name} needs "
                              f"{model.flow.output_features}; use a {'discretized' if out_g == 2 else 'continuous'} "
                              "CIFAR-10 preset")
    want = {k[len(OUR_PREFIX):]: v for k, v in model.state_dict().items() if k.startswith(OUR_PREFIX)}
    mapped, dropped = {}, []
    for key, value in state.items():
        if key in UNUSED_BUFFERS:
            dropped.append(key)
            continue
        ours = key[len(PREFIX):] if key.startswith(PREFIX) else None
        if ours not in want:
            raise CheckpointError(f"unknown key {key} (shape {list(value.shape)}) for the {NETWORK[kind]} of preset "
                                  f"{name}; the checkpoint is not an unmodified official {kind} model")
        if tuple(value.shape) != tuple(want[ours].shape):
            raise CheckpointError(f"{key} has shape {list(value.shape)}, expected {list(want[ours].shape)} for the "
                                  f"{NETWORK[kind]} of preset {name}")
        mapped[OUR_PREFIX + ours] = value.to(want[ours].dtype)
    missing = [k for k in want if OUR_PREFIX + k not in mapped]
    if missing:
        raise CheckpointError(f"the checkpoint lacks {PREFIX}{missing[0]} (shape {list(want[missing[0]].shape)}), "
                              f"which the {NETWORK[kind]} of preset {name} needs")
    bad = next((k for k, v in mapped.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{PREFIX}{bad[len(OUR_PREFIX):]} holds NaN or Inf values")
    model.load_state_dict(mapped)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    return Imported(config=cfg, model=model, kind=kind, preset=name, parameters=params, dropped=dropped)
