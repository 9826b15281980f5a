"""Typed run configuration: dataclass schemas, YAML presets shipped in the package, `key=value` overrides.

All three are merged and validated by OmegaConf structured configs; any problem becomes a one-line
`ConfigError` that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from bfn.errors import ConfigError, first_line


@dataclass
class FlowConfig:
    """BFN flow; `kind`, `num_bins` and `num_classes` default to the dataset's ("auto" / 0)."""

    kind: Literal["auto", "continuous", "discretized", "discrete"] = "auto"
    sigma_1: float = 0.001  # continuous and discretized data (paper: 0.001 for CIFAR-10)
    beta_1: float = 3.0  # discrete data (official MNIST: 3^2 = 9? see presets)
    num_bins: int = 0
    num_classes: int = 0
    t_min: float = 1e-6
    official: bool = False  # the official BFN code's numerical guards (bfn.flows: DiscretizedFlow, ContinuousFlow)
    recon_std: float = 0.0  # continuous flow on binned data: std of the discretised L^r Gaussian (0: sigma_1)
    # continuous data: the interval x-hat is clipped to (the paper's [x_min, x_max]); data outside it is refused
    x_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])


@dataclass
class DDPMConfig:
    """DDPM baseline (Ho et al. 2020)."""

    timesteps: int = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4  # linear schedule, values for T = 1000 (scaled by 1000 / T)
    beta_end: float = 0.02
    variance: Literal["small", "large"] = "small"  # sigma_t^2 of p(x_{t-1} | x_t): beta-tilde_t or beta_t
    clip_x0: bool = True  # clip the predicted x_0 to [-1, 1] (sampling and bound), as Ho et al.'s sampler


@dataclass
class NetworkConfig:
    """Architecture by registry name; `kwargs` go to its constructor (shapes are filled in for you)."""

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """The generative model: its family (`bfn.models.registry.FAMILIES`), network and family settings."""

    type: str = "bfn"  # model family: bfn, ddpm, or another registered family
    flow: FlowConfig = field(default_factory=FlowConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    layout: Literal["auto", "image", "sequence", "flat"] = "auto"
    loss: str = "continuous"  # "continuous" for L^inf, or a step count n (e.g. "784") for L^n
    conditional: bool = False  # class-conditional network (labels from the dataset)
    label_dropout: float = 0.1  # probability of the null label during training (classifier-free guidance)
    options: dict[str, Any] = field(default_factory=dict)  # settings of other families, read by their own module


@dataclass
class DataConfig:
    name: str = "mnist-binarized"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # EMA decay min(decay, (1+n)/(10+n)); false: the plain decay from step 1 (official)
    decay_vectors: bool = True  # weight decay on biases and norm scales too; false: on matrices/kernels only
    precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500  # 0 disables periodic sample grids
    checkpoint_every: int = 500
    sample_steps: int = 50
    sample_n: int = 16
    nan_policy: Literal["stop", "skip"] = "stop"
    max_bad_steps: int = 20  # with nan_policy=skip: stop after this many consecutive non-finite losses
    compile: bool = False
    max_seconds: float = 0.0  # wall-clock budget: checkpoint and stop once training has run this long (0: none)
    tensorboard: bool = False
    threads: int = 0  # CPU threads; 0: auto, the cores not busy with other jobs (see bfn.utils.threads)


@dataclass
class SampleConfig:
    steps: int = 100
    sampler: str = "paper"
    n: int = 64


@dataclass
class RunConfig:
    name: str = "run"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


PRESET_DIR = "configs"


def list_presets() -> list[str]:
    """Names of the presets shipped with bfn."""
    files = resources.files("bfn").joinpath(PRESET_DIR).iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def _preset_text(name_or_path: str) -> str:
    """The YAML text of a preset name or a .yaml path (ConfigError when there is none or it cannot be read)."""
    try:
        return _read_preset(name_or_path)
    except ConfigError:
        raise
    except (OSError, ValueError) as err:  # a name too long for the file system, an unreadable or binary file
        raise ConfigError(f"cannot read config {name_or_path[:100]!r}: {first_line(err)}; give a preset name or a "
                          "readable UTF-8 .yaml file") from None


def preset_yaml(name: str) -> str:
    """The YAML text of the shipped preset `name` (ConfigError naming the presets otherwise)."""
    if name not in list_presets():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}")
    return resources.files("bfn").joinpath(PRESET_DIR).joinpath(f"{name}.yaml").read_text()


def _read_preset(name_or_path: str) -> str:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            presets = ", ".join(list_presets())
            raise ConfigError(f"config file {name_or_path!r} not found; give a preset name ({presets}) or an "
                              "existing .yaml file")
        return path.read_text()
    res = resources.files("bfn").joinpath(PRESET_DIR).joinpath(f"{name_or_path}.yaml")
    if not res.is_file():
        if "/" in name_or_path or os.sep in name_or_path:
            raise ConfigError(f"{name_or_path!r} does not exist: it is neither a run directory, a .yaml file nor a "
                              f"preset ({', '.join(list_presets())})")
        raise ConfigError(f"unknown preset {name_or_path!r}; choose one of {', '.join(list_presets())} "
                          "or pass a .yaml file")
    return res.read_text()


def _one_line(err: BaseException) -> str:
    """The first line of an OmegaConf or YAML error, with the position of a YAML syntax error."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{err.problem}{where}"
    return first_line(err, 1000)


#: what OmegaConf raises on input it cannot parse or merge (YAML errors, and a few plain Python errors)
_PARSE_ERRORS = (OmegaConfBaseException, yaml.YAMLError, TypeError, ValueError, AssertionError)


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset (or YAML file) merged over the schema defaults, then `key=value` overrides, validated."""
    schema = OmegaConf.structured(RunConfig)
    text = _preset_text(name_or_path)
    try:
        preset = OmegaConf.create(text)
    except _PARSE_ERRORS as err:
        raise ConfigError(f"cannot parse config {name_or_path!r}: {_one_line(err)}") from None
    if not isinstance(preset, DictConfig):
        raise ConfigError(f"config {name_or_path!r} must be a YAML mapping of sections (model:, data:, train:, "
                          "...), not a list or a single value")
    return merge_overrides(_merge(schema, preset, f"config {name_or_path!r}"), overrides)


def merge_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Apply dotted `key=value` overrides (e.g. `train.steps=500`) to a config.

    `~key` removes an entry of a free-form mapping (e.g. `~data.options.bins`, `~model.network.kwargs.pad`), and
    a new `data.name` drops the previous dataset's `data.options` (they belong to that dataset)."""
    removals = [item[1:] for item in overrides if item.startswith("~")]
    overrides = [item for item in overrides if not item.startswith("~")]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=500), or ~key to "
                              "remove an entry")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
    except _PARSE_ERRORS as err:
        raise ConfigError(f"cannot parse overrides: {_one_line(err)}") from None
    base = OmegaConf.structured(config)
    try:
        new_name = OmegaConf.select(dotlist, "data.name")
    except OmegaConfBaseException:  # e.g. data=[...]: not a mapping; the merge below names the problem
        new_name = None
    if new_name is not None and new_name != config.data.name:
        base.data.options = {}
    for key in removals:
        _remove(base, key)
    return _merge(base, dotlist, "overrides")


def _remove(cfg: DictConfig, key: str) -> None:
    """Delete `key` (dotted) from a free-form mapping of `cfg` (ConfigError when it is not there)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent:
        raise ConfigError(f"cannot remove {key!r}: there is no such entry")
    if parent_key not in ("data.options", "model.network.kwargs"):
        raise ConfigError(f"cannot remove {key!r}: only entries of data.options and model.network.kwargs can be "
                          f"removed; set {key}=VALUE instead")
    with open_dict(parent):
        del parent[leaf]


def _merge(base: Any, other: Any, what: str) -> RunConfig:
    try:
        merged = OmegaConf.merge(base, other)
        cfg = OmegaConf.to_object(merged)
    except _PARSE_ERRORS as err:
        raise ConfigError(f"invalid {what}: {_one_line(err)}") from None
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"invalid {what}: not a run configuration")
    validate(cfg)
    return cfg


def _check(ok: bool, key: str, want: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {want}, got {value!r}")


def validate(cfg: RunConfig) -> None:
    """Range checks that types alone cannot express (NaN and Inf fail every one of them)."""
    t = cfg.train
    for key in ("steps", "batch_size", "log_every", "checkpoint_every", "sample_steps", "sample_n"):
        _check(getattr(t, key) > 0, f"train.{key}", "positive", getattr(t, key))
    for key in ("warmup_steps", "max_bad_steps", "sample_every", "threads"):
        _check(getattr(t, key) >= 0, f"train.{key}", ">= 0", getattr(t, key))
    _check(math.isfinite(t.max_seconds) and t.max_seconds >= 0, "train.max_seconds", "a number of seconds >= 0 "
           "(0: no limit)", t.max_seconds)
    _check(0 < t.lr <= 1, "train.lr", "in (0, 1] (AdamW: typically 1e-4 to 1e-3)", t.lr)
    _check(math.isfinite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay", "a number >= 0",
           t.weight_decay)
    _check(math.isfinite(t.grad_clip) and t.grad_clip >= 0, "train.grad_clip", "a number >= 0 (0: no clipping)",
           t.grad_clip)
    _check(0 <= t.ema_decay < 1, "train.ema_decay", "in [0, 1)", t.ema_decay)
    _check(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas", "two numbers in [0, 1)",
           t.betas)
    _check(0 <= t.seed < 2**32, "train.seed", "an integer from 0 to 2**32 - 1", t.seed)
    _check(cfg.sample.steps > 0, "sample.steps", "positive", cfg.sample.steps)
    _check(cfg.sample.n > 0, "sample.n", "positive", cfg.sample.n)
    _check(cfg.data.num_workers >= 0, "data.num_workers", ">= 0", cfg.data.num_workers)
    loss = cfg.model.loss
    _check(loss == "continuous" or (loss.isdecimal() and loss.isascii() and int(loss) > 0), "model.loss",
           "'continuous' or a positive step count like 784", loss)
    _check(0 <= cfg.model.label_dropout < 1, "model.label_dropout", "in [0, 1)", cfg.model.label_dropout)
    f = cfg.model.flow
    _check(0 < f.sigma_1 < 1, "model.flow.sigma_1", "in (0, 1)", f.sigma_1)
    _check(math.isfinite(f.beta_1) and f.beta_1 > 0, "model.flow.beta_1", "a positive number", f.beta_1)
    _check(0 <= f.t_min < 1, "model.flow.t_min", "in [0, 1)", f.t_min)
    _check(math.isfinite(f.recon_std) and f.recon_std >= 0, "model.flow.recon_std", "a number >= 0 (0: sigma_1)",
           f.recon_std)
    _check(len(f.x_range) == 2 and all(math.isfinite(v) for v in f.x_range) and f.x_range[0] < f.x_range[1],
           "model.flow.x_range", "two finite numbers [lo, hi] with lo < hi", f.x_range)
    for key in ("num_bins", "num_classes"):
        value = getattr(f, key)
        _check(value == 0 or value >= 2, f"model.flow.{key}", "0 (the dataset's) or at least 2", value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (for JSON/YAML files)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild and validate a RunConfig from `to_dict` output (e.g. a run's config.json)."""
    try:
        saved = OmegaConf.create(data)
    except _PARSE_ERRORS as err:  # e.g. a string with an unterminated "${" interpolation
        raise ConfigError(f"invalid saved config: {_one_line(err)}") from None
    return _merge(OmegaConf.structured(RunConfig), saved, "saved config")


def to_yaml(cfg: RunConfig) -> str:
    """The fully resolved config as YAML text (saved into every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
