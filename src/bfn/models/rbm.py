"""Binary restricted Boltzmann machine trained with persistent contrastive divergence (Tieleman 2008), its
log-likelihood estimated by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

Energy E(v, h) = -b.v - c.h - v^T W h over binary v (D visible) and h (H hidden units); p(v) = exp(-F(v)) / Z with
the free energy F(v) = -b.v - sum_j softplus(c_j + v.W_j). Conditionals: p(h_j = 1 | v) = sigmoid(c_j + v.W_j),
p(v_i = 1 | h) = sigmoid(b_i + W_i.h).

Training (PCD): the gradient of -ln p(v) is dF(v)/dtheta - E_model[dF/dtheta]; `loss` returns F(x) - mean F(v~)
per example, v~ the persistent chains after `gibbs_steps` Gibbs sweeps (drawn without a graph and kept in a
buffer), so autograd gives exactly the PCD gradient. This loss is not a likelihood (Z is unknown).

AIS (Salakhutdinov & Murray 2008, §3-4): a base RBM with W = 0, c = 0 and visible biases b_A (the logit of the
training data's pixel means, tracked during training) has ln Z_A = H ln 2 + sum_i softplus(b_A,i). The
intermediate distributions p_k(v) ∝ exp((1 - beta_k) b_A.v + beta_k b.v) prod_j (1 + exp(beta_k (c_j + v.W_j)))
run from beta_0 = 0 to beta_K = 1; a Gibbs sweep at beta_k leaves p_k invariant, and the importance weight
w = prod_k p*_k(v_{k-1}) / p*_{k-1}(v_{k-1}) has E[w] = Z / Z_A. With M chains, ln Z-hat = ln Z_A +
logsumexp(ln w) - ln M. Z-hat is unbiased, so ln Z-hat is biased low (Jensen): the NLL estimate F(x) + ln Z-hat is
a stochastic estimate that tends to UNDER-state the NLL; it is not a bound. `nll(x, steps=K)` uses K temperatures
(default 10,000) and `ais_chains` chains, computed once per set of weights and reused for every batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.models.base import Capabilities, FinalChoice, GenerativeModel, SampleCallback, SampleStep, progress_callback
from bfn.models.family_nets import option, unconditional_options
from bfn.utils.steps import parse_steps

OPTIONS = ("hidden", "gibbs_steps", "chains", "ais_chains", "ais_steps", "sample_steps")


class RBM(GenerativeModel):
    """A binary-binary RBM on binary data of any shape (flattened)."""

    family = "rbm"
    chains: Tensor
    data_mean: Tensor
    seen: Tensor

    def __init__(self, data: DataSpec, *, hidden: int = 500, gibbs_steps: int = 1, chains: int = 100,
                 ais_chains: int = 100, ais_steps: int = 10_000, sample_steps: int = 1000) -> None:
        super().__init__()
        if data.kind != "discrete" or data.classes != 2:
            raise ConfigError("the RBM models binary data (e.g. mnist-binarized); for grey levels use another family")
        self.data = data
        d = data.dims
        self.W = nn.Parameter(0.01 * torch.randn(d, hidden))
        self.b = nn.Parameter(torch.zeros(d))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.gibbs_steps = gibbs_steps
        self.ais_chains = ais_chains
        self.ais_steps = ais_steps
        self.sample_steps = sample_steps
        self.register_buffer("chains", torch.bernoulli(torch.full((chains, d), 0.5)))
        self.register_buffer("data_mean", torch.full((d,), 0.5))  # for the AIS base rate
        self.register_buffer("seen", torch.zeros(()))
        self._log_z_cache: dict[tuple, tuple[float, float]] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(likelihood="estimate", samplers=("gibbs",), default_steps=self.sample_steps,
                            nll_steps=True)

    # --- energies and conditionals ------------------------------------------------------------------------
    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + v.W_j) for v [B, D], [B]."""
        return -(v @ self.b) - F.softplus(v @ self.W + self.c).sum(-1)

    def gibbs(self, v: Tensor, generator: torch.Generator | None = None, beta: float = 1.0,
              base: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One Gibbs sweep v -> h -> v' at inverse temperature beta (base: the AIS base-rate biases); returns v' and
        p(v' = 1 | h)."""
        ph = torch.sigmoid(beta * (v @ self.W + self.c))
        h = torch.bernoulli(ph, generator=generator)
        logit = beta * (h @ self.W.T + self.b)
        if base is not None:
            logit = logit + (1 - beta) * base
        pv = torch.sigmoid(logit)
        return torch.bernoulli(pv, generator=generator), pv

    # --- training -----------------------------------------------------------------------------------------
    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """F(x) - mean F(v~) per example: its gradient is the PCD estimate of the gradient of -ln p(x)."""
        v = self.check_batch(x).flatten(1).to(self.W.dtype)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                neg = self.chains
                for _ in range(self.gibbs_steps):
                    neg, _ = self.gibbs(neg, generator)
                self.chains.copy_(neg)
                self.seen += 1
                rate = max(0.01, 1.0 / float(self.seen))
                self.data_mean.lerp_(v.mean(0), rate)
        return self.free_energy(v) - self.free_energy(self.chains.detach()).mean()

    # --- AIS ------------------------------------------------------------------------------------------------
    def base_bias(self) -> Tensor:
        m = self.data_mean.clamp(0.002, 0.998)
        return (m / (1 - m)).log()

    @torch.no_grad()
    def ais_log_z(self, steps: int | None = None, chains: int | None = None,
                  generator: torch.Generator | None = None) -> tuple[float, float]:
        """ln Z-hat by AIS with `steps` temperatures (linear in beta) and `chains` runs, and the standard error of
        ln Z-hat by the delta method (sd of w / (sqrt(M) mean w))."""
        k = steps or self.ais_steps
        m = chains or self.ais_chains
        dev, dt = self.W.device, self.W.dtype
        b_a = self.base_bias().to(dt)
        hid = self.c.numel()
        log_za = hid * math.log(2) + float(F.softplus(b_a).sum())

        def log_p_star(v: Tensor, beta: float) -> Tensor:  # ln p*_k(v); at beta = 0 it is b_A.v + H ln 2
            return (1 - beta) * (v @ b_a) + beta * (v @ self.b) + F.softplus(beta * (v @ self.W + self.c)).sum(-1)

        v = torch.bernoulli(torch.sigmoid(b_a).expand(m, -1).contiguous(), generator=generator)
        log_w = torch.zeros(m, device=dev, dtype=torch.float64)
        betas = torch.linspace(0, 1, k + 1).tolist()
        for prev, beta in zip(betas[:-1], betas[1:], strict=True):
            log_w += (log_p_star(v, beta) - log_p_star(v, prev)).double()
            if beta < 1:
                v, _ = self.gibbs(v, generator, beta=beta, base=b_a)
        log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(m)
        w = (log_w - log_w.max()).exp()
        se = float(w.std() / (math.sqrt(m) * w.mean())) if m > 1 else float("nan")
        return log_za + log_mean_w, se

    def _key(self, steps: int, chains: int) -> tuple:
        return (steps, chains, float(self.W.double().sum()), float(self.W.double().square().sum()),
                float(self.b.double().sum()), float(self.c.double().sum()), float(self.data_mean.double().sum()))

    def log_z(self, steps: int | None = None, generator: torch.Generator | None = None) -> tuple[float, float]:
        """ln Z-hat and its standard error, computed once per set of weights and step count."""
        k = steps or self.ais_steps
        key = self._key(k, self.ais_chains)
        if key not in self._log_z_cache:
            self._log_z_cache[key] = self.ais_log_z(k, self.ais_chains, generator)
        return self._log_z_cache[key]

    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """-ln p(x) estimate = F(x) + ln Z-hat (AIS with `steps` temperatures): two terms in nats."""
        try:
            steps = parse_steps(steps)  # None or "inf": the model's own number of temperatures
        except ConfigError:
            raise ConfigError(f"the RBM's nll takes steps = the number of AIS temperatures (e.g. 10000), "
                              f"got {steps!r}") from None
        v = self.check_batch(x).flatten(1).to(self.W.dtype)
        log_z, _ = self.log_z(steps, generator)
        return {"free_energy": self.free_energy(v), "ais_log_z": torch.full_like(v[:, 0], log_z)}

    def nll_name(self, steps: int | str | None = None) -> str:
        return f"AIS estimate ({parse_steps(steps) or self.ais_steps} temperatures, {self.ais_chains} chains)"

    # --- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """A Gibbs chain of `steps` sweeps (default `sample_steps`) from the AIS base-rate distribution; the
        callback gets each sweep's state and p(v = 1 | h). `final`: the last state ("sample"), p(v | h) > 1/2
        ("mode") or p(v | h) ("mean")."""
        checked, _, _ = self.check_sample_args(n, steps, sampler, cond, guidance, inpaint)
        steps = checked or self.sample_steps
        callback, close = progress_callback(callback, steps, progress, "Gibbs sampling")
        v = torch.bernoulli(torch.sigmoid(self.base_bias()).expand(n, -1).contiguous(), generator=generator)
        pv = v
        try:
            for i in range(1, steps + 1):
                v, pv = self.gibbs(v, generator)
                if callback is not None:
                    shape = (n, *self.data.shape)
                    callback(SampleStep(i=i, n=steps, t=i / steps, estimate=v.view(shape), prediction=pv.view(shape)))
        finally:
            close()
        out = {"sample": v, "mode": (pv > 0.5).float(), "mean": pv}[final]
        return out.view(n, *self.data.shape) if final == "mean" else out.long().view(n, *self.data.shape)


def build(cfg: Any, data: DataSpec) -> RBM:
    """An RBM from `cfg.options`: hidden (500), gibbs_steps (1: PCD-1), chains (100), ais_chains (100), ais_steps
    (10000), sample_steps (1000)."""
    opts = unconditional_options(cfg, OPTIONS, "rbm", "the RBM")
    kw = {name: option(opts, name, default, int, low=1) for name, default in
          (("hidden", 500), ("gibbs_steps", 1), ("chains", 100), ("ais_chains", 100), ("ais_steps", 10_000),
           ("sample_steps", 1000))}
    return RBM(data, **kw)  # type: ignore[arg-type]
