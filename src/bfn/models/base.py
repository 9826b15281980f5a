"""The generative-model interface that every family implements (BFN, DDPM and any later one).

Trainer, evaluation, pictures, commands and comparisons use only what is declared here: no type tests, no
attribute probing of model internals. A new family is its module, its preset and one line in
`bfn.models.registry.FAMILIES`.

Conventions: a batch `x` has shape [B, *S] in the data format of `DataSpec` (class indices for discrete data, bin
centres in [-1, 1] for discretized data, real values for continuous data); per-example quantities have shape [B];
likelihood terms are in nats per example.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow
from bfn.models.validation import check_data_shape, check_labels

#: what `nll` returns: a bound on -ln p(x) (BFN, DDPM, VAE ELBO/IWAE, dequantised flow), a stochastic estimate of
#: -ln p(x) that is not a bound (an RBM's annealed importance sampling), or nothing (GANs)
LikelihoodKind = Literal["bound", "estimate", "none"]
FinalChoice = Literal["sample", "mode", "mean"]


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; commands read these flags instead of testing the model's type.

    Attributes:
        likelihood: "bound", "estimate" or "none" (see `LikelihoodKind`).
        conditional: whether `sample` and `loss` take class labels `cond`.
        guidance: whether `sample` takes a classifier-free guidance scale.
        inpainting: whether `sample` takes `inpaint=(known, mask)`.
        samplers: names `sample(sampler=...)` accepts; the first is the default.
        default_steps: the usual number of network evaluations per sample (None: one-shot generators).
        max_steps: the largest step count `sample` accepts (None: no limit).
        nll_steps: whether `nll(steps=...)` selects a bound (BFN L^n, DDPM respacing) or is ignored.
    """

    likelihood: LikelihoodKind
    conditional: bool = False
    guidance: bool = False
    inpainting: bool = False
    samplers: tuple[str, ...] = ("default",)
    default_steps: int | None = None
    max_steps: int | None = None
    nll_steps: bool = False

    @property
    def default_sampler(self) -> str:
        return self.samplers[0]


@dataclass
class SampleStep:
    """What a sampler callback receives after each step, ready to show.

    Attributes:
        i: step number, 1-based; n: number of steps; t: the step's time in [0, 1] (0 = start of generation).
        estimate: the current estimate of x [B, *S] in display units (the expected class index for discrete data,
            values on the data's scale otherwise): a BFN's input mean, a DDPM's x_t.
        prediction: the model's prediction of the final x [B, *S], same units: a BFN's output mean, a DDPM's x0-hat.
        state: the family's own raw state (a BFN's input parameters theta and output distribution), for pictures
            that need more than the two summaries; never needed by generic code.
    """

    i: int
    n: int
    t: float
    estimate: Tensor
    prediction: Tensor
    state: Any = None


SampleCallback = Callable[[SampleStep], None]


class HubMixin:
    """`from_pretrained` / `save_pretrained` / `push_to_hub` in the conventions of huggingface_hub's
    `ModelHubMixin` (and diffusers/transformers): a folder or Hub repository with `config.json`,
    `model.safetensors` and a model card. Every check of `bfn.models.hub.from_pretrained` applies."""

    config: dict[str, Any]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *,
                        device: str | torch.device = "cpu", revision: str | None = None,
                        cache_dir: str | os.PathLike[str] | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None) -> Any:
        """Load a model from a local folder (`save_pretrained`, a `bfn train` run) or a Hugging Face Hub id
        ("owner/name"; cached by huggingface_hub, so a second load works offline), in eval mode on `device`."""
        from bfn.errors import CheckpointError
        from bfn.models.hub import from_pretrained
        from bfn.models.pretrained import resolve_pretrained

        folder = resolve_pretrained(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token)
        model = from_pretrained(folder, device=device)
        if cls not in (HubMixin, GenerativeModel) and not isinstance(model, cls):
            raise CheckpointError(f"{pretrained_model_name_or_path} holds a {type(model).__name__} model, not a "
                                  f"{cls.__name__}; load it with {type(model).__name__}.from_pretrained or "
                                  "bfn.models.from_pretrained")
        return model

    def save_pretrained(self, save_directory: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None,
                        push_to_hub: bool = False, repo_id: str | None = None, **push_kwargs: Any) -> str | None:
        """Write config.json, model.safetensors (with their SHA-256) and a model card README.md into
        `save_directory`; `source`, a run folder, adds its measured numbers and sample grid to the card. With
        `push_to_hub`, also upload the folder to `repo_id` (default: the folder's name) and return the commit URL."""
        from bfn.models.pretrained import push_folder, save_with_card

        folder = save_with_card(self, save_directory, source=source, repo_id=repo_id)  # type: ignore[arg-type]
        if push_to_hub:
            return push_folder(folder, repo_id or folder.name, commit_message=push_kwargs.pop(
                "commit_message", "Upload bfn model"), private=push_kwargs.pop("private", None),
                token=push_kwargs.pop("token", None), branch=push_kwargs.pop("branch", None),
                create_pr=push_kwargs.pop("create_pr", False))
        return None

    def push_to_hub(self, repo_id: str, *, source: str | os.PathLike[str] | None = None,
                    commit_message: str = "Upload bfn model", private: bool | None = None, token: str | None = None,
                    branch: str | None = None, create_pr: bool = False) -> str:
        """Upload the model (weights, config, model card; `source` lends a run's numbers and sample grid) to the
        Hub repository `repo_id`, creating it if needed; returns the commit URL."""
        from bfn.models.pretrained import push_model

        return push_model(self, repo_id, source=source, commit_message=commit_message,  # type: ignore[arg-type]
                          private=private, token=token, branch=branch, create_pr=create_pr)


class GenerativeModel(HubMixin, nn.Module, ABC):
    """Base class of every generative model in bfn.

    Subclasses set `family` (the registry name) and `data` (a `DataSpec`), implement `capabilities`, `loss` and
    `sample`, and, when they have a likelihood, `nll_terms`. `config` holds the JSON description written next to
    the weights by `bfn.models.hub.save_pretrained`.
    """

    family: ClassVar[str] = ""
    data: DataSpec
    config: dict[str, Any]

    # --- what the model is ----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this model can do."""

    @property
    def device(self) -> torch.device:
        try:
            return next(self.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @property
    def num_labels(self) -> int | None:
        """Number of class labels of a conditional model (None for an unconditional one)."""
        return self.data.num_labels if self.capabilities.conditional else None

    def networks(self) -> list[nn.Module]:
        """The neural networks inside the model (what `--compile` compiles); default: every direct child module."""
        return list(self.children())

    def bayesian_flow(self) -> BayesianFlow | None:
        """The Bayesian flow of a BFN (for pictures of the flow itself); None for other families."""
        return None

    def compile_networks(self) -> None:
        """`torch.compile` each network in place (state-dict keys stay unchanged)."""
        for net in self.networks():
            net.compile()

    # --- training -------------------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The training objective per example, shape [B] (nats for likelihood-trained families)."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """What the trainer minimises (through DDP wrappers): `loss(x, cond=cond)`."""
        return self.loss(x, cond=cond)

    def training_objective(self) -> str:
        """What the logged training loss is, e.g. "L^inf (nats)" (reports label curves with it)."""
        return "loss"

    # --- likelihood -----------------------------------------------------------------------------------------
    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Named terms [B] of the model's likelihood bound (or estimate) in nats; their sum is `nll`."""
        raise ConfigError(f"a {self.family} model has no likelihood (it only generates samples); evaluate it "
                          "with --quality instead of --nll")

    def nll(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
            generator: torch.Generator | None = None) -> Tensor:
        """-ln p(x) bound or estimate in nats per example, shape [B]: the sum of `nll_terms`."""
        terms = self.nll_terms(x, steps, cond=cond, generator=generator)
        return torch.stack(list(terms.values())).sum(0)

    def nll_name(self, steps: int | str | None = None) -> str:
        """How the number `nll(x, steps)` is called in reports, e.g. "L^784 + L^r" or "ELBO"."""
        return "NLL"

    def nll_pilot(self, x: Tensor, steps: Sequence[int | str], *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Any:
        """Fit what the estimator of `nll_bounds` adapts to the model (e.g. an importance-sampling proposal) on
        pilot examples `x`, before the evaluation draws anything; the result goes back to `nll_bounds(...,
        pilot=...)`. Fixed before the draws it weighs, it keeps every estimate unbiased. Default: nothing."""
        return None

    def nll_bounds(self, x: Tensor, steps: Sequence[int | str], *, u: Tensor | None = None,
                   cond: Tensor | None = None, generator: torch.Generator | None = None,
                   strata: int = 16, pilot: Any = None) -> dict[int | str, Tensor]:
        """`nll` for several step counts at once, float64 nats per example [B] each, keyed by step count, as
        unbiased and with as little variance as the model can: what `bfn eval --nll` reports. `u` [B]: uniforms
        that a model may use for its one random time or step per example (evaluation stratifies them across
        examples); `strata`: draws per variable where a model averages an inner expectation; `pilot`: what
        `nll_pilot` returned. This default calls `nll` per step count with the same random numbers (the
        generator rewound); families override it."""
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(int(torch.randint(0, 2**62, ())))
        state = generator.get_state()
        out: dict[int | str, Tensor] = {}
        for s in steps:
            generator.set_state(state)
            out[s] = self.nll(x, s, cond=cond, generator=generator).double()
        return out

    # --- sampling -------------------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Draw n examples [n, *S] in the data format with `steps` network evaluations (default:
        `capabilities.default_steps`). `callback` receives a `SampleStep` after every step; `progress` shows a
        progress bar. `final`: "sample" (a draw), "mode" or "mean" of the last output distribution."""

    # --- checks shared by every family ----------------------------------------------------------------------
    def check_batch(self, x: Tensor) -> Tensor:
        """Validate a data batch against `data` (one-line DataError otherwise)."""
        check_data_shape(x, self.data.shape)
        return x

    def check_labels(self, cond: Tensor, batch: int | None = None) -> Tensor:
        """Validated labels [batch] as int64 (ConfigError otherwise)."""
        return check_labels(cond, self.num_labels, batch)

    def check_sample_args(self, n: int, steps: int | None, sampler: str | None, cond: Tensor | int | None,
                          guidance: float | None, inpaint: Any) -> tuple[int | None, str, Tensor | None]:
        """Common checks of `sample`'s arguments: returns (steps, sampler, labels [n] or None)."""
        caps = self.capabilities
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"n (number of samples) must be a positive integer, got {n!r}")
        steps = caps.default_steps if steps is None else steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        if steps is not None and caps.max_steps is not None and steps > caps.max_steps:
            raise ConfigError(f"this {self.family} model samples with at most {caps.max_steps} steps, got {steps}")
        name = sampler or caps.default_sampler
        if name not in caps.samplers:
            raise ConfigError(f"unknown sampler {name!r} for a {self.family} model; choose one of "
                              f"{', '.join(caps.samplers)}")
        if guidance and not caps.guidance:
            raise ConfigError(f"a {self.family} model does not take guidance; drop --guidance")
        if inpaint is not None and not caps.inpainting:
            raise ConfigError(f"a {self.family} model cannot inpaint; drop --inpaint")
        labels = None
        if cond is not None:
            if not caps.conditional:
                raise ConfigError("this model is unconditional; drop the label (train a -cond preset for labels)")
            if isinstance(cond, int) and not isinstance(cond, bool):
                cond = torch.full((n,), cond, dtype=torch.long)
            labels = self.check_labels(torch.as_tensor(cond), n).to(self.device)
        return steps, name, labels


def progress_callback(callback: SampleCallback | None, steps: int | None, progress: bool,
                      desc: str = "sampling") -> tuple[SampleCallback | None, Callable[[], None]]:
    """Wrap `callback` with a tqdm bar over the steps when `progress` is true; returns (callback, close)."""
    if not progress or not steps:
        return callback, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True)

    def wrapped(step: SampleStep) -> None:
        bar.update(1)
        if callback is not None:
            callback(step)

    return wrapped, bar.close
