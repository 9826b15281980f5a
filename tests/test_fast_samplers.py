"""Fast BFN solvers (ode1, ode2, sde1, sde2) on toys with a known data distribution and the Bayes-optimal output
plugged in as the network, so that every error left is the sampler's."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from bfn.errors import ConfigError
from bfn.flows import Categorical, ContinuousFlow, DiscreteFlow, DiscretizedFlow, PointMass, bin_centres
from bfn.samplers import SAMPLERS
from bfn.samplers.bfn_solver import bfn_solver
from bfn.samplers.gaussian_path import GaussianPath
from bfn.samplers.timegrid import time_grid

SOLVERS = ["ode1", "ode2", "sde1", "sde2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared, loaded CPU two spinning threads made these tests ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# --- continuous toy: the 1-D four-component mixture of the mixture-1d preset ------------------------------
MEANS = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64)
WEIGHTS = torch.tensor([0.4, 0.1, 0.2, 0.3], dtype=torch.float64)
STD = 0.05


def mixture_x_hat(flow: ContinuousFlow):
    """E[x | mu, t] for mu | x ~ N(gamma x, gamma (1 - gamma)) and x from the mixture: per component k,
    mu ~ N(gamma m_k, gamma^2 v^2 + s^2), E[x | mu, k] = m_k + gamma v^2 (mu - gamma m_k) / (gamma^2 v^2 + s^2)."""

    def output_fn(theta, t):
        mu = theta.mean.double().unsqueeze(-1)  # [B, 1, 1]
        g = flow.gamma(t.double()).reshape(-1, 1, 1)
        var = g**2 * STD**2 + g * (1 - g)
        log_r = WEIGHTS.log() - 0.5 * (mu - g * MEANS) ** 2 / var - 0.5 * var.log()
        cond = MEANS + g * STD**2 * (mu - g * MEANS) / var
        x_hat = (log_r.softmax(-1) * cond).sum(-1)
        return PointMass(torch.where(g[..., 0] > 0, x_hat, (WEIGHTS * MEANS).sum()).float())  # E[x] at t = 0

    return output_fn


def mixture_cdf(x: torch.Tensor) -> torch.Tensor:
    z = (x.double().unsqueeze(-1) - MEANS) / STD
    return (WEIGHTS * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)


def w1_to_mixture(samples: torch.Tensor) -> float:
    """W1 = integral |F_n(x) - F(x)| dx against the exact mixture CDF, on a fine grid over [-1.5, 1.5]."""
    grid = torch.linspace(-1.5, 1.5, 6001, dtype=torch.float64)
    emp = torch.searchsorted(samples.double().reshape(-1).sort().values, grid, right=True) / samples.numel()
    return float((emp - mixture_cdf(grid)).abs().sum() * (grid[1] - grid[0]))


def mixture_draw(n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=gen)
    return (MEANS[k] + STD * torch.randn(n, generator=gen, dtype=torch.float64)).float()


# --- discrete toy: two correlated variables with K = 3 -----------------------------------------------------
JOINT = torch.tensor([[0.30, 0.02, 0.03],
                      [0.05, 0.20, 0.02],
                      [0.01, 0.07, 0.30]], dtype=torch.float64)
LOG_JOINT = JOINT.log().float()


def joint_output_fn(theta, t):
    """Bayes-optimal p_O for logits y = theta [B, 2, 3]: ln p(y | c) = y_1[c_1] + y_2[c_2] + const, so the posterior
    over configurations is proportional to P(c) exp(y_1[c_1] + y_2[c_2]); p_O is its per-variable marginals."""
    post = (LOG_JOINT + theta[:, 0, :, None] + theta[:, 1, None, :]).flatten(1).softmax(-1).view(-1, 3, 3)
    return Categorical(torch.stack([post.sum(2), post.sum(1)], dim=1).clamp_min(1e-30).log())


def tv_to_joint(samples: torch.Tensor) -> float:
    counts = torch.bincount(samples[:, 0] * 3 + samples[:, 1], minlength=9).double() / samples.shape[0]
    return 0.5 * float((counts - JOINT.reshape(-1)).abs().sum())


CONT_FLOW = ContinuousFlow(sigma_1=0.01)
DISC_FLOW = DiscreteFlow(num_classes=3, beta_1=10.0)
N_CONT, N_DISC = 10000, 50000


@functools.cache
def continuous_w1(name: str, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    return w1_to_mixture(SAMPLERS[name](CONT_FLOW, mixture_x_hat(CONT_FLOW), (N_CONT, 1), steps, generator=gen))


@functools.cache
def discrete_tv(name: str, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    return tv_to_joint(SAMPLERS[name](DISC_FLOW, joint_output_fn, (N_DISC, 2), steps, generator=gen))


# --- mechanics ------------------------------------------------------------------------------------------------
def test_registered():
    for name in SOLVERS:
        assert name in SAMPLERS and SAMPLERS[name].__doc__


@pytest.mark.parametrize("flow", [ContinuousFlow(sigma_1=0.001), DiscreteFlow(num_classes=2, beta_1=3.0)],
                         ids=lambda f: f.kind)
def test_time_grids(flow):
    path = GaussianPath(flow)
    grid = time_grid(path, 8, spacing="lambda", lambda_start=-3.5)
    assert len(grid) == 9 and grid[-1] == 1.0 and all(a < b for a, b in zip(grid[:-1], grid[1:], strict=True))
    lams = torch.tensor([path.log_snr(t) for t in grid], dtype=torch.float64)
    assert float(lams[0]) == pytest.approx(-3.5, abs=1e-9)
    torch.testing.assert_close(lams.diff(), torch.full((8,), float(lams[-1] + 3.5) / 8, dtype=torch.float64))
    grid = time_grid(path, 8, spacing="time")
    steps = torch.tensor(grid, dtype=torch.float64).diff()
    torch.testing.assert_close(steps, torch.full((8,), (1 - grid[0]) / 8, dtype=torch.float64))
    assert time_grid(path, 4, spacing="paper") == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match="lambda_start"):
        time_grid(path, 4, lambda_start=path.log_snr(1.0) + 1)
    # default start: the initial draw N(0, s^2) leaves out a share exp(2 lambda) |x0|^2_max = exp(-4) of the noise
    start = path.log_snr(time_grid(path, 8)[0])
    assert start == pytest.approx(-2.0 - (0.5 * math.log(2) if flow.kind == "discrete" else 0.0), abs=1e-9)


def test_discretized_grid_ends_at_log_bins():
    """Discretised data: the evaluations spread evenly in lambda from the start to ln K, then one step to t = 1;
    when lambda_1 < ln K (large sigma_1) the grid is the plain uniform one."""
    path = GaussianPath(DiscretizedFlow(num_bins=16, sigma_1=0.001))
    grid = time_grid(path, 8)
    lams = torch.tensor([path.log_snr(t) for t in grid[:-1]], dtype=torch.float64)
    assert grid[-1] == 1.0 and float(lams[-1]) == pytest.approx(math.log(16), abs=1e-9)
    torch.testing.assert_close(lams.diff(), torch.full((7,), (math.log(16) + 2) / 7, dtype=torch.float64))
    assert time_grid(path, 1) == [path.time_at(-2.0), 1.0]
    wide = GaussianPath(DiscretizedFlow(num_bins=16, sigma_1=0.1))  # lambda_1 = 0.5 ln 99 = 2.30 < ln 16
    assert time_grid(wide, 8) == time_grid(wide, 8, lambda_end=math.inf)
    with pytest.raises(ConfigError, match="lambda_end"):
        time_grid(path, 4, lambda_end=-3.0)


def test_signal_and_noise_match_the_bayesian_flow_distribution():
    """Closed forms of the papers' flow distributions, written out: continuous (§4.4) mu ~ N(gamma x, gamma (1 -
    gamma)), gamma = 1 - sigma_1^(2t); discrete (§6.7) y ~ N(beta (K e_x - 1), beta K I), beta = beta_1 t^2."""
    path = GaussianPath(CONT_FLOW)  # sigma_1 = 0.01
    gamma = 1 - 0.01 ** 0.6
    assert path.signal(0.3) == pytest.approx(gamma, rel=1e-12)
    assert path.noise(0.3) ** 2 == pytest.approx(gamma * 0.01 ** 0.6, rel=1e-12)
    path = GaussianPath(DISC_FLOW)  # K = 3, beta_1 = 10
    assert path.signal(0.3) == pytest.approx(10 * 0.3**2, rel=1e-12)
    assert path.noise(0.3) ** 2 == pytest.approx(3 * 10 * 0.3**2, rel=1e-12)
    # and by Monte Carlo from the flows' own samplers of p_F
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200_000, 1), 0.5)
    mu = CONT_FLOW.flow_sample(x, torch.full((200_000,), 0.3), generator=gen).mean
    assert float(mu.mean()) == pytest.approx(0.5 * gamma, abs=5e-3)
    assert float(mu.var()) == pytest.approx(gamma * 0.01 ** 0.6, rel=2e-2)


def _discretized_output_fn(flow: DiscretizedFlow):
    """A smooth stand-in network for discretised data: eps-hat = 0.3 tanh(mu), ln sigma_eps = -1."""

    def output_fn(theta, t):
        net = torch.stack([0.3 * theta.mean.tanh(), torch.full_like(theta.mean, -1.0)], dim=-1)
        return flow.output_distribution(net, theta, t)

    return output_fn


@pytest.mark.parametrize("kind", ["continuous", "discretized", "discrete"])
def test_sde1_on_the_paper_grid_is_the_output_mean_sampler(kind):
    """The first-order SDE step is the Gaussian posterior q(z_s | z_t, x0 = D), i.e. the Bayesian update with the
    output mean sent as data (Xue et al. 2024): same random stream, same samples."""
    if kind == "continuous":
        flow, fn, shape = CONT_FLOW, mixture_x_hat(CONT_FLOW), (500, 1)
    elif kind == "discretized":
        flow = DiscretizedFlow(num_bins=16, sigma_1=0.01)
        fn, shape = _discretized_output_fn(flow), (200, 3)
    else:
        flow, fn, shape = DISC_FLOW, joint_output_fn, (500, 2)
    a = bfn_solver(flow, fn, shape, 7, order=1, stochastic=True, spacing="paper", final="mean",
                   generator=torch.Generator().manual_seed(0))
    b = SAMPLERS["output-mean"](flow, fn, shape, 7, final="mean", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", SOLVERS)
def test_discretized_bins_shapes_reproducibility_callback(name):
    flow = DiscretizedFlow(num_bins=16, sigma_1=0.001)
    fn = _discretized_output_fn(flow)
    calls = []
    x1 = SAMPLERS[name](flow, fn, (6, 4, 3), 9, generator=torch.Generator().manual_seed(1), callback=calls.append)
    x2 = SAMPLERS[name](flow, fn, (6, 4, 3), 9, generator=torch.Generator().manual_seed(1))
    x3 = SAMPLERS[name](flow, fn, (6, 4, 3), 9, generator=torch.Generator().manual_seed(2))
    assert x1.shape == (6, 4, 3) and x1.dtype == torch.float32
    assert torch.isin(x1, bin_centres(16)).all()
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert [c.i for c in calls] == list(range(1, 10)) and all(c.n == 9 for c in calls)
    times = [c.t for c in calls]
    assert times[0] > 0 and all(a < b < 1 for a, b in zip(times[:-1], times[1:], strict=True))
    for c in calls:  # the precision field is carried along as 1 + beta(t) = sigma_1^(-2t)
        torch.testing.assert_close(c.theta.precision, torch.full((6,), 0.001 ** (-2 * c.t)))
        assert c.theta.mean.shape == (6, 4, 3) and c.output.probs.shape == (6, 4, 3, 16)
    mode = SAMPLERS[name](flow, fn, (6, 4, 3), 9, generator=torch.Generator().manual_seed(1), final="mode")
    assert torch.isin(mode, bin_centres(16)).all()


def test_one_step_and_bad_arguments():
    for name in SOLVERS:
        out = SAMPLERS[name](DISC_FLOW, joint_output_fn, (4, 2), 1, generator=torch.Generator().manual_seed(0))
        assert out.shape == (4, 2) and out.dtype == torch.long
    with pytest.raises(ConfigError, match="steps"):
        SAMPLERS["ode2"](DISC_FLOW, joint_output_fn, (4, 2), 0)
    with pytest.raises(ValueError, match="order"):
        bfn_solver(DISC_FLOW, joint_output_fn, (4, 2), 3, order=3)
    with pytest.raises(ConfigError, match="spacing"):
        bfn_solver(DISC_FLOW, joint_output_fn, (4, 2), 3, spacing="karras")


# --- convergence on the toys -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SOLVERS)
def test_continuous_converges_to_mixture(name):
    w1 = {n: continuous_w1(name, n) for n in (5, 10, 50, 200)}
    floor = w1_to_mixture(mixture_draw(N_CONT, torch.Generator().manual_seed(1)))  # an exact sampler's W1
    print(name, {k: round(v, 4) for k, v in w1.items()}, "floor", round(floor, 4))
    assert w1[5] > w1[10] > w1[50] and w1[10] > w1[200]
    assert w1[200] < 0.012  # exact draws of 10,000 points give 0.002 to 0.008


def test_continuous_second_order_beats_first_and_the_paper():
    assert continuous_w1("ode2", 10) < 0.5 * continuous_w1("ode1", 10)
    assert continuous_w1("sde2", 10) < 0.5 * continuous_w1("sde1", 10)
    assert continuous_w1("ode2", 10) < 0.5 * continuous_w1("paper", 10)


@pytest.mark.parametrize("name", SOLVERS)
def test_discrete_converges_to_joint(name):
    tv = {n: discrete_tv(name, n) for n in (5, 10, 50, 100)}
    print(name, {k: round(v, 4) for k, v in tv.items()})
    assert max(tv[50], tv[100]) < 0.008  # sampling noise alone gives about 0.004 for 50,000 draws of 9 configurations
    assert tv[5] > tv[50] or tv[5] < 0.008  # sde2 is within the noise already at 5 steps


def test_discrete_second_order_beats_first_and_the_paper():
    assert discrete_tv("ode2", 10) < 0.6 * discrete_tv("ode1", 10)
    # sde2 vs sde1 is a clear win at 5 steps only; at 10 both sit within 2x of the sampling-noise floor
    assert discrete_tv("sde2", 5) < 0.6 * discrete_tv("sde1", 5)
    # ode1 is no better than the output-mean sampler (= sde1 on the paper's grid) here; the others are
    for name in ("ode2", "sde1", "sde2"):
        assert discrete_tv(name, 10) < 0.7 * discrete_tv("output-mean", 10) < discrete_tv("paper", 10)


# --- discretised toy: two pixels on 16 bins, four configurations, the Bayes-optimal output ------------------------
BINS = 16
ATOMS = torch.tensor([[3, 3], [3, 12], [12, 3], [8, 8]])  # bin indices of the four two-pixel configurations
ATOM_WEIGHTS = torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=torch.float64)
DZ_FLOW = DiscretizedFlow(num_bins=BINS, sigma_1=0.001)
N_DZ = 20000


class _BinProbs:
    """p_O over bin centres given per-pixel probabilities [B, D, K] (what samplers use of an output distribution)."""

    def __init__(self, probs: torch.Tensor) -> None:
        self.probs, self.centres = probs, bin_centres(BINS).double()

    @property
    def mean(self) -> torch.Tensor:
        return (self.probs * self.centres).sum(-1).float()

    @property
    def mode(self) -> torch.Tensor:
        return self.centres[self.probs.argmax(-1)].float()

    def sample(self, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.probs.flatten(0, -2), 1, generator=generator).view(self.probs.shape[:-1])
        return self.centres[k].float()


def atoms_output_fn(theta, t):
    """Bayes-optimal p_O: mu_d | x ~ N(gamma x_d, gamma (1 - gamma)) per pixel, so the posterior over the four
    configurations is proportional to w_a prod_d N(mu_d; gamma x_ad, gamma (1 - gamma)); p_O = its marginals."""
    x = bin_centres(BINS).double()[ATOMS]  # [4, 2]
    g = DZ_FLOW.gamma(t.double()).view(-1, 1, 1)
    var = (g * (1 - g)).clamp_min(1e-300)
    log_post = ATOM_WEIGHTS.log() - (0.5 * (theta.mean.double()[:, None, :] - g * x) ** 2 / var).sum(-1)
    post = torch.where(g.view(-1, 1) > 0, log_post.softmax(-1), ATOM_WEIGHTS.expand_as(log_post))  # [B, 4]
    one_hot = torch.nn.functional.one_hot(ATOMS, BINS).double()  # [4, 2, K]
    return _BinProbs(torch.einsum("ba,adk->bdk", post, one_hot))


@functools.cache
def discretized_tv(name: str, steps: int, lambda_end: float | None = None) -> float:
    gen = torch.Generator().manual_seed(0)
    if name in SOLVERS:
        x = bfn_solver(DZ_FLOW, atoms_output_fn, (N_DZ, 2), steps, order=int(name[-1]),
                       stochastic=name.startswith("sde"), lambda_end=lambda_end, generator=gen)
    else:
        x = SAMPLERS[name](DZ_FLOW, atoms_output_fn, (N_DZ, 2), steps, generator=gen)
    k = ((x.double() + 1) * BINS / 2).floor().long().clamp(0, BINS - 1)
    counts = torch.bincount(k[:, 0] * BINS + k[:, 1], minlength=BINS * BINS).double() / N_DZ
    true = torch.zeros(BINS * BINS, dtype=torch.float64)
    true[ATOMS[:, 0] * BINS + ATOMS[:, 1]] = ATOM_WEIGHTS
    return 0.5 * float((counts - true).abs().sum())


@pytest.mark.parametrize("name", SOLVERS)
def test_discretized_converges_to_the_data(name):
    tv = {n: discretized_tv(name, n) for n in (5, 10, 100)}
    print(name, {k: round(v, 4) for k, v in tv.items()})
    assert tv[5] > tv[10] > tv[100] or tv[10] < 0.015
    assert tv[100] < 0.02  # 20,000 exact draws of four configurations: about 0.003 to 0.005


@pytest.mark.parametrize("name", SOLVERS)
def test_discretized_error_vanishes_as_steps_grow(name):
    """Every solver's error must fall to the sampling floor (about 0.002 to 0.006 here) as evaluations grow. With a
    start fixed at lambda = -2 the ODE solvers stayed at TV 0.011 from 100 to 400 steps: the initial draw leaves out
    the signal's share of the variance and a deterministic solver carries that bias to the end; the default grid
    now starts lower as steps grow (bfn.samplers.timegrid)."""
    assert discretized_tv(name, 200) < 0.008


def test_default_start_moves_down_beyond_ten_steps():
    path = GaussianPath(DZ_FLOW)
    starts = {n: path.log_snr(time_grid(path, n)[0]) for n in (5, 10, 40, 1000)}
    assert starts[5] == pytest.approx(-2.0, abs=1e-9) and starts[10] == pytest.approx(-2.0, abs=1e-9)
    assert starts[40] == pytest.approx(-2.0 - 0.5 * math.log(4), abs=1e-9)
    assert starts[1000] == pytest.approx(-2.0 - 0.5 * math.log(100), abs=1e-9)


def test_discretized_grid_end_and_second_order():
    """Ending the grid at lambda = ln K (the default for discretised data, see bfn.samplers.timegrid) beats the
    uniform grid up to lambda_1 at 10 NFE for every solver, and second order beats first order."""
    for name in SOLVERS:
        assert discretized_tv(name, 10) < 0.75 * discretized_tv(name, 10, lambda_end=math.inf), name
    assert discretized_tv("ode2", 10) < 0.5 * discretized_tv("ode1", 10)
    assert discretized_tv("sde2", 10) < 0.5 * discretized_tv("sde1", 10)


def test_final_jump_draws_the_bins_instead_of_rounding_their_mean():
    """A pixel that p_O puts in bin 7 or 8 with probabilities 0.7 / 0.3 until the end, and a network that at t = 1
    reports the bin nearest to mu: the capped grid's last jump sends a draw, so the samples keep the 0.7 / 0.3 split
    (sending the mean, -0.025, would put every sample in bin 7)."""
    centres = bin_centres(BINS).double()

    def output_fn(theta, t):
        b, d = theta.mean.shape
        if float(t[0]) == 1.0:
            nearest = (theta.mean.double()[..., None] - centres).abs().argmin(-1)
            return _BinProbs(torch.nn.functional.one_hot(nearest, BINS).double())
        probs = torch.zeros(b, d, BINS, dtype=torch.float64)
        probs[..., 7], probs[..., 8] = 0.7, 0.3
        return _BinProbs(probs)

    for name in SOLVERS:
        x = SAMPLERS[name](DZ_FLOW, output_fn, (20000, 1), 6, generator=torch.Generator().manual_seed(0))
        share_8 = float((x == centres[8].float()).double().mean())
        assert torch.isin(x, centres.float()[[7, 8]]).all() and abs(share_8 - 0.3) < 0.015, (name, share_8)
