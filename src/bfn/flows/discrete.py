"""Bayesian flow for discrete data: K classes per variable (Graves et al. 2023, §6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bfn.errors import ConfigError, DataError
from bfn.flows.base import BayesianFlow
from bfn.flows.distributions import OBSERVED_LOGIT, Categorical
from bfn.utils.stratified import stratified_normal
from bfn.utils.tensors import append_dims, randn, sum_except_batch


class DiscreteFlow(BayesianFlow):
    """Discrete data with beta(t) = beta_1 t^2 (§6.8).

    The input parameters theta (class probabilities) are carried as log-probabilities up to a constant
    ("logits"), so that the Bayesian update theta' proportional to exp(y) theta is an addition and never
    overflows. For K = 2 the network sees and emits one value per variable.

    Args:
        num_classes: K.
        beta_1: final accuracy beta(1) (the official MNIST config uses 3^2 = 9, text8 0.75^2 = 0.5625).
    """

    kind = "discrete"

    num_classes: int

    def __init__(self, *, num_classes: int = 2, beta_1: float = 3.0) -> None:
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        if beta_1 <= 0:
            raise ConfigError(f"beta_1 must be positive, got {beta_1}")
        self.num_classes = int(num_classes)
        self.beta_1 = float(beta_1)
        self.input_features = 1 if num_classes == 2 else num_classes
        self.output_features = 1 if num_classes == 2 else num_classes

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_1 t^2 (§6.8)."""
        return self.beta_1 * t**2

    # --- input side -------------------------------------------------------------------------------------
    def prior(self, shape: tuple[int, ...], *, device: torch.device | str | None = None) -> Tensor:
        """theta_0 = (1/K, ..., 1/K), as all-zero logits of shape [*shape, K] (§6.1)."""
        return torch.zeros(*shape, self.num_classes, device=device)

    def one_hot(self, x: Tensor) -> Tensor:
        return F.one_hot(x.long(), self.num_classes).float()

    def flow_sample(self, x: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """theta = softmax(y), y ~ N(beta(t) (K e_x - 1), beta(t) K I) (§6.7); returns y as logits."""
        beta = append_dims(self.beta(t), x.ndim + 1)
        return self.sender(self.one_hot(x), beta, generator=generator)

    def net_input(self, theta: Tensor, t: Tensor) -> Tensor:
        """Probabilities mapped to [-1, 1]; for K = 2 only that of class 1."""
        probs = theta.softmax(-1)
        if self.num_classes == 2:
            probs = probs[..., 1:]
        return 2 * probs - 1

    def sender(self, x: Tensor, alpha: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """y ~ p_S(y | x; alpha) = N(alpha (K e_x - 1), alpha K I) (§6.2).

        `x` is either class indices [B, *S] or (expected) one-hot vectors [B, *S, K] (the output-mean sampler
        passes probabilities here).
        """
        e = x if x.is_floating_point() else self.one_hot(x)
        alpha = append_dims(alpha, e.ndim) if alpha.ndim else alpha
        k = self.num_classes
        noise = randn(e.shape, generator=generator, device=e.device, dtype=e.dtype)
        return alpha * (k * e - 1) + (alpha * k).sqrt() * noise

    def update(self, theta: Tensor, y: Tensor, alpha: Tensor) -> Tensor:
        """theta' proportional to exp(y) theta (§6.1), done in log space: logits' = logits + y."""
        logits = theta + y
        return logits - logits.amax(-1, keepdim=True)  # keep logits bounded; softmax is shift invariant

    # --- Gaussian path, data format, observations (see BayesianFlow) --------------------------------------
    def path_signal_noise(self, beta: float) -> tuple[float, float]:
        """z = y, the input logits: y ~ N(beta (K e_x - 1), K beta I) (§6.7), so x0 = K e_x - 1, a_t = beta,
        s_t = sqrt(K beta)."""
        return beta, math.sqrt(self.num_classes * beta)

    def path_log_snr(self, beta: float) -> float:
        """lambda_t = 0.5 ln(beta(t) / K)."""
        return 0.5 * math.log(beta / self.num_classes) if beta > 0 else -math.inf

    def state_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape, self.num_classes)

    def state_theta(self, z: Tensor, beta: float) -> Tensor:
        """The logits are the state itself (theta = softmax(y))."""
        return z

    def state_target(self, output: Categorical, draw: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
        """K e-hat - 1 (e-hat the output probabilities), or K e_k - 1 for a class k drawn from p_O."""
        e = self.one_hot(output.sample(generator)).to(output.logits.device) if draw else output.probs
        return self.num_classes * e - 1

    @property
    def max_state_norm2(self) -> float:  # type: ignore[override]
        """|K e_x - 1|^2 = K (K - 1)."""
        return float(self.num_classes * (self.num_classes - 1))

    def observe(self, theta: Tensor, known: Tensor, mask: Tensor) -> Tensor:
        """One-hot logits on the observed class where observed (the alpha -> infinity limit of eq. 173)."""
        one_hot = torch.full_like(theta, OBSERVED_LOGIT).scatter(-1, known.long().unsqueeze(-1), 0.0)
        return torch.where(mask.unsqueeze(-1), one_hot, theta)

    # --- output side ------------------------------------------------------------------------------------
    def output_distribution(self, net_out: Tensor, theta: Tensor, t: Tensor) -> Categorical:
        """p_O(k | theta; t) = softmax(network logits) (§6.3); for K = 2 the single output is the logit of
        class 1."""
        if self.num_classes == 2:
            net_out = torch.cat([torch.zeros_like(net_out), net_out], dim=-1)
        return Categorical(net_out)

    def continuous_time_loss(self, x: Tensor, p_out: Categorical, t: Tensor) -> Tensor:
        """L^inf(x) = K beta_1 t ||e_x - e-hat(theta, t)||^2 (§6.12)."""
        sq = sum_except_batch((self.one_hot(x) - p_out.probs) ** 2)
        return self.num_classes * self.beta_1 * t * sq

    def discrete_time_loss(self, x: Tensor, p_out: Categorical, t: Tensor, n: int, *,
                           generator: torch.Generator | None = None, antithetic: bool = False,
                           strata: int = 0) -> Tensor:
        """L^n(x) = n E[ln p_S(y | x; alpha) - ln sum_k p_O(k) p_S(y | k; alpha)], y ~ p_S(. | x; alpha):
        an estimate of n KL(sender || receiver), where the receiver is a mixture over the K classes of
        K-dimensional Gaussians N(alpha (K e_k - 1), alpha K I) (§6.11), alpha = beta_1 (2t + 1/n) / n (§6.8).

        `strata` = 0: one sampled y per variable (training); with `antithetic`, the average of y and its mirror
        image about the sender mean. `strata` = M > 0: the expectation over y estimated from M draws per
        variable, still unbiased: for K = 2 the log-ratio depends on y only through d = y_x - y_other ~
        N(2 alpha, 4 alpha), and d is drawn from M equal-probability strata (`bfn.utils.stratified`); for K > 2,
        M/2 antithetic pairs (M rounded up to even)."""
        k = self.num_classes
        alpha = self.beta_1 * (2 * t.double() + 1.0 / n) / n  # beta(t + 1/n) - beta(t), float64 [B]
        if strata > 0:
            return n * sum_except_batch(self._expected_log_ratio(x, p_out, alpha, strata, generator))
        alpha = append_dims(alpha.float(), x.ndim + 1)  # [B, 1, ..., 1]
        e = self.one_hot(x)
        mean = alpha * (k * e - 1)
        noise = (alpha * k).sqrt() * randn(e.shape, generator=generator, device=e.device, dtype=e.dtype)
        log_p = F.log_softmax(p_out.logits, -1)
        ratio = self._log_ratio(x, log_p, mean + noise, alpha)
        if antithetic:
            ratio = 0.5 * (ratio + self._log_ratio(x, log_p, mean - noise, alpha))
        return n * sum_except_batch(ratio)

    def _expected_log_ratio(self, x: Tensor, p_out: Categorical, alpha: Tensor, m: int,
                            generator: torch.Generator | None) -> Tensor:
        """E_y[ln p_S(y | x) - ln p_R(y)] per variable from M draws (see `discrete_time_loss`), float64."""
        k = self.num_classes
        log_p = F.log_softmax(p_out.logits.double(), -1)  # [B, *S, K]
        a = append_dims(alpha, x.ndim)
        if k == 2:
            # ln p_S - ln p_R = y_x - logsumexp(y + ln p) = -logaddexp(ln p_x, ln p_other - d)
            lp_x = log_p.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)
            lp_other = log_p.gather(-1, 1 - x.long().unsqueeze(-1)).squeeze(-1)
            z = stratified_normal(m, tuple(x.shape), generator=generator, device=x.device)
            d = 2 * a + 2 * a.sqrt() * z  # [M, B, *S]
            return -torch.logaddexp(lp_x, lp_other - d).mean(0)
        e = self.one_hot(x).double()
        a = a.unsqueeze(-1)
        mean, std = a * (k * e - 1), (a * k).sqrt()
        total = torch.zeros(x.shape, device=x.device, dtype=torch.float64)
        pairs = (m + 1) // 2
        for _ in range(pairs):
            noise = std * randn(e.shape, generator=generator, device=e.device, dtype=torch.float64)
            total += self._log_ratio(x, log_p, mean + noise, a) + self._log_ratio(x, log_p, mean - noise, a)
        return total / (2 * pairs)

    def _log_ratio(self, x: Tensor, log_p: Tensor, y: Tensor, alpha: Tensor) -> Tensor:
        """ln p_S(y | x) - ln p_R(y) per variable. Each Gaussian N(alpha (K e_k - 1), alpha K I) has
        ln density = const(y) + y_k (expand ||y + alpha - alpha K e_k||^2), so only y_k survives."""
        log_sender = y.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)
        log_receiver = torch.logsumexp(y + log_p, dim=-1)
        return log_sender - log_receiver

    def reconstruction_loss(self, x: Tensor, p_out: Categorical) -> Tensor:
        """L^r(x) = -ln p_O(x | theta; 1) (§6.13)."""
        return -sum_except_batch(p_out.log_prob(x))

    def as_data(self, x: Tensor) -> Tensor:
        return x.long()

    def input_summary(self, theta: Tensor) -> Tensor:
        """The expected class index sum_k theta_k k under the input distribution (theta carried as logits)."""
        return _expected_class(theta.float().softmax(-1))

    def output_summary(self, p_out: Categorical) -> Tensor:
        """The expected class index sum_k p_O(k) k."""
        return _expected_class(p_out.probs.float())

    def validate(self, x: Tensor) -> None:
        self._validate_batch(x)
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise DataError("discrete data contains NaN or Inf; give integer class indices")
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise DataError(f"discrete data must hold integer class indices, got {x.dtype} with fractions; "
                            "binarize images first (e.g. the mnist-binarized dataset)")
        if x.min() < 0 or x.max() >= self.num_classes:
            raise DataError(f"class indices must lie in 0..{self.num_classes - 1} (num_classes={self.num_classes}), "
                            f"got values in [{int(x.min())}, {int(x.max())}]")



def _expected_class(probs: Tensor) -> Tensor:
    k = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    return (probs * k).sum(-1)
