"""Typed run configuration: dataclass schemas, YAML presets shipped in the package, `key=value` overrides.

All three are merged and validated by OmegaConf structured configs; any problem becomes a one-line
`ConfigError` that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bfn.errors import ConfigError


@dataclass
class FlowConfig:
    """BFN flow; `kind`, `num_bins` and `num_classes` default to the dataset's ("auto" / 0)."""

    kind: Literal["auto", "continuous", "discretized", "discrete"] = "auto"
    sigma_1: float = 0.001  # continuous and discretized data (paper: 0.001 for CIFAR-10)
    beta_1: float = 3.0  # discrete data (official MNIST: 3^2 = 9? see presets)
    num_bins: int = 0
    num_classes: int = 0
    t_min: float = 1e-6


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
    type: Literal["bfn", "ddpm"] = "bfn"
    flow: FlowConfig = field(default_factory=FlowConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    layout: Literal["auto", "image", "sequence", "flat"] = "auto"
    loss: str = "continuous"  # "continuous" for L^inf, or a step count n (e.g. "784") for L^n
    conditional: bool = False  # class-conditional network (labels from the dataset)
    label_dropout: float = 0.1  # probability of the null label during training (classifier-free guidance)


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
    tensorboard: bool = False
    threads: int = 0  # CPU intra-op threads; 0: torch's default (one per core). Use 1 per run when runs share cores


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
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            presets = ", ".join(list_presets())
            raise ConfigError(f"config file {name_or_path!r} not found; give a preset name ({presets}) or an "
                              "existing .yaml file")
        return path.read_text()
    res = resources.files("bfn").joinpath(PRESET_DIR, f"{name_or_path}.yaml")
    if not res.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; choose one of {', '.join(list_presets())} "
                          "or pass a .yaml file")
    return res.read_text()


def _one_line(err: OmegaConfBaseException) -> str:
    return str(err).strip().splitlines()[0]


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset (or YAML file) merged over the schema defaults, then `key=value` overrides, validated."""
    schema = OmegaConf.structured(RunConfig)
    try:
        preset = OmegaConf.create(_preset_text(name_or_path))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse config {name_or_path!r}: {_one_line(err)}") from None
    return merge_overrides(_merge(schema, preset, f"config {name_or_path!r}"), overrides)


def merge_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Apply dotted `key=value` overrides (e.g. `train.steps=500`) to a config."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=500)")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides: {_one_line(err)}") from None
    return _merge(OmegaConf.structured(config), dotlist, "overrides")


def _merge(base: Any, other: Any, what: str) -> RunConfig:
    try:
        merged = OmegaConf.merge(base, other)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid {what}: {_one_line(err)}") from None
    assert isinstance(cfg, RunConfig)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Range checks that types alone cannot express."""
    t = cfg.train
    for key in ("steps", "batch_size"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"train.{key} must be positive, got {getattr(t, key)}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}")
    if len(t.betas) != 2:
        raise ConfigError(f"train.betas must hold two numbers, got {t.betas}")
    if cfg.sample.steps <= 0:
        raise ConfigError(f"sample.steps must be positive, got {cfg.sample.steps}")
    if t.threads < 0:
        raise ConfigError(f"train.threads must be 0 (torch's default) or a positive count, got {t.threads}")
    for key in ("log_every", "checkpoint_every"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"train.{key} must be a positive step count, got {getattr(t, key)}")
    if t.sample_every < 0:
        raise ConfigError(f"train.sample_every must be >= 0 (0: no periodic grids), got {t.sample_every}")
    loss = cfg.model.loss
    if loss != "continuous" and not (loss.isdigit() and int(loss) > 0):
        raise ConfigError(f"model.loss must be 'continuous' or a positive step count like 784, got {loss!r}")
    if not 0 <= cfg.model.label_dropout < 1:
        raise ConfigError(f"model.label_dropout must lie in [0, 1), got {cfg.model.label_dropout}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (for JSON/YAML files)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild and validate a RunConfig from `to_dict` output (e.g. a run's config.json)."""
    return _merge(OmegaConf.structured(RunConfig), OmegaConf.create(data), "saved config")


def to_yaml(cfg: RunConfig) -> str:
    """The fully resolved config as YAML text (saved into every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
