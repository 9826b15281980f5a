"""`BFN`: glue between a Bayesian flow (the math) and a network (the function approximator)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow
from bfn.models.layout import Layout, from_network, to_network
from bfn.models.validation import check_data_shape, check_labels
from bfn.samplers import Callback, get_sampler
from bfn.samplers.base import FinalChoice, check_steps
from bfn.samplers.inpaint import InpaintMethod, check_observation, observed_output_fn
from bfn.utils.tensors import rand

LossChoice = int | Literal["continuous"]


class BFN(nn.Module):
    """A Bayesian Flow Network (Graves et al. 2023): `flow` supplies every formula, `network` maps what it sees
    of the input distribution and the time t to output parameters; see §3 for the general recipe.

    Args:
        network: any module with `forward(x, t, cond=None)`, sized for this flow's input/output features.
        flow: a `ContinuousFlow`, `DiscretizedFlow` or `DiscreteFlow`.
        data_shape: shape S of one example (without batch dim), e.g. (1, 28, 28).
        layout: how [B, *S, F] reaches the network ("image", "sequence" or "flat").
        num_labels: number of class labels for conditional models (None: unconditional).
        loss: the training loss `forward` computes: "continuous" (L^inf) or a step count n (L^n).
    """

    def __init__(self, network: nn.Module, flow: BayesianFlow, *, data_shape: tuple[int, ...],
                 layout: Layout = "flat", num_labels: int | None = None, loss: LossChoice = "continuous") -> None:
        super().__init__()
        self.network = network
        self.flow = flow
        self.data_shape = tuple(int(s) for s in data_shape)
        self.layout = layout
        self.num_labels = num_labels
        self.train_loss: LossChoice = loss if loss == "continuous" else check_steps(int(loss))
        self.config: dict[str, Any] = {}  # filled by models.hub.build_model for save_pretrained

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

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
    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """The configured training loss per example, in nats, shape [B] (what the trainer minimises)."""
        return self.loss(x, loss=self.train_loss, cond=cond)

    def check_batch(self, x: Tensor) -> Tensor:
        """Validate a data batch and return it in the flow's dtype (one-line DataError otherwise)."""
        check_data_shape(x, self.data_shape)
        self.flow.validate(x)
        return x.long() if self.flow.kind == "discrete" else x.float()

    def loss(self, x: Tensor, *, loss: LossChoice = "continuous", cond: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """Per-example training loss in nats, shape [B]: the continuous-time loss L^inf at t ~ U(0, 1), or
        the n-step loss L^n at t = (i-1)/n with i ~ U{1..n} (Graves et al. 2023, §3.8 and §3.9)."""
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
    def nll(self, x: Tensor, steps: int | float | str = "inf", *, cond: Tensor | None = None,
            generator: torch.Generator | None = None) -> Tensor:
        """One-sample estimate of the negative log-likelihood bound in nats per example, shape [B]:
        L^n(x) + L^r(x) for n steps, or L^inf(x) + L^r(x) for steps = "inf" (Graves et al. 2023, §3.10)."""
        cont = steps in ("inf", "continuous") or (isinstance(steps, float) and math.isinf(steps))
        if isinstance(steps, str) and not cont:
            if not (steps.isascii() and steps.isdecimal()):
                raise ConfigError(f"steps must be a positive integer or 'inf', got {steps!r}")
            steps = int(steps)
        loss = "continuous" if cont else check_steps(steps)
        return self.loss(x, loss=loss, cond=cond, generator=generator) + self.reconstruction_loss(
            x, cond=cond, generator=generator)

    # --- sampling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int = 100, *, sampler: str = "paper", generator: torch.Generator | None = None,
               callback: Callback | None = None, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None,
               inpaint_method: InpaintMethod = "exact") -> Tensor:
        """Draw `n` samples with `steps` network evaluations (plus one for the final output distribution).

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
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"n (number of samples) must be a positive integer, got {n!r}")
        check_steps(steps)
        if guidance is not None and not math.isfinite(guidance):
            raise ConfigError(f"guidance must be a finite number, got {guidance}")
        device = self.device
        if isinstance(cond, int):
            cond = torch.full((n,), cond, device=device, dtype=torch.long)
        if cond is not None:
            cond = self.check_labels(cond, n)
        fn = get_sampler(sampler)

        def output_fn(theta: Any, t: Tensor) -> Any:
            return self.output_distribution(theta, t, cond, guidance)

        if inpaint is not None:
            known, mask = check_observation(*inpaint, (n, *self.data_shape))
            known = self.check_batch(known.to(device))
            output_fn = observed_output_fn(output_fn, known, mask.to(device), inpaint_method)
        return fn(self.flow, output_fn, (n, *self.data_shape), steps, generator=generator, callback=callback,
                  device=device, final=final)

    def check_labels(self, cond: Tensor, batch: int | None = None) -> Tensor:
        """Validated labels [batch] as int64 (ConfigError otherwise)."""
        return check_labels(cond, self.num_labels, batch)
