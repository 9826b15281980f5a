"""The DDPM baseline: forward process, posterior, decoder, bound (Ho et al. 2020), samplers, the model's interface."""

import math

import pytest
import torch
from torch import nn

from bfn.config import DDPMConfig, load_config
from bfn.data.spec import DataSpec
from bfn.diffusion import (
    BinnedGaussian,
    GaussianDiffusion,
    binned_gaussian_log_probs,
    cosine_betas,
    linear_betas,
    make_betas,
    normal_kl,
    respaced_timesteps,
    variational_bound,
)
from bfn.errors import ConfigError, DataError
from bfn.models.ddpm import DDPM, data_values
from bfn.models.hub import build_model, from_pretrained, save_pretrained
from bfn.samplers.base import StepInfo
from bfn.samplers.ddpm import ancestral_sampler, ddim_sampler
from bfn.viz.evolution import record_sampling


def _i(value: int, n: int) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.long)


# --- schedules ----------------------------------------------------------------------------------------------------
def test_schedules():
    lin = linear_betas(1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    assert linear_betas(100)[-1].item() == pytest.approx(0.2)  # scaled by 1000 / T
    cos = cosine_betas(1000)
    assert (cos > 0).all() and cos.max() <= 0.999
    # cosine alpha_bar follows f(t) / f(0) (Nichol & Dhariwal eq. 17) wherever beta was not clipped
    ab = torch.cumprod(1 - cos, 0)
    t = torch.tensor([100.0, 500.0, 900.0], dtype=torch.float64)
    f = lambda u: torch.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert torch.allclose(ab[t.long() - 1], f(t) / f(torch.tensor(0.0, dtype=torch.float64)), rtol=1e-9)
    for name in ("linear", "cosine"):
        diff = GaussianDiffusion.from_schedule(name, 1000)
        assert diff.alpha_bar[0] == 1 and diff.alpha_bar[-1] < 1e-4
    with pytest.raises(ConfigError, match="schedule"):
        make_betas("sigmoid", 10)  # type: ignore[arg-type]
    assert respaced_timesteps(1000, 10)[0] == 1 and respaced_timesteps(1000, 10)[-1] == 1000
    assert respaced_timesteps(7, 7) == list(range(1, 8)) and respaced_timesteps(50, 1) == [50]
    with pytest.raises(ConfigError, match="at most"):
        respaced_timesteps(10, 11)


# --- forward process and posterior -------------------------------------------------------------------------------
def test_forward_process_matches_closed_form():
    """x_t | x_0 ~ N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. eq. 4), by Monte Carlo."""
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.7, -0.3])
    n = 200_000
    for t in (1, 250, 999):
        i = _i(t, n)
        xt = diff.q_sample(x0.expand(n, 2), i, torch.randn(n, 2, generator=gen))
        ab = diff.alpha_bar[t].item()
        assert torch.allclose(xt.mean(0), math.sqrt(ab) * x0, atol=4 * math.sqrt((1 - ab) / n))
        assert torch.allclose(xt.var(0), torch.full((2,), 1 - ab), rtol=0.02)
        mean, var = diff.q_mean_variance(x0.expand(1, 2), _i(t, 1))
        assert torch.allclose(mean, math.sqrt(ab) * x0) and var[0, 0].item() == pytest.approx(1 - ab, rel=1e-5)


@pytest.mark.parametrize("t", [2, 10, 500, 1000])
def test_posterior_is_bayes_rule(t):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): a product of Gaussians in x_{t-1}, evaluated
    numerically on a grid for a scalar (Ho et al. eqs. 6-7)."""
    diff = GaussianDiffusion.from_schedule("cosine", 1000)
    ab, ab_prev = diff.alpha_bar[t].item(), diff.alpha_bar[t - 1].item()
    beta = 1 - ab / ab_prev
    x0, xt = 0.4, -0.2
    m_prev, v_prev = math.sqrt(ab_prev) * x0, 1 - ab_prev  # q(x_{t-1} | x_0)
    width = math.sqrt(min(v_prev, beta))
    centre = (m_prev / v_prev + math.sqrt(1 - beta) * xt / beta) / (1 / v_prev + (1 - beta) / beta)
    grid = torch.linspace(centre - 12 * width, centre + 12 * width, 200_001, dtype=torch.float64)
    log_joint = (-0.5 * (xt - math.sqrt(1 - beta) * grid) ** 2 / beta  # q(x_t | x_{t-1})
                 - 0.5 * (grid - m_prev) ** 2 / v_prev)  # q(x_{t-1} | x_0)
    w = (log_joint - log_joint.max()).exp()
    w = w / w.sum()
    mean_num = float((w * grid).sum())
    var_num = float((w * (grid - mean_num) ** 2).sum())
    mean, var = diff.posterior_mean_variance(torch.tensor([[x0]], dtype=torch.float64),
                                             torch.tensor([[xt]], dtype=torch.float64), _i(t, 1))
    assert mean.item() == pytest.approx(mean_num, abs=1e-6 * max(1.0, abs(mean_num)))
    assert var.item() == pytest.approx(var_num, rel=1e-4)


def test_eps_x0_round_trip_and_kl():
    diff = GaussianDiffusion.from_schedule("linear", 100)
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(5, 3, generator=gen) * 2 - 1, torch.randn(5, 3, generator=gen)
    i = torch.tensor([1, 7, 50, 99, 100])
    xt = diff.q_sample(x0, i, eps)
    assert torch.allclose(diff.x0_from_eps(xt, i, eps), x0, atol=1e-4)
    assert torch.allclose(diff.eps_from_x0(xt, i, x0), eps, atol=1e-4)
    # KL of Gaussians: zero for equal ones, the closed form otherwise
    assert normal_kl(torch.tensor(0.3), torch.tensor(2.0), torch.tensor(0.3), torch.tensor(2.0)).item() == 0
    kl = normal_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(4.0)).item()
    assert kl == pytest.approx(0.5 * (math.log(4) + (1 + 1) / 4 - 1))
    # respaced coefficients are those of the original process at the kept timesteps
    sub = diff.respace(10)
    tau = respaced_timesteps(100, 10)
    assert torch.allclose(sub.alpha_bar[1:], diff.alpha_bar[tau]) and sub.timesteps[1:].tolist() == tau
    assert diff.respace(100) is diff


# --- decoder ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 16, 256])
def test_decoder_probabilities_sum_to_one(k):
    values = data_values("discrete", num_classes=k) if k == 2 else data_values("discretized", num_bins=k)
    gen = torch.Generator().manual_seed(k)
    mean = torch.randn(64, generator=gen) * 2  # includes means far outside [-1, 1]
    std = torch.rand(64, generator=gen) * 0.5 + 0.003
    probs = binned_gaussian_log_probs(mean, std, values).exp()
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(64, dtype=probs.dtype), atol=1e-5)
    # in a deep tail the log probability stays finite (log space), where linear CDF differences would give -inf
    lp = binned_gaussian_log_probs(torch.tensor([1.0]), torch.tensor([0.001]), values)
    assert torch.isfinite(lp).all() and lp[0, 0] < -1000


def test_bernoulli_decoder_for_binary_data():
    """With values -1, +1 the decoder is a Bernoulli with P(+1) = Phi(mean / std)."""
    values = data_values("discrete", num_classes=2)
    mean, std = torch.tensor([-0.3, 0.0, 0.2]), torch.tensor(0.25)
    dec = BinnedGaussian(mean, std, values)
    p1 = 0.5 * (1 + torch.erf(mean / std / math.sqrt(2)))
    assert torch.allclose(dec.probs[:, 1], p1, atol=1e-6)
    assert dec.mode.tolist() == [0, 0, 1] or dec.mode.tolist() == [0, 1, 1]
    draws = BinnedGaussian(mean.expand(20000, 3), std, values).sample(torch.Generator().manual_seed(0))
    assert torch.allclose(draws.float().mean(0), p1, atol=0.015)


# --- the bound on a toy -------------------------------------------------------------------------------------------
class TinyEps(nn.Module):
    """A small MLP eps-predictor for flat data (a stand-in for the U-Net)."""

    def __init__(self, d: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(torch.cat([x, torch.sin(6 * t)[:, None], torch.cos(6 * t)[:, None]], 1))


def toy_binary(n: int, gen: torch.Generator) -> torch.Tensor:
    """Two 4-pixel binary patterns, each with 10% pixel flips."""
    pattern = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]])[torch.randint(0, 2, (n,), generator=gen)]
    flips = torch.rand(n, 4, generator=gen) < 0.1
    return (pattern ^ flips.long()).long()


def mean_nll(model: DDPM, x: torch.Tensor, steps="inf", repeats: int = 8) -> float:
    gen = torch.Generator().manual_seed(7)
    return float(torch.stack([model.nll(x, steps, generator=gen) for _ in range(repeats)]).mean())


def bernoulli_denoiser(process: GaussianDiffusion, p: torch.Tensor):
    """The Bayes-optimal E[x_0 | x_i] for independent pixels x_0 in {-1, +1} with P(+1) = p: the posterior log-odds
    are logit(p) + 2 sqrt(alpha_bar_i) x_i / (1 - alpha_bar_i), and E[x_0 | x_i] = tanh(log-odds / 2)."""

    def denoise(x_t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        sa, one_minus = process.marginal(i, x_t)
        return torch.tanh((torch.log(p / (1 - p)) + 2 * sa * x_t / one_minus) / 2)

    return denoise


def test_bound_with_the_bayes_optimal_denoiser_equals_the_entropy():
    """With the Bayes-optimal denoiser the T = 1000 bound (Ho et al. eq. 5, binarized decoder eq. 13) is the data's
    entropy H = -sum_d [p ln p + (1 - p) ln(1 - p)] up to its Monte Carlo error; it is a bound, so never below H.
    The respaced 100-step bound of the same denoiser is a looser bound."""
    d, n = 8, 20000
    p = torch.rand(d, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    entropy = float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())
    x0 = torch.bernoulli(p.expand(n, d), generator=torch.Generator().manual_seed(1)) * 2 - 1
    values = data_values("discrete", num_classes=2)
    gen = torch.Generator().manual_seed(2)
    full = GaussianDiffusion.from_schedule("linear", 1000)
    total = torch.stack([variational_bound(full, bernoulli_denoiser(full, p), x0, values=values, generator=gen).total
                         for _ in range(4)]).mean(0).double()
    se = float(total.std()) / math.sqrt(n)
    print(f"bound {float(total.mean()):.3f} +- {se:.3f} nats, entropy {entropy:.3f}")
    assert se < 0.1  # the test has power: H is about 4.7 nats
    assert abs(float(total.mean()) - entropy) < 4 * se
    coarse = full.respace(100)
    bound_100 = torch.stack([variational_bound(coarse, bernoulli_denoiser(coarse, p), x0, values=values,
                                               generator=gen).total for _ in range(4)]).mean(0).double()
    assert float(bound_100.mean()) > entropy + 4 * float(bound_100.std()) / math.sqrt(n)


def test_importance_sampled_steps_keep_the_bound_unbiased():
    """Standard-normal data with its exact denoiser (`gaussian_denoiser`): E[sum_{i>=2} L_{i-1}] has the closed form
    sum_i c_i^2 v_i / (2 beta-tilde_i) per variable (c_i the x_0 coefficient of mu-tilde, v_i = 1 - alpha_bar_i the
    posterior variance), written out here from the betas. Uniform and importance-sampled steps both match it; the
    importance-sampled one (`step_proposal`) with a far smaller spread."""
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    betas = [1e-4 + (0.02 - 1e-4) * k / 999 for k in range(1000)]
    ab = [1.0]
    for b_ in betas:
        ab.append(ab[-1] * (1 - b_))
    want = 0.0
    for i in range(2, 1001):
        b_i = betas[i - 1]
        c = math.sqrt(ab[i - 1]) * b_i / (1 - ab[i])
        beta_tilde = (1 - ab[i - 1]) / (1 - ab[i]) * b_i
        want += c**2 * (1 - ab[i]) / (2 * beta_tilde)
    n, d = 20000, 2
    x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    uniform = variational_bound(diff, gaussian_denoiser(diff, 0.0, 1.0), x0, values=None, generator=gen).diffusion
    sampled = variational_bound(diff, gaussian_denoiser(diff, 0.0, 1.0), x0, values=None, generator=gen,
                                proposal=diff.step_proposal()).diffusion
    for est in (uniform, sampled):
        assert abs(float(est.mean()) - d * want) < 4 * float(est.std()) / math.sqrt(n), (float(est.mean()), d * want)
    assert float(sampled.std()) < float(uniform.std()) / 5


def test_bound_decreases_with_training():
    """A few dozen L_simple steps lower the bound (without clipping x0_hat: with it, the untrained network, eps_hat
    ~ 0, is already a near-perfect denoiser at small t for +-1 data); the respaced bounds are finite."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = DDPM(TinyEps(4), DDPMConfig(timesteps=100, clip_x0=False), data_kind="discrete", data_shape=(4,))
    test = toy_binary(256, gen)
    before = mean_nll(model, test)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(toy_binary(128, gen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_nll(model, test)
    assert math.isfinite(before) and after < before
    for steps in (1, 10, 100, 1000):
        assert math.isfinite(mean_nll(model, test, steps, repeats=2))


def test_bound_terms_for_a_perfect_denoiser():
    """A denoiser that returns the true x_0 leaves only the prior term and a near-zero decoder cost."""
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    values = data_values("discrete", num_classes=2)
    x0 = values.float()[torch.randint(0, 2, (16, 8), generator=torch.Generator().manual_seed(3))]
    terms = variational_bound(diff, lambda x_t, i: torch.cat([x0, x0]), x0, values=values,
                              generator=torch.Generator().manual_seed(4))
    assert terms.diffusion.abs().max() < 1e-3 and terms.decoder.max() < 1e-6
    # L_T = KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per variable, ab_T = prod (1 - beta_t), beta_t written out
    ab_t = math.prod(1 - (1e-4 + (0.02 - 1e-4) * k / 999) for k in range(1000))
    per_var = 0.5 * (ab_t * x0.double() ** 2 + (1 - ab_t) - 1 - math.log(1 - ab_t))
    torch.testing.assert_close(terms.prior.double(), per_var.sum(-1), rtol=1e-9, atol=0)
    assert terms.prior.max() < 1e-3


# --- samplers -----------------------------------------------------------------------------------------------------
def gaussian_denoiser(diff: GaussianDiffusion, m: float, s: float):
    """The exact E[x_0 | x_t] for data N(m, s^2): the optimal denoiser, plugged in as the network."""

    def denoise(x_t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        sa, one_minus = diff.marginal(i, x_t)
        var_t = sa**2 * s**2 + one_minus
        return m + sa * s**2 / var_t * (x_t - sa * m)

    return denoise


def test_ddim_eta_one_matches_ancestral_on_gaussian_data():
    """With the optimal denoiser of N(m, s^2) data and all T = 1000 steps, ancestral sampling, DDIM with eta = 1
    and DDIM with eta = 0 all reproduce m and s^2."""
    m, s, n = 0.4, 0.3, 20_000
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    denoise = gaussian_denoiser(diff, m, s)
    anc = ancestral_sampler(diff, denoise, (n, 1), generator=torch.Generator().manual_seed(0))
    ddim1 = ddim_sampler(diff, denoise, (n, 1), eta=1.0, generator=torch.Generator().manual_seed(1))
    ddim0 = ddim_sampler(diff, denoise, (n, 1), eta=0.0, generator=torch.Generator().manual_seed(2))
    se_mean, se_var = s / math.sqrt(n), s**2 * math.sqrt(2 / n)
    for x in (anc, ddim1, ddim0):
        assert abs(x.mean().item() - m) < 5 * se_mean
        assert abs(x.var().item() - s**2) < 5 * se_var + 0.01 * s**2
    assert abs(anc.mean().item() - ddim1.mean().item()) < 5 * math.sqrt(2) * se_mean
    assert abs(anc.var().item() - ddim1.var().item()) < 5 * math.sqrt(2) * se_var


@pytest.mark.parametrize("steps", [1000, 50, 3])
def test_ddim_eta_one_is_the_respaced_ancestral_sampler(steps):
    """Same noise, same path: DDIM with eta = 1 is the (respaced) ancestral sampler step by step."""
    diff = GaussianDiffusion.from_schedule("cosine", 1000).respace(steps)
    denoise = gaussian_denoiser(diff, 0.1, 0.5)
    anc = ancestral_sampler(diff, denoise, (500, 2), generator=torch.Generator().manual_seed(0))
    ddim1 = ddim_sampler(diff, denoise, (500, 2), eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ddim1, anc, atol=1e-4)


def test_samplers_report_each_step():
    diff = GaussianDiffusion.from_schedule("linear", 100).respace(7)
    seen: list[StepInfo] = []
    ancestral_sampler(diff, gaussian_denoiser(diff, 0.0, 0.5), (3, 2), callback=seen.append)
    assert [s.i for s in seen] == list(range(1, 8)) and all(s.n == 7 for s in seen)
    assert seen[0].t == 0.0 and all(a.t < b.t for a, b in zip(seen, seen[1:], strict=False)) and seen[-1].t == 0.99
    assert seen[0].theta.shape == (3, 2) and seen[-1].output.shape == (3, 2)


# --- the model ----------------------------------------------------------------------------------------------------
def tiny_image_model(kind: str = "discrete", **kwargs) -> DDPM:
    cfg = load_config("mnist-ddpm" if kind == "discrete" else "mnist-ddpm-discretized")
    cfg.model.network.name = "mlp"
    cfg.model.network.kwargs = {"hidden": 16, "depth": 1}
    cfg.model.layout = "flat"
    cfg.model.ddpm.timesteps = kwargs.pop("timesteps", 20)
    for key, value in kwargs.items():
        setattr(cfg.model, key, value)
    info = DataSpec(kind=kind, shape=(1, 6, 6), num_classes=2 if kind == "discrete" else None,
                    num_bins=16 if kind == "discretized" else None, num_labels=10)
    return build_model(cfg.model, info)


def test_features_and_presets_match_the_bfn_twins():
    from bfn.config import to_dict

    for bfn_name, ddpm_name in (("mnist-discrete", "mnist-ddpm"), ("mnist-discretized", "mnist-ddpm-discretized")):
        a, b = to_dict(load_config(bfn_name)), to_dict(load_config(ddpm_name))
        assert a["data"] == b["data"] and a["train"] == b["train"] and a["sample"] == b["sample"]
        assert a["model"]["network"] == b["model"]["network"]
        assert {k for k in a["model"] if a["model"][k] != b["model"][k]} <= {"type", "ddpm"}
        assert b["model"]["type"] == "ddpm"


@pytest.mark.parametrize("kind", ["discrete", "discretized"])
def test_model_interface(kind, tmp_path):
    model = tiny_image_model(kind)
    gen = torch.Generator().manual_seed(0)
    if kind == "discrete":
        x = torch.randint(0, 2, (5, 1, 6, 6), generator=gen)
    else:
        x = model.values.float()[torch.randint(0, 16, (5, 1, 6, 6), generator=gen)]
    loss = model(x)
    assert loss.shape == (5,) and torch.isfinite(loss).all()
    nll = model.nll(x, generator=gen)
    assert nll.shape == (5,) and torch.isfinite(nll).all() and (nll > 0).all()
    for final in ("sample", "mode"):
        s = model.sample(3, 4, generator=gen, final=final)
        assert s.shape == (3, 1, 6, 6)
        if kind == "discrete":
            assert s.dtype == torch.int64 and set(s.unique().tolist()) <= {0, 1}
        else:
            assert s.dtype == torch.float32 and torch.isin(s, model.values.float()).all()
    mean = model.sample(3, 4, sampler="ddim", final="mean", generator=gen)
    assert mean.shape == ((3, 1, 6, 6, 2) if kind == "discrete" else (3, 1, 6, 6))
    # the paper's sampler name is the DDPM paper's (ancestral); all T steps; seeded = reproducible
    a = model.sample(2, None, sampler="paper", generator=torch.Generator().manual_seed(5))
    b = model.sample(2, 20, sampler="ancestral", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # conditional sampling with guidance
    model_c = tiny_image_model(kind, conditional=True)
    assert model_c.sample(2, 3, cond=7, guidance=1.0).shape == (2, 1, 6, 6)
    # evolution strips read x_t and x0_hat as display values
    traj = record_sampling(model, 2, 10, k=4)
    inputs, outputs = traj.stacked()
    assert inputs.shape == (4, 2, 1, 6, 6) and outputs.shape == (4, 2, 1, 6, 6)
    # save -> load -> the same numbers
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path)
    assert isinstance(loaded, DDPM)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.allclose(model.eval().nll(x, generator=g1), loaded.nll(x, generator=g2))


def test_model_errors():
    model = tiny_image_model("discrete")
    with pytest.raises(DataError, match="shape"):
        model(torch.zeros(2, 1, 5, 5, dtype=torch.long))
    with pytest.raises(DataError, match="class indices"):
        model(torch.full((2, 1, 6, 6), 2))
    with pytest.raises(ConfigError, match="at most 20"):
        model.sample(2, 21)
    with pytest.raises(ConfigError, match="unknown DDPM sampler"):
        model.sample(2, 5, sampler="ode1")
    with pytest.raises(ConfigError, match="unconditional"):
        model.sample(2, 5, cond=3)


class OracleBernoulliDDPM(DDPM):
    """A DDPM whose denoiser is the Bayes-optimal one for independent Bernoulli(p) pixels (`bernoulli_denoiser`)."""

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__(nn.Identity(), DDPMConfig(timesteps=1000, clip_x0=False), data_kind="discrete",
                         data_shape=(p.numel(),))
        self.p = p

    def denoise(self, x_t, i, process, cond=None, guidance=None):
        return bernoulli_denoiser(process, self.p)(x_t, i)


def test_pilot_proposal_keeps_the_bound_unbiased_and_shrinks_its_spread():
    """The proposal over steps 1..S (decoder term included) that `nll_pilot` measures on 32 pilot examples: with
    the Bayes-optimal denoiser the evaluated bound still equals the entropy, and the estimate's spread per example
    is smaller than with the analytic `step_proposal` (which assumes unit-Gaussian data) at the same random
    numbers and the same cost (two network evaluations per example)."""
    from bfn.evaluation.nll import evaluate_nll

    d, n = 8, 16000
    p = torch.rand(d, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    entropy = float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())
    model = OracleBernoulliDDPM(p)
    x = torch.bernoulli(p.expand(n, d), generator=torch.Generator().manual_seed(1)).long()
    pilot = model.nll_pilot(x[:32], ["inf"], generator=torch.Generator().manual_seed(3))
    q = pilot["inf"]
    assert q.shape == (1000,) and bool((q > 0).all()) and abs(float(q.sum()) - 1) < 1e-9
    out = evaluate_nll(model, x, steps=["inf"], repeats=2, batch_size=n, seed=0, per_example=True)["results"]["inf"]
    assert out["nats_se"] < 0.1  # power: H is about 4.7 nats
    assert abs(out["nats"] - entropy) < 4 * out["nats_se"], (out["nats"], entropy, out["nats_se"])
    u = torch.rand(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    spreads = {}
    for name, kwargs in (("analytic", {}), ("pilot", {"pilot": pilot})):
        est = model.nll_bounds(x, ["inf"], u=u, generator=torch.Generator().manual_seed(5), **kwargs)["inf"]
        spreads[name] = float(est.std())
    assert spreads["pilot"] < 0.8 * spreads["analytic"], spreads


def test_importance_bound_with_the_decoder_in_the_sum_is_unbiased():
    """`importance_bound` (decoder term L_0 sampled with the rest, two stratified steps per example, an arbitrary
    proposal) has the same expectation as the plain estimator of `variational_bound` (uniform step, L_0 at its own
    x_1) for an imperfect deterministic denoiser, on binary and on 4-level data, within 4 standard errors."""
    from bfn.diffusion.gaussian import importance_bound

    process = GaussianDiffusion.from_schedule("linear", 1000).respace(20)

    def denoise(x_t, i):
        return torch.tanh(1.5 * x_t)

    for values, levels in ((data_values("discrete", num_classes=2), 2), (data_values("discretized", num_bins=4), 4)):
        n = 20000
        g = torch.Generator().manual_seed(0)
        x0 = values[torch.randint(0, levels, (n, 6), generator=g)]
        q = torch.rand(20, generator=g, dtype=torch.float64) + 0.05
        u = torch.rand(n, generator=g, dtype=torch.float64)
        new = importance_bound(process, denoise, x0, u, q, values=values, generator=g)
        old = variational_bound(process, denoise, x0, values=values, generator=g).total.double()
        se = math.sqrt(float(new.var()) / n + float(old.var()) / n)
        assert se < 0.05 * float(old.mean().abs())  # power
        assert abs(float(new.mean() - old.mean())) < 4 * se, (float(new.mean()), float(old.mean()), se)
    with pytest.raises(ValueError, match="proposal has shape"):
        importance_bound(process, denoise, x0, u, q[:5], values=values)
