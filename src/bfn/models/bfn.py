"""`BFN`: glue between a Bayesian flow (the math) and a network (the function approximator)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow
from bfn.models.base import (
    Capabilities,
    FinalChoice,
    GenerativeModel,
    LikelihoodKind,
    SampleCallback,
    SampleStep,
    progress_callback,
)
from bfn.models.layout import Layout, from_network, to_network
from bfn.models.validation import check_data_shape
from bfn.samplers import SAMPLERS, StepInfo, get_sampler
from bfn.samplers.base import check_steps
from bfn.samplers.inpaint import InpaintMethod, check_observation, observed_output_fn
from bfn.utils.steps import parse_steps
from bfn.utils.tensors import rand

LossChoice = int | Literal["continuous"]


class BFN(GenerativeModel):
    """A Bayesian Flow Network (Graves et al. 2023): `flow` supplies every formula, `network` maps what it sees
    of the input distribution and the time t to output parameters; see §3 for the general recipe.

    Args:
        network: any module with `forward(x, t, cond=None)`, sized for this flow's input/output features.
        flow: a `ContinuousFlow`, `DiscretizedFlow` or `DiscreteFlow`.
        data_shape: shape S of one example (without batch dim), e.g. (1, 28, 28).
        layout: how [B, *S, F] reaches the network ("image", "sequence" or "flat").
        num_labels: number of class labels for conditional models (None: unconditional).
        loss: the training loss `forward` computes: "continuous" (L^inf) or a step count n (L^n).
        data: the full data description (built from the flow, `data_shape` and `num_labels` when not given).
    """

    family = "bfn"

    def __init__(self, network: nn.Module, flow: BayesianFlow, *, data_shape: tuple[int, ...] | None = None,
                 layout: Layout = "flat", num_labels: int | None = None, loss: LossChoice = "continuous",
                 data: DataSpec | None = None) -> None:
        super().__init__()
        self.network = network
        self.flow = flow
        if data is None:
            if data_shape is None:
                raise ConfigError("BFN needs data_shape (the shape of one example) or a DataSpec")
            data = flow_data_spec(flow, tuple(data_shape), num_labels=num_labels, layout=layout)
        self.data = data
        self.data_shape = data.shape
        self.layout = layout
        self._conditional = data.num_labels is not None
        self.train_loss: LossChoice = loss if loss == "continuous" else check_steps(int(loss))
        self.config: dict[str, Any] = {}  # filled by models.hub.build_model for save_pretrained

    @property
    def capabilities(self) -> Capabilities:
        # a distilled student (bfn distill) fits its teacher's trajectories: the BFN loss no longer bounds -ln p(x)
        likelihood: LikelihoodKind = "none" if "distilled" in self.config else "bound"
        return Capabilities(likelihood=likelihood, conditional=self._conditional, guidance=self._conditional,
                            inpainting=True, samplers=tuple(SAMPLERS), default_steps=100, nll_steps=True)

    def networks(self) -> list[nn.Module]:
        return [self.network]

    def training_objective(self) -> str:
        return "L^inf (nats)" if self.train_loss == "continuous" else f"L^{self.train_loss} (nats)"

    def bayesian_flow(self) -> BayesianFlow:
        """The flow (the BFN math of this data type), for pictures of the flow itself."""
        return self.flow

    # --- the network through the flow -------------------------------------------------------------------
    def net_output(self, theta: Any, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Raw network output for input parameters theta at times t, in the flow's layout [B, *S, G]."""
        return self._run_network(to_network(self.flow.net_input(theta, t), self.layout), t, cond)

    def _run_network(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        out = self.network(x, t, cond) if cond is not None else self.network(x, t)
        return from_network(out, self.layout, self.data_shape, self.flow.output_features).float()

    def output_distribution(self, theta: Any, t: Tensor, cond: Tensor | None = None,
                            guidance: float | None = None) -> Any:
        """p_O(. | theta; t), optionally with classifier-free guidance (Ho & Salimans 2022) on the network's
        output parameters, out = (1 + w) out(theta, c) - w out(theta, null): combined logits for discrete data,
        combined mean and log-std for discretised data, combined noise prediction for continuous data. Every
        combination is again a valid output distribution. The two evaluations share one batched network call."""
        if not guidance:
            return self.flow.output_distribution(self.net_output(theta, t, cond), theta, t)
        if cond is None or self.num_labels is None:
            raise ConfigError("guidance needs a class-conditional model and a label (e.g. --label 7); "
                              "or set guidance to 0")
        x = to_network(self.flow.net_input(theta, t), self.layout)
        null = torch.full_like(cond, self.num_labels)
        both = self._run_network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
        out_cond, out_null = both.chunk(2)
        out = (1 + guidance) * out_cond - guidance * out_null
        return self.flow.output_distribution(out, theta, t)

    # --- training and likelihood ------------------------------------------------------------------------
    def check_batch(self, x: Tensor) -> Tensor:
        """Validate a data batch and return it in the flow's dtype (one-line DataError otherwise)."""
        check_data_shape(x, self.data_shape)
        self.flow.validate(x)
        return self.flow.as_data(x)

    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None,
             loss: LossChoice | None = None) -> Tensor:
        """Per-example training loss in nats, shape [B]: the continuous-time loss L^inf at t ~ U(0, 1), or
        the n-step loss L^n at t = (i-1)/n with i ~ U{1..n} (Graves et al. 2023, §3.8 and §3.9); `loss` defaults
        to the training loss of the config."""
        loss = self.train_loss if loss is None else loss
        x = self.check_batch(x)
        b = x.shape[0]
        if cond is not None:
            cond = self.check_labels(cond, b)
        u = rand((b,), generator=generator, device=x.device)
        if loss == "continuous":
            t = u
        else:
            n = check_steps(loss)
            t = (u * n).floor().clamp_max(n - 1) / n
        theta = self.flow.flow_sample(x, t, generator=generator)
        net_out = self.net_output(theta, t, cond)  # under the caller's autocast (bf16 training); float32 out
        with torch.autocast(device_type=x.device.type, enabled=False):  # the loss itself in float32
            p_out = self.flow.output_distribution(net_out, theta, t)
            if loss == "continuous":
                return self.flow.continuous_time_loss(x, p_out, t)
            return self.flow.discrete_time_loss(x, p_out, t, n, generator=generator)

    def reconstruction_loss(self, x: Tensor, *, cond: Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        """L^r(x) = -E_{p_F(theta | x; 1)} ln p_O(x | theta; 1), one-sample estimate, shape [B] (§3.10)."""
        x = self.check_batch(x)
        if cond is not None:
            cond = self.check_labels(cond, x.shape[0])
        t = torch.ones(x.shape[0], device=x.device)
        theta = self.flow.flow_sample(x, t, generator=generator)
        net_out = self.net_output(theta, t, cond)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.flow.reconstruction_loss(x, self.flow.output_distribution(net_out, theta, t))

    @torch.no_grad()
    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One-sample estimates [B] of the terms of the bound on -ln p(x) in nats (Graves et al. 2023, §3.10):
        {"L^n": n-step loss, "L^r": reconstruction loss}, or {"L^inf": ..., "L^r": ...} for steps "inf"/None."""
        if "distilled" in self.config:
            raise ConfigError("this model is a distilled student (bfn distill): the BFN loss is no bound on its "
                              "likelihood; evaluate its teacher's NLL instead")
        n = parse_steps(steps)
        name = "L^inf" if n is None else f"L^{n}"
        return {name: self.loss(x, loss="continuous" if n is None else n, cond=cond, generator=generator),
                "L^r": self.reconstruction_loss(x, cond=cond, generator=generator)}

    def nll_name(self, steps: int | str | None = None) -> str:
        n = parse_steps(steps)
        return f"L^{'inf' if n is None else n} + L^r"

    @torch.no_grad()
    def nll_bounds(self, x: Tensor, steps: Sequence[int | str], *, u: Tensor | None = None,
                   cond: Tensor | None = None, generator: torch.Generator | None = None, strata: int = 16,
                   pilot: Any = None, recon_draws: int = 3) -> dict[int | str, Tensor]:
        """Unbiased, low-variance estimates of several bounds on -ln p(x) at once, float64 nats per example [B]
        each, keyed by step count: L^n(x) + L^r(x) for an int n, L^inf(x) + L^r(x) for "inf" (§3.10).

        - L^r is estimated once and shared: it is the same term in every bound. It is the average over
          `recon_draws` draws of theta ~ p_F(theta | x; 1): with the times stratified, the one-draw L^r was the
          largest Monte Carlo noise left (for 4 bounds, 3 draws cost 7 network evaluations where `nll` costs 8).
        - The time of every term comes from the uniforms `u` [B] (default: fresh): t = u for L^inf,
          t = floor(u n) / n for L^n. Evaluation passes times stratified across the test examples (one in
          each of N equal intervals, randomly assigned; see `evaluate_nll`), each one still uniform.
        - The sender-receiver KL of L^n is averaged over `strata` stratified draws of y (0: one draw, as in
          training); see the flows' `discrete_time_loss`.
        - Every bound uses the same random numbers (the generator's state is rewound), so the estimates of two
          step counts are strongly correlated and their difference is far more precise than either.
        """
        x = self.check_batch(x)
        b = x.shape[0]
        if cond is not None:
            cond = self.check_labels(cond, b)
        if u is None:
            u = rand((b,), generator=generator, device=x.device)
        u = u.to(device=x.device, dtype=torch.float64)
        draws = max(1, int(recon_draws))
        recon = torch.stack([self.reconstruction_loss(x, cond=cond, generator=generator).double()
                             for _ in range(draws)]).mean(0)
        if generator is None:
            seed = int(torch.randint(0, 2**62, ()))
            generator = torch.Generator(device=x.device).manual_seed(seed)
        state = generator.get_state()
        out: dict[int | str, Tensor] = {}
        for s in steps:
            generator.set_state(state)  # the same noise for every bound: their differences are precise
            n = parse_steps(s)  # None: continuous time
            t = (u if n is None else (u * n).floor().clamp_max(n - 1) / n).float()
            theta = self.flow.flow_sample(x, t, generator=generator)
            net_out = self.net_output(theta, t, cond)
            with torch.autocast(device_type=x.device.type, enabled=False):
                p_out = self.flow.output_distribution(net_out, theta, t)
                if n is None:
                    term = self.flow.continuous_time_loss(x, p_out, t)
                else:
                    term = self.flow.discrete_time_loss(x, p_out, t, n, generator=generator, strata=strata)
            out[s] = term.double() + recon
        return out

    # --- sampling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None,
               inpaint_method: InpaintMethod = "exact") -> Tensor:
        """Draw `n` samples with `steps` network evaluations (default 100; plus one for the final output
        distribution) with the paper's sampler (Algorithms 3, 6, 9) or a fast solver (`bfn samplers`).

        Args:
            cond: class labels [n] (or one int for all) of a conditional model; guidance: the classifier-free
                guidance scale w (0 or None: none; see `output_distribution`).
            inpaint: (known values, mask) of one example's shape or the batch's: condition on the variables
                where mask is true (`bfn.samplers.inpaint`); they are returned unchanged.
            final: what the last step returns: "sample" (a draw from p_O, the paper), "mode" or "mean".

        Returns data-format samples [n, *data_shape]: class indices for discrete data, bin centres for
        discretised data. Exception: final="mean" on discrete data returns the expected one-hot vectors, i.e.
        the class probabilities, [n, *data_shape, K].
        """
        steps, name, labels = self.check_sample_args(n, steps, sampler, cond, guidance, inpaint)
        assert steps is not None
        if guidance is not None and not math.isfinite(guidance):
            raise ConfigError(f"guidance must be a finite number, got {guidance}")
        device = self.device
        fn = get_sampler(name)

        def plain_output(theta: Any, t: Tensor) -> Any:
            return self.output_distribution(theta, t, labels, guidance)

        output_fn: Callable[[Any, Tensor], Any] = plain_output

        if inpaint is not None:
            known, mask = check_observation(*inpaint, (n, *self.data_shape))
            known = self.check_batch(known.to(device))
            output_fn = observed_output_fn(self.flow, output_fn, known, mask.to(device), inpaint_method)
        shown, close = progress_callback(callback, steps, progress)
        try:
            return fn(self.flow, output_fn, (n, *self.data_shape), steps, generator=generator,
                      callback=None if shown is None else self._step_callback(shown), device=device, final=final)
        finally:
            close()

    def _step_callback(self, callback: SampleCallback) -> Any:
        """A sampler callback that hands `callback` ready-to-show summaries of theta and p_O (`SampleStep`)."""

        def wrapped(info: StepInfo) -> None:
            callback(SampleStep(i=info.i, n=info.n, t=info.t, estimate=self.flow.input_summary(info.theta),
                                prediction=self.flow.output_summary(info.output), state=info))

        return wrapped



def flow_data_spec(flow: BayesianFlow, shape: tuple[int, ...], *, num_labels: int | None = None, layout: str = "",
                   name: str = "") -> DataSpec:
    """The `DataSpec` of data of example shape `shape` under `flow` (its kind, classes or bins)."""
    return DataSpec(kind=flow.kind, shape=shape, num_classes=flow.num_classes,  # type: ignore[arg-type]
                    num_bins=flow.num_bins, num_labels=num_labels, layout=layout, name=name)


def build(cfg: Any, data: DataSpec) -> BFN:
    """A BFN for `data` from a model config (`bfn.config.ModelConfig`): its flow, network and loss choice."""
    from bfn.models.hub import build_flow, default_network

    flow = build_flow(cfg.flow, data)
    layout, network = default_network(cfg, data, flow.input_features, flow.output_features)
    loss = cfg.loss if cfg.loss == "continuous" else int(cfg.loss)
    labels = data.num_labels if cfg.conditional else None
    return BFN(network, flow, data=flow_data_spec(flow, data.shape, num_labels=labels, layout=layout, name=data.name),
               layout=layout, num_labels=labels, loss=loss)
