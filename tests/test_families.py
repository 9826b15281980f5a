"""The lecture's families (VAE, RealNVP flow, GAN/WGAN-GP, RBM): their math against independent references
(quadrature and enumeration of tiny models, the autograd Jacobian, a hand-computed gradient penalty), the
alternating GAN updates, and a tiny train-save-load-sample run of each preset through the ordinary trainer."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bfn.config import load_config
from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.models.flow_model import RealNVP
from bfn.models.gan import GAN, gradient_penalty
from bfn.models.rbm import RBM
from bfn.models.registry import family_builder
from bfn.models.vae import VAE


def _perturb(model: nn.Module, scale: float, seed: int = 0) -> None:
    """Random weights everywhere (zero-initialised layers included), so that tests see a non-trivial model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.long)


# --- VAE: ELBO <= IWAE-k <= ln p(x), with ln p(x) by quadrature over a 1-d latent ------------------------------
def _log_p_by_quadrature(vae: VAE, x: torch.Tensor, n: int = 8001) -> torch.Tensor:
    """ln p(x) = ln integral N(z; 0, 1) p(x | z) dz on a fine grid over [-10, 10] (trapezoid rule), [B]."""
    z = torch.linspace(-10, 10, n, dtype=torch.float64).unsqueeze(1)
    dz = 20 / (n - 1)
    log_prior = -0.5 * z.squeeze(1).square() - 0.5 * math.log(2 * math.pi)
    out = []
    for xi in x:
        log_px = vae.log_px_given_z(xi.unsqueeze(0).expand(n, *xi.shape), z)
        log_w = torch.full((n,), math.log(dz), dtype=torch.float64)
        log_w[[0, -1]] -= math.log(2)
        out.append(torch.logsumexp(log_prior + log_px + log_w, 0))
    return torch.stack(out)


@pytest.fixture
def tiny_vae() -> VAE:
    torch.manual_seed(0)
    vae = VAE(DataSpec("discrete", (4,), num_classes=2), latent_dim=1, width=8, arch="mlp").double()
    _perturb(vae, 0.6)
    last = vae.encoder.net[-1]  # q(z | x) = N(mu(x), 1.5^2): wider than the posterior, so IWAE-k converges fast
    with torch.no_grad():
        last.weight[1].zero_()
        last.bias[1] = math.log(1.5)
    return vae


@torch.no_grad()
def test_vae_marginal_by_quadrature_is_normalised(tiny_vae):
    x = _all_binary(4)
    log_p = _log_p_by_quadrature(tiny_vae, x)
    assert abs(float(log_p.exp().sum()) - 1) < 1e-6  # the quadrature is exact enough to serve as the reference


@torch.no_grad()
def test_vae_elbo_iwae_ordering_against_exact_log_p(tiny_vae):
    x = _all_binary(4)
    log_p = _log_p_by_quadrature(tiny_vae, x)
    gen = torch.Generator().manual_seed(1)
    reps = 4000
    xr = x.repeat(reps, 1)
    draws = -tiny_vae.nll(xr, 1, generator=gen).view(reps, -1)
    elbo, elbo_se = draws.mean(0), draws.std(0) / math.sqrt(reps)  # E[ELBO] by Monte Carlo
    # the ELBO by quadrature: E_q[ln p(x | z)] - KL(q || p) (an independent computation of the same number)
    mu, log_s = tiny_vae.encode(x)
    z = torch.linspace(-10, 10, 8001, dtype=torch.float64)
    for i in range(len(x)):
        q = torch.distributions.Normal(mu[i, 0], log_s[i, 0].exp())
        w = q.log_prob(z).exp() * (20 / 8000)
        rec = (w * tiny_vae.log_px_given_z(x[i].unsqueeze(0).expand(len(z), 4), z.unsqueeze(1))).sum()
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
        assert abs(float(rec - kl - elbo[i])) < 4 * float(elbo_se[i]) + 1e-3
    iwae = {k: torch.stack([tiny_vae.iwae(x, k, gen) for _ in range(400 if k < 100 else 20)]).mean(0)
            for k in (2, 10, 100, 5000)}
    gap = log_p - elbo
    assert (gap > 0.05).all()  # the ELBO is strictly below ln p(x) here: a real KL(q || posterior) gap
    assert (iwae[2] >= elbo - 0.02).all()
    assert (iwae[10] >= iwae[2] - 0.02).all() and (iwae[100] >= iwae[10] - 0.02).all()
    assert (iwae[100] <= log_p + 0.03).all() and (iwae[5000] <= log_p + 0.03).all()  # lower bounds (+ MC noise)
    assert ((log_p - iwae[5000]) < 0.1 * gap).all()  # IWAE-k -> ln p(x): k = 5000 closes 90% of the ELBO's gap


@torch.no_grad()
def test_vae_discretized_decoder_is_normalised():
    torch.manual_seed(0)
    vae = VAE(DataSpec("discretized", (2,), num_bins=4), latent_dim=1, width=8, arch="mlp").double()
    _perturb(vae, 0.5)
    centres = (2 * torch.arange(4, dtype=torch.float64) + 1) / 4 - 1
    x = torch.cartesian_prod(centres, centres)
    assert abs(float(_log_p_by_quadrature(vae, x).exp().sum()) - 1) < 1e-6


def test_vae_rejects_bad_k_and_reads_inf_as_its_default():
    """k must be a positive count; None and "inf" (what `bfn compare` passes every family by default) mean the
    ELBO, the VAE's own default, as the RBM reads them as its own number of AIS temperatures."""
    vae = VAE(DataSpec("discrete", (4,), num_classes=2), latent_dim=1, width=8, arch="mlp")
    x = torch.zeros(2, 4, dtype=torch.long)
    for bad in (0, "abc", -3):
        with pytest.raises(ConfigError, match="importance samples"):
            vae.nll(x, bad)
    assert vae.nll_name("inf") == vae.nll_name(None) == "-ELBO" and vae.nll_name("1000") == "-IWAE-1000"
    assert list(vae.nll_terms(x, "inf", generator=torch.Generator().manual_seed(0))) == list(
        vae.nll_terms(x, None, generator=torch.Generator().manual_seed(0)))


# --- RealNVP: log-determinants against the autograd Jacobian; the density integrates to one ------------------
@pytest.fixture
def tiny_flow() -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(DataSpec("discretized", (1, 4, 4), num_bins=4), coupling_layers=4, width=8, blocks=1).double()
    _perturb(flow, 0.3)
    return flow


def test_flow_log_determinants_match_autograd_jacobian(tiny_flow):
    s = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    z, logdet = tiny_flow.flow_forward(s)
    jac = torch.autograd.functional.jacobian(lambda a: tiny_flow.flow_forward(a.view(1, 1, 4, 4))[0].flatten(),
                                             s.flatten())
    assert abs(float(logdet) - float(torch.linalg.slogdet(jac)[1])) < 1e-8
    assert abs(float(logdet)) > 0.1  # a non-trivial flow
    y = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda a: tiny_flow.logit_transform(a.view(1, 1, 4, 4))[0].flatten(),
                                             y.flatten())
    assert abs(float(tiny_flow.logit_transform(y)[1]) - float(torch.linalg.slogdet(jac)[1])) < 1e-8
    assert torch.allclose(tiny_flow.flow_inverse(z), s, atol=1e-10)


@pytest.mark.slow
@torch.no_grad()
def test_flow_discrete_probabilities_sum_to_one_and_bound_holds():
    torch.manual_seed(0)
    # alpha = 0: the logit maps [0, 1) onto R, so p(y) is a normalised density (with alpha > 0 the mass outside
    # [logit a, logit(1 - a)] is lost: a sub-normalised model, whose bound is then conservative)
    flow = RealNVP(DataSpec("discrete", (1, 2, 2), num_classes=2), coupling_layers=4, width=8, blocks=1,
                   alpha=0.0).double()
    _perturb(flow, 0.2)
    k = _all_binary(4).view(16, 1, 2, 2)
    gen = torch.Generator().manual_seed(0)
    reps = 3000
    kr = k.repeat(reps, 1, 1, 1)
    u = torch.rand(kr.shape, generator=gen, dtype=torch.float64)
    log_dens = flow.log_density((kr + u) / 2).view(reps, 16)
    # P(k) = K^-D E_u[p((k + u) / K)] by Monte Carlo, independently of the bound's code path
    prob = (torch.logsumexp(log_dens, 0) - math.log(reps) - 4 * math.log(2)).exp()
    assert abs(float(prob.sum()) - 1) < 0.02
    bound = flow.nll(kr, generator=gen).view(reps, 16).mean(0)
    assert (bound >= -prob.log() - 0.02).all()  # E_u of the bound is >= -ln P(k) (Jensen)


# --- RBM: AIS against the exact partition function ----------------------------------------------------------
@pytest.fixture
def tiny_rbm() -> RBM:
    torch.manual_seed(0)
    rbm = RBM(DataSpec("discrete", (20,), num_classes=2), hidden=10, ais_chains=400).double()
    with torch.no_grad():
        rbm.W.normal_(0, 0.7)
        rbm.b.normal_(0, 1)
        rbm.c.normal_(0, 1)
        rbm.data_mean.uniform_(0.2, 0.8)
    return rbm


def _exact_log_z(rbm: RBM) -> float:
    """ln Z by enumerating the 2^H hidden states: Z = sum_h exp(c.h) prod_i (1 + exp(b_i + W_i.h))."""
    h = _all_binary(rbm.c.numel()).double()
    return float(torch.logsumexp(h @ rbm.c + F.softplus(h @ rbm.W.T + rbm.b).sum(-1), 0))


@torch.no_grad()
def test_rbm_free_energy_by_enumeration(tiny_rbm):
    v = torch.bernoulli(torch.full((5, 20), 0.5, dtype=torch.float64))
    h = _all_binary(10).double()
    energy = -(v @ tiny_rbm.b)[:, None] - (h @ tiny_rbm.c)[None] - v @ tiny_rbm.W @ h.T  # [5, 1024]
    assert torch.allclose(tiny_rbm.free_energy(v), -torch.logsumexp(-energy, 1), atol=1e-10)


@pytest.mark.slow
@torch.no_grad()
def test_rbm_ais_matches_exact_partition_function(tiny_rbm):
    exact = _exact_log_z(tiny_rbm)
    gen = torch.Generator().manual_seed(0)
    log_z, se = tiny_rbm.ais_log_z(2000, 400, gen)
    assert abs(log_z - exact) < max(5 * se, 0.02), (log_z, exact, se)
    # the NLL estimate is F(x) + ln Z-hat; with the exact ln Z, exp(-nll) sums to one over all 2^D inputs
    small = RBM(DataSpec("discrete", (8,), num_classes=2), hidden=6, ais_chains=400).double()
    with torch.no_grad():
        small.W.normal_(0, 1)
        small.b.normal_(0, 1)
    x = _all_binary(8)
    nll = small.nll(x, 2000, generator=gen)
    assert abs(float(torch.logsumexp(-nll, 0))) < 0.02
    assert small.capabilities.likelihood == "estimate"


def test_rbm_pcd_loss_updates_chains_and_has_the_pcd_gradient(tiny_rbm):
    x = torch.bernoulli(torch.full((7, 20), 0.3, dtype=torch.float64)).long()
    before = tiny_rbm.chains.clone()
    tiny_rbm.train()
    loss = tiny_rbm.loss(x)
    assert loss.shape == (7,) and not torch.equal(before, tiny_rbm.chains)
    loss.mean().backward()
    ph_data = torch.sigmoid(x.double() @ tiny_rbm.W + tiny_rbm.c)
    ph_neg = torch.sigmoid(tiny_rbm.chains @ tiny_rbm.W + tiny_rbm.c)
    # dF/dW = -v p(h | v)^T: the gradient is E_neg[v ph^T] - E_data[v ph^T]
    want = tiny_rbm.chains.T @ ph_neg / len(ph_neg) - x.double().T @ ph_data / len(x)
    assert torch.allclose(tiny_rbm.W.grad, want.detach(), atol=1e-10)


# --- GAN / WGAN-GP -------------------------------------------------------------------------------------------
class _Quadratic(nn.Module):
    """d(x) = 0.5 x^T A x + w.x per example, for a hand-computed gradient."""

    def __init__(self, a: np.ndarray, w: np.ndarray) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        return 0.5 * ((f @ self.a) * f).sum(1) + f @ self.w


def test_gradient_penalty_against_hand_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    a = a + a.T
    w = rng.normal(size=6)
    real, fake = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    eps = np.array([0.0, 0.3, 1.0])
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    grad = x_hat @ a + w  # grad of 0.5 x^T A x + w.x for symmetric A
    want = (np.sqrt((grad ** 2).sum(1)) - 1) ** 2
    critic = _Quadratic(a, w)
    got = gradient_penalty(critic, torch.tensor(real).view(3, 1, 2, 3), torch.tensor(fake).view(3, 1, 2, 3),
                           torch.tensor(eps))
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12)
    got.sum().backward()  # differentiable in the critic's parameters (create_graph)
    assert critic.a.grad is not None and critic.a.grad.abs().sum() > 0


@pytest.mark.parametrize("family, n_critic", [("gan", 1), ("wgan-gp", 5)])
def test_gan_alternates_critic_and_generator_updates(family, n_critic):
    torch.manual_seed(0)
    model = family_builder(family)(SimpleNamespace(options={"width": 8}, conditional=False),
                                   DataSpec("discrete", (1, 28, 28), num_classes=2))
    assert model.n_critic == n_critic and model.capabilities.likelihood == "none"
    x = torch.randint(0, 2, (4, 1, 28, 28))
    gen_params, critic_params = list(model.generator.parameters()), list(model.critic.parameters())
    for step in range(2 * (n_critic + 1)):
        model.zero_grad(set_to_none=True)
        model(x).mean().backward()
        critic_turn = step % (n_critic + 1) < n_critic
        assert all((p.grad is None) == critic_turn for p in gen_params)
        assert all((p.grad is None) != critic_turn for p in critic_params)
    assert float(model.step) == 2 * (n_critic + 1)
    assert "step" in model.state_dict()
    with pytest.raises(ConfigError, match="no likelihood"):
        model.nll(x)


# --- presets through the ordinary trainer -------------------------------------------------------------------
TINY = ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.sample_every=0",
        "train.checkpoint_every=3", "train.warmup_steps=0"]
PRESETS = {"mnist-vae": ["model.options.width=8"], "mnist-vae-grey": ["model.options.width=8"],
           "mnist-flow": ["model.options.width=4", "model.options.coupling_layers=2"],
           "mnist-flow-grey": ["model.options.width=4", "model.options.coupling_layers=2"],
           "mnist-gan": ["model.options.width=8"], "mnist-wgan-gp": ["model.options.width=8"],
           "mnist-rbm": ["model.options.hidden=16", "model.options.ais_steps=20", "model.options.ais_chains=4"]}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_saves_loads_and_samples(tmp_path, preset):
    from bfn.data import load_dataset
    from bfn.evaluation.nll import evaluate_nll
    from bfn.models import from_pretrained
    from bfn.training.trainer import train

    cfg = load_config(preset, [*TINY, *PRESETS[preset]])
    result = train(cfg, tmp_path, progress=False)
    assert result.step == 3 and math.isfinite(result.final_loss)
    model = from_pretrained(tmp_path)
    steps = 5 if model.family == "rbm" else None
    got = []
    x = model.sample(3, steps, generator=torch.Generator().manual_seed(0), callback=got.append)
    assert x.shape == (3, 1, 28, 28) and got and got[-1].n == (steps or 1)
    test, spec = load_dataset(cfg.data.name, "test", **cfg.data.options)
    if spec.kind == "discrete":
        assert set(x.unique().tolist()) <= {0, 1}
    else:
        assert torch.isin(x, (2 * torch.arange(16) + 1) / 16 - 1).all()
    if model.capabilities.likelihood == "none":
        with pytest.raises(ConfigError, match="no likelihood"):
            evaluate_nll(model, test, steps=[1], limit=4)
    else:
        res = evaluate_nll(model, test, steps=[1], limit=4)["results"]["1"]
        assert math.isfinite(res["nats"]) and res["kind"] == model.capabilities.likelihood


def test_unknown_family_and_option_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown model type 'nope'"):
        family_builder("nope")
    cfg = load_config("mnist-vae", ["model.options.depth=3"])
    with pytest.raises(ConfigError, match="unknown model.options depth"):
        family_builder("vae")(cfg.model, DataSpec("discrete", (1, 28, 28), num_classes=2))
    with pytest.raises(ConfigError, match="binary data"):
        RBM(DataSpec("discretized", (1, 28, 28), num_bins=16))
    with pytest.raises(ConfigError):
        GAN(DataSpec("continuous", (2,)))
