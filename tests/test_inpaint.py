"""Inpainting (conditioning on observed variables) for every flow and sampler: observations are kept exactly, and
with the Bayes-optimal network the "exact" method samples the true conditional distribution."""

from __future__ import annotations

import pytest
import torch

from bfn.errors import ConfigError, DataError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow, bin_centres
from bfn.samplers import SAMPLERS
from bfn.samplers.inpaint import check_observation, observed_output_fn
from test_fast_samplers import JOINT, joint_output_fn
from test_samplers import make

FLOWS = [ContinuousFlow(sigma_1=0.01), DiscretizedFlow(num_bins=8), DiscreteFlow(num_classes=2),
         DiscreteFlow(num_classes=4)]


def observation(flow, n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    if flow.kind == "discrete":
        return torch.randint(flow.num_classes, (n, d), generator=gen)
    if flow.kind == "discretized":
        return bin_centres(flow.num_bins)[torch.randint(flow.num_bins, (n, d), generator=gen)]
    return (torch.randn(n, d, generator=gen) * 0.5).clamp(-1, 1)  # inside the output range x_range


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.kind}{getattr(f, 'num_classes', '')}")
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("method", ["exact", "flow"])
def test_observed_variables_are_kept_exactly(flow, sampler, method):
    torch.manual_seed(0)
    model = make(flow, shape=(6,))
    gen = torch.Generator().manual_seed(1)
    known = observation(flow, 8, 6, gen)
    mask = torch.rand(8, 6, generator=gen) < 0.5
    for final in ("sample", "mode"):
        x = model.sample(8, 5, sampler=sampler, generator=gen, final=final, inpaint=(known, mask),
                         inpaint_method=method)
        assert x.shape == (8, 6)
        assert torch.equal(x[mask], known[mask].to(x.dtype))
    # one example's observation and mask broadcast over the batch
    x = model.sample(4, 3, sampler=sampler, generator=gen, inpaint=(known[0], mask[0]), inpaint_method=method)
    assert torch.equal(x[:, mask[0]], known[0, mask[0]].to(x.dtype).expand(4, -1))


def test_exact_inpainting_samples_the_true_conditional_with_the_bayes_optimal_network():
    """Toy: two correlated variables with K = 3 (joint table JOINT); observe x_1 = 2 and compare the inpainted x_2
    with P(x_2 | x_1 = 2) = JOINT[2] / JOINT[2].sum() = (0.026, 0.184, 0.789)."""
    flow = DiscreteFlow(num_classes=3, beta_1=3.0)
    n = 20_000
    known = torch.tensor([2, 0]).expand(n, 2)
    mask = torch.tensor([True, False]).expand(n, 2)
    target = (JOINT[2] / JOINT[2].sum()).float()
    marginal = JOINT.sum(0).float()
    tv_none = 0.5 * (target - marginal).abs().sum()
    for sampler, steps in (("paper", 10), ("paper", 100), ("sde2", 10)):
        fn = observed_output_fn(flow, joint_output_fn, known, mask, "exact")
        x = SAMPLERS[sampler](flow, fn, (n, 2), steps, generator=torch.Generator().manual_seed(0))
        assert (x[:, 0] == 2).all()
        freq = torch.bincount(x[:, 1], minlength=3).float() / n
        tv = 0.5 * (freq - target).abs().sum()
        assert tv < 0.015, (sampler, steps, freq, tv)  # Monte Carlo noise alone: about 0.005
    # the "flow" method conditions only gradually: better than nothing, but biased
    fn = observed_output_fn(flow, joint_output_fn, known, mask, "flow")
    x = SAMPLERS["paper"](flow, fn, (n, 2), 100, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(x[:, 1], minlength=3).float() / n
    tv_flow = 0.5 * (freq - target).abs().sum()
    assert 0.05 < tv_flow < tv_none


def test_bad_observations_give_one_line_errors():
    shape = (4, 1, 3, 3)
    good = torch.zeros(1, 3, 3)
    with pytest.raises(DataError, match="shape"):
        check_observation(torch.zeros(3, 3), good.bool(), shape)
    with pytest.raises(DataError, match="mask"):
        check_observation(good, torch.full((1, 3, 3), 0.5), shape)
    known, mask = check_observation(good, torch.ones(1, 3, 3), shape)
    assert known.shape == shape and mask.dtype == torch.bool and mask.all()
    with pytest.raises(ConfigError, match="inpainting method"):
        observed_output_fn(DiscreteFlow(num_classes=2), lambda th, t: None, known, mask, "magic")  # type: ignore[arg-type]
    model = make(DiscreteFlow(num_classes=2), shape=(6,))
    with pytest.raises(DataError):  # class 5 does not exist for K = 2
        model.sample(2, 3, inpaint=(torch.full((6,), 5), torch.ones(6, dtype=torch.bool)))
