"""The paper's samplers and the BFN glue, with a tiny stand-in network (no dependency on bfn.networks)."""

import pytest
import torch
from torch import nn

from bfn.errors import ConfigError, DataError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow, bin_centres
from bfn.models import BFN
from bfn.samplers import SAMPLERS


class TinyNet(nn.Module):
    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(f_in + 1, f_out)

    def forward(self, x, t, cond=None):
        tt = t.reshape(-1, *([1] * (x.ndim - 1))).expand(*x.shape[:-1], 1)
        return self.lin(torch.cat([x, tt], -1))


def make(flow, shape=(5,)):
    d = shape[0]
    net = TinyNet(d * flow.input_features, d * flow.output_features)
    return BFN(net, flow, data_shape=shape, layout="flat")


FLOWS = [ContinuousFlow(sigma_1=0.01), DiscretizedFlow(num_bins=8), DiscreteFlow(num_classes=2),
         DiscreteFlow(num_classes=4)]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.kind}")
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_shapes_dtypes_reproducibility_and_callback(flow, sampler):
    model = make(flow)
    calls = []
    x1 = model.sample(7, 12, sampler=sampler, generator=torch.Generator().manual_seed(3), callback=calls.append)
    x2 = model.sample(7, 12, sampler=sampler, generator=torch.Generator().manual_seed(3))
    assert x1.shape == (7, 5)
    assert torch.equal(x1, x2)
    assert [c.i for c in calls] == list(range(1, 13))
    times = [c.t for c in calls]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 1
    if sampler in ("paper", "output-mean"):
        assert times == [(i - 1) / 12 for i in range(1, 13)]
    if flow.kind == "discrete":
        assert x1.dtype == torch.long and int(x1.min()) >= 0 and int(x1.max()) < flow.num_classes
    else:
        assert x1.dtype == torch.float32
    if flow.kind == "discretized":
        assert torch.isin(x1, bin_centres(8)).all()
    x3 = model.sample(7, 12, sampler=sampler, generator=torch.Generator().manual_seed(4))
    if flow.kind != "continuous" or sampler == "paper":
        assert not torch.equal(x1, x3)


def test_continuous_sampler_with_exact_denoiser_recovers_point_mass():
    """If the data is a single point x0, the ideal network predicts eps from mu exactly; samples must be x0."""
    flow = ContinuousFlow(sigma_1=0.01)
    x0 = torch.tensor([0.3, -0.6])

    def output_fn(theta, t):
        return flow.output_distribution(torch.zeros_like(theta.mean).unsqueeze(-1), theta, t).__class__(
            torch.where(t[:, None] < flow.t_min, torch.zeros_like(theta.mean), x0.expand_as(theta.mean)))

    out = SAMPLERS["paper"](flow, output_fn, (64, 2), 50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0.expand(64, 2))


def test_paper_sampler_is_exact_with_the_bayes_optimal_output():
    """Independent categoricals pi_d over K = 3 classes (non-degenerate, different per variable). The Bayes-optimal
    output distribution is the posterior p(x_d | y_1..y_i) proportional to pi_d(k) exp(theta_d(k)) (theta holds
    the summed sender samples as logits, §6.1), and with it the paper's sampler draws y_i from its exact predictive,
    so its samples follow pi exactly for any number of steps (Graves et al. 2023, §3.9). A sampler that returned
    the mode, or a mean, would fail the chi-square test below."""
    from bfn.flows import Categorical

    flow = DiscreteFlow(num_classes=3, beta_1=3.0)
    pi = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.45, 0.1, 0.45]])
    n = 6000

    def output_fn(theta, t):
        return Categorical(pi.log() + theta)

    for steps in (1, 4, 25):
        out = SAMPLERS["paper"](flow, output_fn, (n, 3), steps, generator=torch.Generator().manual_seed(steps))
        counts = torch.nn.functional.one_hot(out, 3).sum(0).double()  # [3 variables, 3 classes]
        expected = n * pi.double()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 27.9, (steps, counts)  # 3 x 2 = 6 degrees of freedom: P(chi2 > 27.9) < 1e-4


def test_bad_steps_and_inputs():
    model = make(DiscreteFlow(num_classes=2))
    for steps in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="steps"):
            model.sample(2, steps)
    with pytest.raises(ConfigError, match="unknown sampler"):
        model.sample(2, 3, sampler="nope")
    with pytest.raises(DataError, match="shape"):
        model.loss(torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(DataError, match="0..1"):
        model.loss(torch.full((3, 5), 2))
    disc = make(DiscretizedFlow(num_bins=16))
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        disc.loss(torch.full((3, 5), 1.5))
    with pytest.raises(ConfigError, match="unconditional"):
        model.sample(2, 3, cond=1)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.kind)
def test_model_losses_are_per_example_and_differentiable(flow):
    model = make(flow)
    if flow.kind == "discrete":
        x = torch.randint(0, flow.num_classes, (6, 5))
    elif flow.kind == "discretized":
        x = bin_centres(8)[torch.randint(0, 8, (6, 5))]
    else:
        x = torch.rand(6, 5) * 2 - 1
    for loss in ("continuous", 10):
        out = model.loss(x, loss=loss)
        assert out.shape == (6,)
        out.mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
    nll = model.nll(x, 10, generator=torch.Generator().manual_seed(0))
    assert nll.shape == (6,) and torch.isfinite(nll).all()
    torch.testing.assert_close(nll, model.nll(x, 10, generator=torch.Generator().manual_seed(0)))
