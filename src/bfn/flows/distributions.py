"""Output distributions p_O(x | theta; t) of Bayesian Flow Networks, one small class per data type.

Each class offers the same surface: `sample(generator)` (data format), `mode`, `mean` (in the sender's space:
x-hat for continuous data, k-hat for discretized data, the class probabilities for discrete data) and, where it
is defined, `log_prob(x)` per variable.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bfn.utils.binned import bin_centres, bin_index, binned_gaussian_log_probs
from bfn.utils.tensors import rand

__all__ = ["Categorical", "DiscretizedGaussian", "PointMass", "bin_centres", "bin_index", "sample_categorical"]

# Bins of probability below this are scored by density times bin width by the official BFN code.
OFFICIAL_MIN_PROB = 1e-5

# Logit of the impossible classes of an observed variable: exp(-1e4) is exactly 0 in float32 and float64.
OBSERVED_LOGIT = -1e4


class PointMass:
    """Continuous data: p_O is a delta at the network's estimate x-hat (Graves et al. 2023, §4.3)."""

    def __init__(self, x_hat: Tensor) -> None:
        self.x_hat = x_hat

    @property
    def mean(self) -> Tensor:
        return self.x_hat

    @property
    def mode(self) -> Tensor:
        return self.x_hat

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.x_hat

    def observed(self, x: Tensor, mask: Tensor) -> PointMass:
        """The same distribution with the variables where `mask` [B, *S] is true fixed to the values x."""
        return PointMass(torch.where(mask, x.to(self.x_hat.dtype), self.x_hat))


class DiscretizedGaussian:
    """Discretised data: a Gaussian N(mu_x, sigma_x^2) integrated over K bins on [-1, 1], with the first
    and last bin extended to -inf and +inf (the paper's clipping, Graves et al. 2023, §5.3).

    Args:
        mean: mu_x, shape [B, *S].
        std: sigma_x, shape [B, *S].
        num_bins: K.
    """

    def __init__(self, mean: Tensor, std: Tensor, num_bins: int, *, min_prob: float = 0.0) -> None:
        self.num_bins = num_bins
        self.gaussian = (mean, std)
        self.min_prob = min_prob
        self.centres = bin_centres(num_bins, device=mean.device, dtype=mean.dtype)  # [K]
        # ln p_O(k), float64 [B, *S, K], log-CDF differences (bfn.utils.binned): finite however far the tail
        self.log_probs = binned_gaussian_log_probs(mean, std, bin_centres(num_bins, dtype=torch.float64))
        if min_prob > 0:  # the official code's float32 CDF differences, computed once (mean, sample, log_prob)
            self._official = self._official_probs()

    @property
    def probs(self) -> Tensor:
        """p_O(k) in the mean's dtype, [B, *S, K] (with `min_prob` > 0: the official code's float32 values)."""
        if self.min_prob > 0:
            return self._official
        return self.log_probs.exp().to(self.centres.dtype)

    @property
    def mean(self) -> Tensor:
        """k-hat = sum_k p_O(k) k_c (Graves et al. 2023, §5.4)."""
        return (self.probs * self.centres).sum(-1)

    @property
    def mode(self) -> Tensor:
        return self.centres[self.log_probs.argmax(-1)]

    def log_prob(self, x: Tensor) -> Tensor:
        """ln p_O(x) per variable for x at bin centres, float64 [B, *S] (no floor: a bound stays a bound).

        With `min_prob` > 0 (the official code's numerics, `model.flow.official`): probabilities are float32 erf
        differences, and a bin of probability below `min_prob` is scored by density times bin width,
        ln N(x | mu, sigma^2) + ln(2/K), as the official code does; floored at 1e-10 otherwise (not a bound)."""
        index = bin_index(x, self.num_bins)
        if self.min_prob <= 0:
            return self.log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        p = self._official.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        mean, std = self.gaussian
        centre = self.centres[index]
        log_density = (-0.5 * ((centre - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
                       + math.log(2 / self.num_bins))
        return torch.where(p < self.min_prob, log_density, p.clamp_min(1e-10).log())

    def _official_probs(self) -> Tensor:
        """Bin probabilities as the official code computes them: float32 differences of the Gaussian CDF."""
        mean, std = self.gaussian
        edges = self.centres[1:] - 1.0 / self.num_bins  # the K-1 inner edges
        cdf = 0.5 * (1 + torch.erf((edges - mean.unsqueeze(-1)) / std.unsqueeze(-1) / math.sqrt(2)))
        zeros = torch.zeros_like(cdf[..., :1])
        cdf = torch.cat([zeros, cdf, torch.ones_like(zeros)], dim=-1)  # [B, *S, K+1]
        return (cdf[..., 1:] - cdf[..., :-1]).clamp_min(0)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.centres[sample_categorical(self.probs, generator)]

    def observed(self, x: Tensor, mask: Tensor) -> DiscretizedGaussian:
        """A copy with the variables where `mask` [B, *S] is true fixed to the bins of x (all mass on one bin)."""
        out = copy.copy(self)
        one_hot = F.one_hot(bin_index(x, self.num_bins), self.num_bins).bool()
        fixed = torch.zeros_like(self.log_probs).masked_fill(~one_hot, -math.inf)  # ln of a one-hot
        out.log_probs = torch.where(mask.unsqueeze(-1), fixed, self.log_probs)
        out.min_prob = 0.0  # the observed copy is read through log_probs, whatever numerics made them
        return out


class Categorical:
    """Discrete data: independent categoricals over K classes from logits (Graves et al. 2023, §6.3)."""

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits  # [B, *S, K]

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(-1)

    @property
    def mean(self) -> Tensor:
        """e-hat = sum_k p_O(k) e_k: the expected one-hot vector (Graves et al. 2023, §6.4)."""
        return self.probs

    @property
    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.logits, -1).gather(-1, x.long().unsqueeze(-1)).squeeze(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return sample_categorical(self.probs, generator)

    def observed(self, x: Tensor, mask: Tensor) -> Categorical:
        """The same distribution with the variables where `mask` [B, *S] is true fixed to the classes x."""
        fixed = torch.full_like(self.logits, OBSERVED_LOGIT).scatter(-1, x.long().unsqueeze(-1), 0.0)
        return Categorical(torch.where(mask.unsqueeze(-1), fixed, self.logits))


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one class index per row of `probs` [..., K] by inverting the CDF with one uniform each."""
    u = rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    idx = (u * cdf[..., -1:] > cdf).sum(-1)
    return idx.clamp_max(probs.shape[-1] - 1)
