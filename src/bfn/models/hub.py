"""Build models from configs, and save/load them as `config.json` + `model.safetensors` (Hugging Face layout)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bfn.config import FlowConfig, ModelConfig, from_dict
from bfn.data.spec import DataSpec
from bfn.errors import CheckpointError, ConfigError, first_line
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.flows.base import BayesianFlow
from bfn.models.base import GenerativeModel
from bfn.models.layout import Layout, check_layout, default_layout
from bfn.models.registry import family_builder
from bfn.utils.io import atomic_write, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIGEST_KEY = "bfn_sha256"  # safetensors metadata: SHA-256 of the tensors, checked on load


def build_flow(cfg: FlowConfig, data: DataSpec) -> BayesianFlow:
    """The flow for `data`; a `kind` that contradicts the dataset is a ConfigError."""
    kind = data.kind if cfg.kind == "auto" else cfg.kind
    binned_as_continuous = kind == "continuous" and data.kind == "discretized"  # e.g. CIFAR-10 "continuous"
    if kind != data.kind and not binned_as_continuous:
        raise ConfigError(f"model.flow.kind={kind} does not match the dataset's type {data.kind}; "
                          "drop the override or choose a matching dataset")
    if kind == "continuous":
        x_range = cfg.x_range
        return ContinuousFlow(sigma_1=cfg.sigma_1, t_min=cfg.t_min, official=cfg.official,
                              recon_bins=(cfg.num_bins or data.num_bins) if binned_as_continuous else None,
                              recon_std=cfg.recon_std or None, x_range=(float(x_range[0]), float(x_range[1])))
    if kind == "discretized":
        return DiscretizedFlow(num_bins=cfg.num_bins or data.num_bins or 16, sigma_1=cfg.sigma_1, t_min=cfg.t_min,
                               official=cfg.official)
    return DiscreteFlow(num_classes=cfg.num_classes or data.num_classes or 2, beta_1=cfg.beta_1)


def network_shapes(layout: str, data: DataSpec, f_in: int, f_out: int) -> dict[str, Any]:
    """Constructor arguments fixed by the data and the model (the rest comes from the config)."""
    if layout == "image":
        c, h, _ = data.shape
        return {"in_channels": c * f_in, "out_channels": c * f_out, "image_size": h}
    if layout == "sequence":
        return {"in_features": f_in, "out_features": f_out, "seq_len": data.shape[0]}
    return {"in_features": data.dims * f_in, "out_features": data.dims * f_out}


def default_network(cfg: ModelConfig, data: DataSpec, f_in: int, f_out: int) -> tuple[Layout, nn.Module]:
    """(layout, network) of a model config for `data`, with f_in / f_out features per variable in and out: the
    registry network `cfg.network.name` with the config's arguments plus the shapes the data fix."""
    from bfn.networks import build_network

    layout: Layout = default_layout(data.shape, cfg.network.name) if cfg.layout == "auto" else cfg.layout
    if cfg.conditional and not data.num_labels:
        raise ConfigError("model.conditional=true needs a labelled dataset (e.g. mnist-binarized)")
    check_layout(cfg.network.name, layout, data.shape)
    kwargs = dict(cfg.network.kwargs)
    kwargs.update(network_shapes(layout, data, f_in, f_out))
    if cfg.conditional:
        kwargs["num_classes"] = data.num_labels
    return layout, build_network(cfg.network.name, **kwargs)


def build_model(cfg: ModelConfig, data: DataSpec) -> GenerativeModel:
    """The generative model of family `cfg.type` (`bfn.models.registry.FAMILIES`) for `data`, ready to train."""
    model = family_builder(cfg.type)(cfg, data)
    model.config = {"model": asdict(cfg), "data": data.to_dict()}
    return model


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of CPU tensors, in name order: detects any damaged byte."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_pretrained(model: GenerativeModel, directory: str | os.PathLike, *,
                    extra: dict[str, Any] | None = None) -> None:
    """Write `config.json` and `model.safetensors` (the given module's weights, with the SHA-256 of the tensors in
    the safetensors metadata, checked by `from_pretrained`) atomically."""
    directory = Path(directory)
    config = dict(model.config)
    if extra:
        config.update(extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", DIGEST_KEY: tensors_digest(state)}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=metadata))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2))


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory} does not exist or is not a folder; give a run directory written by "
                              "`bfn train` (it holds config.json and model.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"{path} not found; give a run directory written by `bfn train` "
                              "(it holds config.json and model.safetensors)")
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is not valid JSON ({err.msg if hasattr(err, 'msg') else err}); "
                              "the run directory is corrupt, retrain or restore it") from None


def _description(path: Path, raw: Any) -> tuple[ModelConfig, DataSpec]:
    """The model config and data description of a parsed config.json, checked (CheckpointError otherwise)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or not isinstance(raw.get("data"), dict):
        raise CheckpointError(f"{path} lacks the model/data description; it was not written by bfn or is damaged, "
                              "restore it or retrain")
    data = DataSpec.from_dict(raw["data"], where=str(path))
    try:
        model_cfg = from_dict({"model": raw["model"]}).model
    except ConfigError as err:
        raise CheckpointError(f"{path} holds an invalid model config ({err}); it was not written by bfn or is "
                              "damaged, restore it or retrain") from None
    return model_cfg, data


def _build(cfg: ModelConfig, data: DataSpec, path: Path) -> GenerativeModel:
    """The model a config.json describes; a config that passes the schema but cannot build a network is a
    CheckpointError."""
    try:
        return build_model(cfg, data)
    except (ConfigError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        first = first_line(err, 150)
        raise CheckpointError(f"{path} describes a model that cannot be built ({first}); restore it or "
                              "retrain") from None


def _skeleton(cfg: ModelConfig, data: DataSpec) -> GenerativeModel | None:
    """The model on the meta device (no memory spent), or None where it cannot be built there (e.g. a DDPM,
    whose schedule is computed on real tensors); the real build then reports any problem."""
    try:
        with torch.device("meta"):
            return build_model(cfg, data)
    except Exception:  # best effort only
        return None


def _header(weights: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata from the safetensors header, without reading the tensors."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights} is truncated or corrupt ({first_line(err, 120)}); "
                              "restore it or retrain") from None


def _check_shapes(weights: Path, want: dict[str, tuple[int, ...]], have: dict[str, tuple[int, ...]]) -> None:
    """Weights and config.json must describe the same tensors: one line naming the first difference."""
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unexpected:
        first = f"{missing[0]} is missing" if missing else f"{unexpected[0]} is unexpected"
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME}: {len(missing)} missing and "
                              f"{len(unexpected)} unexpected tensors ({first}); the two files come from different "
                              "runs")
    for name in sorted(want):
        if want[name] != have[name]:
            raise CheckpointError(f"{weights} does not match {CONFIG_NAME}: {name} has shape {list(have[name])} in "
                                  f"the weights but {list(want[name])} in the config; the two files come from "
                                  "different runs")


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> GenerativeModel:
    """Load a model saved by `save_pretrained` (or a `bfn train` run directory): safetensors only, no pickle.

    The weights are checked against config.json before any memory is spent on the model (shapes from the
    safetensors header against the model built on the meta device), and against their SHA-256 digest; every
    mismatch or damage is a one-line CheckpointError."""
    directory = Path(directory)
    raw = read_model_config(directory)
    model_cfg, data = _description(directory / CONFIG_NAME, raw)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; the run has no exported weights yet (train longer or resume)")
    shapes, metadata = _header(weights)
    skeleton = _skeleton(model_cfg, data)
    if skeleton is not None:
        _check_shapes(weights, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, shapes)
    model = _build(model_cfg, data, directory / CONFIG_NAME)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights} is truncated or corrupt ({first_line(err, 120)}); "
                              "restore it or retrain") from None
    digest = metadata.get(DIGEST_KEY)
    if digest is not None and digest != tensors_digest(state):
        raise CheckpointError(f"{weights} is corrupt (its tensors do not match their SHA-256 checksum); restore it "
                              "or retrain")
    _check_shapes(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                  {k: tuple(v.shape) for k, v in state.items()})
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{weights} holds NaN or Inf values in {bad}; restore an earlier checkpoint or "
                              "retrain")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME} ({str(err).splitlines()[-1].strip()})") from None
    for key in ("step", "distilled"):  # what the weights are: training step, distillation record (bfn distill)
        if key in raw:
            model.config[key] = raw[key]
    return model.to(device).eval()
