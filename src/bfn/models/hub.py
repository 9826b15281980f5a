"""Build models from configs, and save/load them as `config.json` + `model.safetensors` (Hugging Face layout)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bfn.config import FlowConfig, ModelConfig, from_dict
from bfn.errors import CheckpointError, ConfigError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.flows.base import BayesianFlow
from bfn.models.layout import default_layout

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIGEST_KEY = "bfn_sha256"  # safetensors metadata: SHA-256 of the tensors, checked on load
KINDS = ("continuous", "discretized", "discrete")


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


def _file_mode() -> int:
    """Permissions of a new file under this process's umask (mkstemp alone would leave them at 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temp file in the same folder, fsync, then rename: never a half-written file. A kill leaves
    at worst a stray `.<name>.*.tmp` file, which `bfn train` removes when it resumes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: public name: writers elsewhere in the package (pictures, sample arrays) use it too
atomic_write = _atomic_write


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable across a power cut (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace the text file `path` atomically (see `_atomic_write`)."""
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    _atomic_write(Path(path), write)


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of CPU tensors, in name order: detects any damaged byte."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    """Write `config.json` and `model.safetensors` (the given module's weights, with the SHA-256 of the tensors in
    the safetensors metadata, checked by `from_pretrained`) atomically."""
    directory = Path(directory)
    config = dict(model.config)
    if extra:
        config.update(extra)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", DIGEST_KEY: tensors_digest(state)}
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=metadata))
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


def _description(path: Path, raw: Any) -> tuple[ModelConfig, DataInfo]:
    """The model config and data description of a parsed config.json, checked (CheckpointError otherwise)."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path} {what}; it was not written by bfn or is damaged, restore it or retrain")

    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or not isinstance(raw.get("data"), dict):
        raise bad("lacks the model/data description")
    d = raw["data"]
    shape = d.get("shape")
    if d.get("kind") not in KINDS:
        raise bad(f"names an unknown data kind {d.get('kind')!r}")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not all(_count(s, 1) for s in shape):
        raise bad(f"has an invalid data shape {shape!r}")
    counts = {k: d.get(k) for k in ("num_classes", "num_bins", "num_labels")}
    if not all(v is None or _count(v, 1) for v in counts.values()):
        raise bad(f"has invalid class/bin/label counts {counts}")
    try:
        model_cfg = from_dict({"model": raw["model"]}).model
    except ConfigError as err:
        raise bad(f"holds an invalid model config ({err})") from None
    return model_cfg, DataInfo(kind=d["kind"], shape=tuple(shape), **counts)


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _build(cfg: ModelConfig, data: DataInfo, path: Path) -> nn.Module:
    """The model a config.json describes; a config that passes the schema but cannot build a network is a
    CheckpointError."""
    try:
        return build_model(cfg, data)
    except (ConfigError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        first = str(err).strip().splitlines()[0][:150] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} describes a model that cannot be built ({first}); restore it or "
                              "retrain") from None


def _skeleton(cfg: ModelConfig, data: DataInfo) -> nn.Module | None:
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
        raise CheckpointError(f"{weights} is truncated or corrupt ({str(err).splitlines()[0][:120]}); "
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


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by `save_pretrained` (or a `bfn train` run directory): safetensors only, no pickle.

    The weights are checked against config.json before any memory is spent on the model (shapes from the
    safetensors header against the model built on the meta device), and against their SHA-256 digest; every
    mismatch or damage is a one-line CheckpointError."""
    directory = Path(directory)
    model_cfg, data = _description(directory / CONFIG_NAME, read_model_config(directory))
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
        raise CheckpointError(f"{weights} is truncated or corrupt ({str(err).splitlines()[0][:120]}); "
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
    return model.to(device).eval()
