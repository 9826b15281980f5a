"""`bfn train DATA` for a user's .npy/.npz/.csv file or image folder: a run config that fits the data, chosen from what
the array shows (layout, data type, bins/classes, labels) and stated in one line; any `key=value` changes it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bfn.config import RunConfig, merge_overrides
from bfn.errors import ConfigError

IMAGE_SUFFIXES = (".png",)
OPTION_PREFIX = "data.options."


def is_own_data(source: str) -> bool:
    """Whether `bfn train SOURCE` names user data: an .npy/.npz/.csv/.tsv file, or a folder of PNG images (directly
    or in class subfolders) without a run's config.yaml."""
    from bfn.data.arrays import DATA_SUFFIXES

    path = Path(source)
    if path.suffix.lower() in DATA_SUFFIXES:
        return True
    if not path.is_dir() or (path / "config.yaml").exists():
        return False
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.glob("*")) or \
        any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.glob("*/*"))


def own_data_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, str]:
    """The run config for the data at `source` and the one line saying what was inferred.

    Options given as `data.options.KEY=VALUE` override the inference (layout, kind, num_bins, num_classes, values,
    low, high); any other `key=value` overrides the chosen config (network, steps, ...)."""
    from bfn.data.arrays import array_format, read_user_array, split_indices

    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"no such file or folder: {source}; give a .npy/.npz/.csv file, an image folder, a preset "
                          "or a .yaml config")
    base = RunConfig()
    base.name = path.stem if path.is_file() else path.name
    base.description = f"your data: {path}"
    base.data.name = "array"
    base.data.options = {"path": str(path)}
    declared = merge_overrides(base, overrides)
    if declared.data.name != "array":
        raise ConfigError("data.name cannot be changed when training on a file; give the file or the dataset, "
                          "not both")
    options = {k: v for k, v in declared.data.options.items() if k != "path"}
    x, labels, n_train = read_user_array(path)
    fmt = array_format(x, path.is_dir(), options)
    fmt.to_model(x)  # every value checked now: a mistake is reported before anything is built
    shape = _model_shape(x.shape, fmt.layout)
    n = x.shape[0]
    n_fit = n_train if n_train is not None else len(split_indices(n, "train"))
    auto = _auto_settings(fmt.kind, fmt.layout, shape, n_fit, num_classes=len(fmt.values or []))
    cfg = merge_overrides(base, auto)
    cfg.data.options = {"path": str(path), **fmt.options()}
    cfg = merge_overrides(cfg, [o for o in overrides if not o.startswith(OPTION_PREFIX)])
    return cfg, summary(path, x, labels, n_train, fmt, cfg)


def resolve_array_config(cfg: RunConfig) -> tuple[RunConfig, str]:
    """A config with `data.name=array` (e.g. a preset with `data.name=array data.options.path=...`): its data
    options completed with what is inferred from the file (so config.yaml records the exact format), and the one
    line that says what was inferred."""
    from bfn.data.arrays import array_format, read_user_array

    options = dict(cfg.data.options)
    path = options.pop("path", None)
    x, labels, n_train = read_user_array(path)
    fmt = array_format(x, Path(str(path)).expanduser().is_dir(), options)
    fmt.to_model(x)
    cfg.data.options = {**cfg.data.options, **fmt.options()}
    return cfg, summary(Path(str(path)), x, labels, n_train, fmt, cfg)


def _model_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    from bfn.data.infer import model_shape

    return model_shape(tuple(shape), layout)


def _auto_settings(kind: str, layout: str, shape: tuple[int, ...], n_train: int, *, num_classes: int) -> list[str]:
    """Overrides for the data's shape: a padded U-Net for images, a Transformer for discrete sequences, else an
    MLP; a batch no larger than the training split."""
    from bfn.data.infer import MIN_SEQUENCE, is_image_layout

    out = [f"train.batch_size={max(1, min(64, n_train))}", "train.lr=0.001", "train.warmup_steps=100",
           "train.log_every=50", "sample.steps=100", "sample.n=64"]
    if is_image_layout(layout):
        size = max(shape[1:])
        mult = "[1,2,2]" if size <= 32 else "[1,2,2,2]"
        out += ["model.network.name=unet", "model.layout=image",
                f"model.network.kwargs={{base_channels: 32, channel_mult: {mult}, num_res_blocks: 1, "
                "attention_resolutions: [], pad: true}"]
        if kind != "discrete":
            out.append("model.flow.sigma_1=0.001")
    elif kind == "discrete" and len(shape) == 1 and shape[0] >= MIN_SEQUENCE:
        out += ["model.network.name=transformer", "model.layout=sequence",
                "model.network.kwargs={dim: 128, depth: 3, heads: 4, local_kernel: 3}"]
    else:
        # an MLP step is cheap (~8,000 examples/s on one core): 10,000 steps take about a minute and put 2-D
        # samples on the data (two moons: 2,000 steps left them scattered, test NLL 0.67 -> -0.26 nats)
        out += ["model.network.name=mlp", "model.layout=flat", "model.network.kwargs={hidden: 256, depth: 3}",
                "train.steps=10000"]
        if kind == "continuous":
            out.append("model.flow.sigma_1=0.01")
    if kind == "discrete":  # beta(1) = 3 for K = 2 (binarized MNIST); 3 / sqrt(K) gives text8's 0.58 for K = 27
        out.append(f"model.flow.beta_1={3.0 if num_classes <= 2 else round(3.0 / math.sqrt(num_classes), 3)}")
    return out


def summary(path: Path, x: Any, labels: Any, n_train: int | None, fmt: Any, cfg: RunConfig) -> str:
    """One line: what the file holds, what bfn made of it, how to change it."""
    n = x.shape[0]
    what = {"N": "scalars", "ND": "rows", "NHW": "grey images (N, H, W)", "NHWC": "images, channels last (N, H, W, C)",
            "NCHW": "images, channels first (N, C, H, W)"}[fmt.layout]
    if fmt.layout == "ND" and fmt.kind == "discrete" and cfg.model.layout == "sequence":
        what = "sequences (N, L)"
    lab = "no labels" if labels is None else (
        f"labels 0..{int(labels.max())}" + ("" if cfg.model.conditional else " (model.conditional=true uses them)"))
    split = (f"the file's split {n_train}/{n - n_train}" if n_train is not None
             else "a seeded 90/10 train/test split")
    change = ["data.options.kind=continuous|discretized|discrete"]
    if fmt.kind == "discretized":
        change.append("data.options.num_bins=K")
    if len(x.shape) == 4:
        change.append("data.options.layout=NCHW|NHWC")
    return (f"{path.name}: {n} {what} of shape {tuple(x.shape[1:])}, {x.dtype}; {fmt.describe()}; {lab}; {split}; "
            f"network {cfg.model.network.name}. To change: {', '.join(change)}")
