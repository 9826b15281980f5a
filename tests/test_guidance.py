"""Classifier-free guidance (Ho & Salimans 2022) for BFNs of every data type and for the DDPM baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bfn.errors import ConfigError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.models import BFN
from bfn.samplers import SAMPLERS
from test_ddpm import tiny_image_model

NUM_LABELS = 10
FLOWS = [ContinuousFlow(sigma_1=0.01), DiscretizedFlow(num_bins=8), DiscreteFlow(num_classes=2),
         DiscreteFlow(num_classes=4)]


class CondNet(nn.Module):
    """A tiny flat network with a label embedding (row NUM_LABELS = the null label) added to its hidden layer."""

    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.inp = nn.Linear(f_in + 1, 32)
        self.label = nn.Embedding(NUM_LABELS + 1, 32)
        self.out = nn.Linear(32, f_out)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        labels = torch.full_like(t, NUM_LABELS, dtype=torch.long) if cond is None else cond
        h = self.inp(torch.cat([x, t[:, None]], -1)) + 3 * self.label(labels)
        return self.out(torch.tanh(h))


def make(flow, d: int = 5, seed: int = 0) -> BFN:
    torch.manual_seed(seed)
    net = CondNet(d * flow.input_features, d * flow.output_features)
    return BFN(net, flow, data_shape=(d,), layout="flat", num_labels=NUM_LABELS)


LABELS = torch.tensor([0, 3, 7, 9, 10, 2])  # 10 is the null label: unconditional rows in the same batch


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.kind}{getattr(f, 'num_classes', '')}")
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_guidance_zero_reproduces_the_conditional_sampler_exactly(flow, sampler):
    model = make(flow)

    def draw(**kw):
        return model.sample(6, 4, sampler=sampler, cond=LABELS, generator=torch.Generator().manual_seed(3), **kw)

    plain = draw()
    assert torch.equal(draw(guidance=0.0), plain)
    assert not torch.equal(draw(guidance=3.0).float(), plain.float()), "guidance 3 changed nothing"
    # the null label on a conditional model is the unconditional sampler: same draws as cond=None
    null = torch.full((6,), NUM_LABELS)
    a = model.sample(6, 4, sampler=sampler, cond=null, generator=torch.Generator().manual_seed(5))
    b = model.sample(6, 4, sampler=sampler, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.kind}{getattr(f, 'num_classes', '')}")
@pytest.mark.parametrize("w", [0.5, 2.0, 8.0])
def test_guided_output_is_the_combination_and_a_valid_distribution(flow, w):
    model = make(flow, seed=1)
    gen = torch.Generator().manual_seed(0)
    b = LABELS.shape[0]
    t = torch.rand(b, generator=gen) * 0.98 + 0.01
    if flow.kind == "discrete":
        x = torch.randint(flow.num_classes, (b, 5), generator=gen)
    else:
        x = torch.rand(b, 5, generator=gen) * 2 - 1
    theta = flow.flow_sample(x, t, generator=gen)
    guided = model.output_distribution(theta, t, LABELS, guidance=w)
    # reference: two separate (unbatched) network calls combined by hand
    out = (1 + w) * model.net_output(theta, t, LABELS) - w * model.net_output(theta, t, torch.full_like(LABELS, 10))
    ref = flow.output_distribution(out, theta, t)
    if flow.kind == "continuous":
        assert torch.isfinite(guided.mean).all()
        torch.testing.assert_close(guided.mean, ref.mean, rtol=1e-5, atol=1e-5)
        return
    probs = guided.probs
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(b, 5), rtol=0, atol=1e-5)
    torch.testing.assert_close(probs, ref.probs, rtol=1e-5, atol=1e-6)
    unguided = model.output_distribution(theta, t, LABELS).probs
    assert (probs - unguided).abs().max() > 1e-3, "guidance left the output distribution unchanged"


def test_guidance_needs_a_conditional_model_and_a_label():
    model = make(DiscreteFlow(num_classes=2))
    with pytest.raises(ConfigError, match="label"):
        model.sample(2, 3, guidance=1.0)
    with pytest.raises(ConfigError, match="labels must lie"):
        model.sample(2, 3, cond=11, guidance=1.0)  # 10 is the null label, 11 is out of range
    flow = DiscreteFlow(num_classes=2)
    plain = BFN(nn.Linear(5 * flow.input_features + 0, 5), flow, data_shape=(5,), layout="flat")
    with pytest.raises(ConfigError):
        plain.sample(2, 3, cond=1, guidance=1.0)


@pytest.mark.parametrize("kind", ["discrete", "discretized"])
def test_ddpm_guidance_is_the_epsilon_combination_and_zero_is_exact(kind):
    torch.manual_seed(0)
    model = tiny_image_model(kind, conditional=True).eval()
    with torch.no_grad():  # make the label embedding matter
        for p in model.network.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    process = model.diffusion
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 1, 6, 6, generator=gen)
    i = torch.tensor([1, 5, 10, 19])
    cond = torch.tensor([1, 4, 7, 9])
    null = torch.full_like(cond, 10)
    with torch.no_grad():
        e_c, e_u = model.eps(x_t, i, process, cond), model.eps(x_t, i, process, null)
        torch.testing.assert_close(model.eps(x_t, i, process, cond, 2.5), 3.5 * e_c - 2.5 * e_u)
    for sampler in ("ancestral", "ddim"):
        def draw(sampler=sampler, **kw):
            return model.sample(4, 5, sampler=sampler, cond=cond, generator=torch.Generator().manual_seed(2), **kw)

        assert torch.equal(draw(guidance=0.0), draw())
        assert not torch.equal(draw(guidance=4.0).float(), draw().float())
