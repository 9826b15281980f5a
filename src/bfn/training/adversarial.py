"""The critic of adversarial distillation (`bfn distill --adversarial`, `bfn.training.distill`).

A distilled student learns its teacher's probability-flow ODE, and that ODE, run with an imperfect network, ends
at a distribution a little away from the data (on grey MNIST it is 20% behind the paper's stochastic sampler at
any number of steps, benchmarks/RESULTS.md). Adversarial distillation (Sauer et al. 2023, "Adversarial Diffusion
Distillation") adds a critic that tells the student's few-step samples from training data, so the student is
pulled towards the data and not only towards the teacher's ODE.

What the critic sees (one format for real and fake, so that it cannot tell them apart by encoding alone):
* discretised data: bin centres in [-1, 1]; a fake is a draw from the student's final p_O, x = mu + sigma e
  clipped to [-1, 1] and moved to its bin centre, with the straight-through gradient of x (Bengio et al. 2013);
* discrete data: one-hot vectors, K per variable (channels K C for images); a fake is a one-hot draw from p_O
  with the straight-through gradient of the probabilities;
* continuous data: the values; a fake is the student's point estimate x-hat.

Objectives per example (d: the critic's output, a real number; Goodfellow et al. 2014, non-saturating):
  critic   softplus(-d(real)) + softplus(d(fake)) + (gamma / 2) ||grad_x d(real)||^2   (R1, Mescheder et al. 2018)
  student  softplus(-d(fake))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bfn.data.spec import DataSpec
from bfn.flows.distributions import sample_categorical
from bfn.models.family_nets import MLP, ConvEncoder, ScalarHead, image_side
from bfn.utils.binned import bin_centres, bin_index

R1_GAMMA = 1.0


def build_critic(data: DataSpec, width: int = 64) -> nn.Module:
    """A critic for `data`: two stride-2 convolutions with per-example normalisation for square images of side
    4k (DCGAN-sized, Radford et al. 2016), an MLP otherwise; input in `critic_format`, output [B]."""
    shape = critic_shape(data)
    if image_side(shape):
        return ScalarHead(ConvEncoder(shape[0], shape[1], 1, width, norm=True))
    return ScalarHead(MLP(int(torch.Size(shape).numel()), (1,), 4 * width, depth=2))


def critic_shape(data: DataSpec) -> tuple[int, ...]:
    """The shape of one critic input: the data's, with K one-hot channels per variable for discrete data."""
    shape = tuple(data.shape)
    if data.kind != "discrete":
        return shape
    k = data.classes or 2
    return (shape[0] * k, *shape[1:]) if image_side(shape) else (*shape, k)


def _one_hot_format(onehot: Tensor, data: DataSpec) -> Tensor:
    """[B, *S, K] one-hot (or its straight-through relaxation) -> the critic's layout."""
    if image_side(tuple(data.shape)):
        b, c, h, w, k = onehot.shape
        return onehot.permute(0, 1, 4, 2, 3).reshape(b, c * k, h, w)
    return onehot


def real_format(x: Tensor, data: DataSpec) -> Tensor:
    """Training data (data format) as the critic sees it."""
    if data.kind == "discrete":
        return _one_hot_format(F.one_hot(x.long(), data.classes or 2).float(), data)
    return x.float()


def fake_format(output: Any, data: DataSpec) -> Tensor:
    """A draw from the student's output distribution as the critic sees it, differentiable by straight-through
    estimates (module docstring)."""
    if data.kind == "discretized":
        mu, sigma = output.gaussian
        x = (mu + sigma * torch.randn_like(mu)).clamp(-1, 1)
        k = data.num_bins or 2
        centre = bin_centres(k, device=x.device, dtype=x.dtype)[bin_index(x.detach(), k)]
        return x + (centre - x).detach()
    if data.kind == "discrete":
        probs = output.probs
        index = sample_categorical(probs.detach())
        onehot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
        return _one_hot_format(probs + (onehot - probs).detach(), data)
    return output.mean


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """The critic's loss per example [B] (module docstring); `fake` is detached here, so the student gets no
    gradient from it."""
    real = real.detach().requires_grad_(True)
    d_real = critic(real)
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    r1 = 0.5 * R1_GAMMA * grad.flatten(1).pow(2).sum(1)
    return F.softplus(-d_real) + F.softplus(critic(fake.detach())) + r1


def student_loss(critic: nn.Module, fake: Tensor) -> Tensor:
    """The student's adversarial loss per example [B], through the critic with detached parameters (the critic
    gets no gradient from it)."""
    params = {k: v.detach() for k, v in critic.named_parameters()}
    return F.softplus(-functional_call(critic, params, (fake,)))
