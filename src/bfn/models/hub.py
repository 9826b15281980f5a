"""Build models from configs, and save/load them as `config.json` + `model.safetensors` (Hugging Face layout)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bfn.config import FlowConfig, ModelConfig, from_dict
from bfn.errors import CheckpointError, ConfigError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.flows.base import BayesianFlow
from bfn.models.layout import default_layout

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class DataInfo:
    """What a model must know of its data: type, shape of one example, classes/bins, number of labels."""

    kind: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    num_bins: int | None = None
    num_labels: int | None = None


def build_flow(cfg: FlowConfig, data: DataInfo) -> BayesianFlow:
    """The flow for `data`; a `kind` that contradicts the dataset is a ConfigError."""
    kind = data.kind if cfg.kind == "auto" else cfg.kind
    if kind != data.kind:
        raise ConfigError(f"model.flow.kind={kind} does not match the dataset's type {data.kind}; "
                          "drop the override or choose a matching dataset")
    if kind == "continuous":
        return ContinuousFlow(sigma_1=cfg.sigma_1, t_min=cfg.t_min)
    if kind == "discretized":
        return DiscretizedFlow(num_bins=cfg.num_bins or data.num_bins or 16, sigma_1=cfg.sigma_1, t_min=cfg.t_min)
    return DiscreteFlow(num_classes=cfg.num_classes or data.num_classes or 2, beta_1=cfg.beta_1)


def network_shapes(name: str, layout: str, data: DataInfo, f_in: int, f_out: int) -> dict[str, Any]:
    """Constructor arguments fixed by the data and the flow (the rest comes from the config)."""
    if layout == "image":
        c, h, _ = data.shape
        return {"in_channels": c * f_in, "out_channels": c * f_out, "image_size": h}
    if layout == "sequence":
        return {"in_features": f_in, "out_features": f_out, "seq_len": data.shape[0]}
    d = 1
    for s in data.shape:
        d *= s
    return {"in_features": d * f_in, "out_features": d * f_out}


def build_model(cfg: ModelConfig, data: DataInfo) -> nn.Module:
    """A generative model (BFN or DDPM) with its network, ready to train, from a model config."""
    from bfn.networks import build_network

    layout = default_layout(data.shape, cfg.network.name) if cfg.layout == "auto" else cfg.layout
    num_labels = data.num_labels if cfg.conditional else None
    if cfg.conditional and not data.num_labels:
        raise ConfigError("model.conditional=true needs a labelled dataset (e.g. mnist-binarized)")
    if cfg.type == "bfn":
        from bfn.models.bfn import BFN

        flow = build_flow(cfg.flow, data)
        f_in, f_out = flow.input_features, flow.output_features
    else:
        from bfn.models.ddpm import DDPM, ddpm_features

        f_in, f_out = ddpm_features(data)
    kwargs = dict(cfg.network.kwargs)
    kwargs.update(network_shapes(cfg.network.name, layout, data, f_in, f_out))
    if num_labels:
        kwargs["num_classes"] = num_labels
    network = build_network(cfg.network.name, **kwargs)
    if cfg.type == "bfn":
        loss = cfg.loss if cfg.loss == "continuous" else int(cfg.loss)
        model: nn.Module = BFN(network, flow, data_shape=data.shape, layout=layout, num_labels=num_labels,
                               loss=loss)
    else:
        model = DDPM(network, cfg.ddpm, data_kind=data.kind, num_bins=data.num_bins, num_classes=data.num_classes,
                     data_shape=data.shape,
                     layout=layout, num_labels=num_labels)
    model.config = {"model": asdict(cfg), "data": asdict(data)}
    return model


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temp file in the same folder, fsync, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    _atomic_write(Path(path), write)


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    """Write `config.json` and `model.safetensors` (the given module's weights) atomically."""
    directory = Path(directory)
    config = dict(model.config)
    if extra:
        config.update(extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2))


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found; give a run directory written by `bfn train` "
                              "(it holds config.json and model.safetensors)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg if hasattr(err, 'msg') else err}); "
                              "the run directory is corrupt, retrain or restore it") from None


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by `save_pretrained` (or a `bfn train` run directory): safetensors only, no pickle."""
    directory = Path(directory)
    raw = read_model_config(directory)
    try:
        model_cfg = from_dict({"model": raw["model"]}).model
        d = raw["data"]
        data = DataInfo(kind=d["kind"], shape=tuple(d["shape"]), num_classes=d.get("num_classes"),
                        num_bins=d.get("num_bins"), num_labels=d.get("num_labels"))
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / CONFIG_NAME} lacks the model/data description ({err}); "
                              "it was not written by bfn") from None
    model = build_model(model_cfg, data)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; the run has no exported weights yet (train longer or resume)")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is truncated or corrupt ({str(err).splitlines()[0]}); "
                              "restore it or retrain") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME}: {len(missing)} missing and "
                              f"{len(unexpected)} unexpected tensors; the two files come from different runs")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME} ({str(err).splitlines()[-1].strip()})") from None
    return model.to(device).eval()
