"""The BFN math against closed forms, Monte Carlo estimates and invariants (Graves et al. 2023, §4-6)."""

import math

import pytest
import torch
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import MixtureSameFamily, MultivariateNormal, Normal

from bfn.errors import DataError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow, GaussianParams, bin_centres


def full(b: int, value: float) -> torch.Tensor:
    return torch.full((b,), value)


# --- flow distributions: moments ------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_continuous_flow_moments(t, gen):
    flow = ContinuousFlow(sigma_1=0.02)
    x = torch.tensor([-0.7, 0.0, 0.4]).repeat(100_000, 1)
    theta = flow.flow_sample(x, full(x.shape[0], t), generator=gen)
    g = 1 - 0.02 ** (2 * t)
    torch.testing.assert_close(theta.mean.mean(0), g * x[0], atol=5 * (g * (1 - g) / 1e5) ** 0.5, rtol=0)
    torch.testing.assert_close(theta.mean.var(0), torch.full((3,), g * (1 - g)), atol=3e-3, rtol=0.02)
    torch.testing.assert_close(theta.precision, full(x.shape[0], 0.02 ** (-2 * t)))


@pytest.mark.parametrize("k", [2, 5])
def test_discrete_flow_logit_moments(k, gen):
    flow = DiscreteFlow(num_classes=k, beta_1=3.0)
    t = 0.6
    x = torch.randint(0, k, (1,), generator=gen).repeat(200_000, 1)  # [B, 1]
    y = flow.flow_sample(x, full(x.shape[0], t), generator=gen)  # logits, shifted by their max
    beta = 3.0 * t**2
    # the shift cancels in differences: y_j - y_0 has mean beta K (e_x,j - e_x,0) and variance 2 beta K
    diff = y[:, 0, 1:] - y[:, 0, :1]
    e = torch.nn.functional.one_hot(x[0, 0], k).float()
    torch.testing.assert_close(diff.mean(0), beta * k * (e[1:] - e[0]), atol=0.03, rtol=0)
    torch.testing.assert_close(diff.var(0), torch.full((k - 1,), 2 * beta * k), atol=0, rtol=0.02)


# --- Bayesian updates: additivity and the flow distribution as their marginal ---------------------------

def test_continuous_updates_are_additive_and_match_flow(gen):
    flow = ContinuousFlow(sigma_1=0.05)
    b, n = 200_000, 7
    x = torch.full((b, 1), 0.3)
    theta = flow.prior((b, 1))
    for i in range(1, n + 1):
        alpha = flow.accuracy(i, n)
        theta = flow.update(theta, flow.sender(x, alpha, generator=gen), alpha)
    one = flow.prior((b, 1))
    total = sum(flow.accuracy(i, n) for i in range(1, n + 1))
    one = flow.update(one, flow.sender(x, total, generator=gen), total)
    ref = flow.flow_sample(x, torch.ones(b), generator=gen)
    torch.testing.assert_close(theta.precision, one.precision)
    torch.testing.assert_close(theta.precision, ref.precision, rtol=1e-4, atol=0)
    for other in (one, ref):
        assert abs(theta.mean.mean() - other.mean.mean()) < 3e-3
        assert abs(theta.mean.var() / other.mean.var() - 1) < 0.02


def test_continuous_update_is_conjugate_posterior():
    flow = ContinuousFlow(sigma_1=0.1)
    theta = GaussianParams(torch.tensor([[0.5]]), torch.tensor([4.0]))
    out = flow.update(theta, torch.tensor([[-1.0]]), torch.tensor(2.0))
    # N(0.5, 1/4) prior, y=-1 observed with precision 2: posterior precision 6, mean (0.5*4 - 1*2)/6 = 0
    torch.testing.assert_close(out.precision, torch.tensor([6.0]))
    torch.testing.assert_close(out.mean, torch.tensor([[0.0]]))


@pytest.mark.parametrize("k", [2, 4])
def test_discrete_updates_are_additive_and_match_flow(k, gen):
    flow = DiscreteFlow(num_classes=k, beta_1=2.0)
    b, n = 100_000, 5
    x = torch.full((b, 1), k - 1)
    theta = flow.prior((b, 1))
    for i in range(1, n + 1):
        alpha = flow.accuracy(i, n)
        theta = flow.update(theta, flow.sender(x, alpha, generator=gen), alpha)
    ref = flow.flow_sample(x, torch.ones(b), generator=gen)
    p, q = theta.softmax(-1), ref.softmax(-1)
    torch.testing.assert_close(p.mean(0), q.mean(0), atol=5e-3, rtol=0)
    torch.testing.assert_close(p.std(0), q.std(0), atol=5e-3, rtol=0)


def test_discrete_update_never_overflows_for_large_k(gen):
    flow = DiscreteFlow(num_classes=27, beta_1=9.0)
    theta = flow.prior((4, 8))
    x = torch.randint(0, 27, (4, 8), generator=gen)
    for i in range(1, 21):
        alpha = flow.accuracy(i, 20)
        theta = flow.update(theta, flow.sender(x, alpha, generator=gen), alpha)
    assert torch.isfinite(theta.softmax(-1)).all()


def test_accuracies_sum_to_beta_one():
    for flow, b1 in ((ContinuousFlow(sigma_1=0.01), 0.01**-2 - 1), (DiscreteFlow(beta_1=3.0), 3.0)):
        total = sum(flow.accuracy(i, 13) for i in range(1, 14))
        assert math.isclose(float(total), b1, rel_tol=1e-5)


# --- discrete-time loss: the sender/receiver KL against independent computations ------------------------

def kl_mc_discrete(flow: DiscreteFlow, x: int, logits: torch.Tensor, alpha: float, m: int, gen) -> float:
    """KL(N(alpha(K e_x - 1), alpha K I) || sum_k p_k N(alpha(K e_k - 1), alpha K I)) by torch.distributions."""
    k = flow.num_classes
    eye = torch.eye(k)
    cov = alpha * k * eye
    sender = MultivariateNormal(alpha * (k * eye[x] - 1), cov)
    receiver = MixtureSameFamily(TorchCategorical(logits=logits),
                                 MultivariateNormal(alpha * (k * eye - 1), cov.expand(k, k, k)))
    y = sender.sample((m,))
    return float((sender.log_prob(y) - receiver.log_prob(y)).mean())


@pytest.mark.parametrize("k", [2, 3, 6])
def test_discrete_time_loss_matches_monte_carlo_kl(k, gen):
    torch.manual_seed(0)
    flow = DiscreteFlow(num_classes=k, beta_1=3.0)
    n, t, x_class = 10, 0.4, 1
    logits = torch.randn(k, generator=gen) * 2
    alpha = float(flow.accuracy_between(torch.tensor(t), torch.tensor(t + 1 / n)))
    m = 100_000
    x = torch.full((m, 1), x_class)
    net_out = logits.expand(m, 1, k) if k > 2 else (logits[1] - logits[0]).expand(m, 1, 1)
    p_out = flow.output_distribution(net_out, flow.prior((m, 1)), full(m, t))
    ours = flow.discrete_time_loss(x, p_out, full(m, t), n, generator=gen)
    reference = n * kl_mc_discrete(flow, x_class, logits, alpha, m, gen)
    se = float(ours.std()) / math.sqrt(m)
    assert abs(float(ours.mean()) - reference) < 4 * se + 0.01 * reference


def test_discrete_time_loss_closed_forms(gen):
    flow = DiscreteFlow(num_classes=3, beta_1=3.0)
    n, t, m = 20, 0.5, 20_000
    alpha = float(flow.accuracy_between(torch.tensor(t), torch.tensor(t + 1 / n)))
    x = torch.zeros(m, 2, dtype=torch.long)
    right = torch.tensor([60.0, 0.0, 0.0]).expand(m, 2, 3)
    wrong = torch.tensor([0.0, 60.0, 0.0]).expand(m, 2, 3)
    theta = flow.prior((m, 2))
    loss_right = flow.discrete_time_loss(x, flow.output_distribution(right, theta, full(m, t)), full(m, t), n,
                                         generator=gen)
    loss_wrong = flow.discrete_time_loss(x, flow.output_distribution(wrong, theta, full(m, t)), full(m, t), n,
                                         generator=gen)
    assert float(loss_right.abs().max()) < 1e-4  # receiver == sender: KL 0
    # KL of two Gaussians with covariance alpha K I whose means differ by alpha K (e_0 - e_1): alpha K per var
    assert math.isclose(float(loss_wrong.mean()), n * 2 * alpha * 3, rel_tol=0.02)


def test_discretized_time_loss_matches_quadrature(gen):
    flow = DiscretizedFlow(num_bins=8, sigma_1=0.05)
    n, t = 10, 0.7
    alpha = float(flow.accuracy_between(torch.tensor(t), torch.tensor(t + 1 / n)))
    centres = bin_centres(8)
    x_val = float(centres[5])
    m = 200_000
    x = torch.full((m, 1), x_val)
    theta = GaussianParams(torch.full((m, 1), 0.2), torch.ones(m))
    net_out = torch.tensor([0.3, -0.5]).expand(m, 1, 2)
    p_out = flow.output_distribution(net_out, theta, full(m, t))
    ours = flow.discrete_time_loss(x, p_out, full(m, t), n, generator=gen)
    # independent: integrate p_S (ln p_S - ln p_R) on a grid with torch.distributions densities
    probs = p_out.probs[0, 0]
    std = alpha**-0.5
    y = torch.linspace(x_val - 10 * std, x_val + 10 * std, 200_001, dtype=torch.float64)
    sender = Normal(torch.tensor(x_val, dtype=torch.float64), std)
    receiver = MixtureSameFamily(TorchCategorical(probs=probs.double()), Normal(centres.double(), std))
    integrand = sender.log_prob(y).exp() * (sender.log_prob(y) - receiver.log_prob(y))
    reference = n * float(torch.trapezoid(integrand, y))
    se = float(ours.std()) / math.sqrt(m)
    assert abs(float(ours.mean()) - reference) < 4 * se + 1e-3


def test_continuous_discrete_time_loss_is_gaussian_kl():
    flow = ContinuousFlow(sigma_1=0.01)
    n, t = 50, torch.tensor([0.3])
    x, x_hat = torch.tensor([[0.5, -0.2]]), torch.tensor([[0.1, 0.1]])
    from bfn.flows import PointMass
    loss = flow.discrete_time_loss(x, PointMass(x_hat), t, n)
    i = 0.3 * n + 1
    expected = n * (1 - 0.01 ** (2 / n)) / (2 * 0.01 ** (2 * i / n)) * float(((x - x_hat) ** 2).sum())
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


# --- L^n approaches L^inf as n grows, for a fixed "network" ---------------------------------------------

def expected_losses_discrete(ns, gen):
    """E over t (exact average over the n steps) and the flow of L^n, and of L^inf, for a fixed network."""
    flow = DiscreteFlow(num_classes=2, beta_1=20.0)  # a large beta_1 makes the 10-step loss visibly different
    m = 40_000
    x = torch.ones(m, 1, dtype=torch.long)

    def net(theta):  # a fixed, imperfect "network": damped, biased input log-odds
        return 0.5 * (theta[..., 1:] - theta[..., :1]) - 0.5

    out = {}
    for n in ns:
        step = max(1, n // 50)  # average over 50 evenly spread steps (exact for n <= 50)
        vals = []
        for i in range(1, n + 1, step):
            t = full(m, (i - 1) / n)
            theta = flow.flow_sample(x, t, generator=gen)
            vals.append(flow.discrete_time_loss(x, flow.output_distribution(net(theta), theta, t), t, n,
                                                generator=gen, antithetic=True).mean())
        out[n] = float(torch.stack(vals).mean())
    ts = torch.linspace(0, 1, 201)[:-1] + 1 / 400
    vals = []
    for tv in ts:
        t = full(m, float(tv))
        theta = flow.flow_sample(x, t, generator=gen)
        vals.append(flow.continuous_time_loss(x, flow.output_distribution(net(theta), theta, t), t).mean())
    return out, float(torch.stack(vals).mean())


def test_antithetic_estimate_has_the_same_mean_and_less_variance(gen):
    flow = DiscreteFlow(num_classes=3, beta_1=3.0)
    m, t = 100_000, torch.full((100_000,), 0.5)
    x = torch.zeros(m, 1, dtype=torch.long)
    p_out = flow.output_distribution(torch.tensor([0.5, 1.0, -1.0]).expand(m, 1, 3), flow.prior((m, 1)), t)
    plain = flow.discrete_time_loss(x, p_out, t, 100, generator=gen)
    anti = flow.discrete_time_loss(x, p_out, t, 100, generator=gen, antithetic=True)
    assert abs(float(plain.mean() - anti.mean())) < 4 * float(plain.std()) / math.sqrt(m)
    assert float(anti.var()) < 0.1 * float(plain.var())


def test_n_step_loss_approaches_continuous_time_loss(gen):
    ns = [10, 100, 1000, 10000]
    ln, linf = expected_losses_discrete(ns, gen)
    errors = [abs(ln[n] - linf) / linf for n in ns]
    print({n: round(ln[n], 4) for n in ns}, "L_inf", round(linf, 4), "rel. errors", [round(e, 4) for e in errors])
    assert errors[0] > 0.03  # 10 steps: a visibly different bound
    assert errors[2] < 0.01 and errors[3] < 0.01  # 1000 and 10000 steps: the continuous-time limit


# --- zero loss for a perfect network, sign and scale ----------------------------------------------------

def test_zero_continuous_time_loss_when_network_outputs_data(gen):
    flow = ContinuousFlow(sigma_1=0.01)
    x = torch.rand(64, 3, generator=gen) * 2 - 1
    t = torch.rand(64, generator=gen) * 0.98 + 0.01
    theta = flow.flow_sample(x, t, generator=gen)
    g = flow.gamma(t)[:, None]
    eps_perfect = (theta.mean / g - x) / ((1 - g) / g).sqrt()
    p_out = flow.output_distribution(eps_perfect.unsqueeze(-1), theta, t)
    assert float(flow.continuous_time_loss(x, p_out, t).abs().max()) < 1e-6
    disc = DiscreteFlow(num_classes=4)
    xd = torch.randint(0, 4, (16, 5), generator=gen)
    logits = 80 * torch.nn.functional.one_hot(xd, 4).float()
    td = torch.rand(16, generator=gen)
    loss = disc.continuous_time_loss(xd, disc.output_distribution(logits, disc.prior((16, 5)), td), td)
    assert float(loss.abs().max()) < 1e-8


def test_uniform_output_costs_log_k_per_variable():
    flow = DiscreteFlow(num_classes=5)
    x = torch.randint(0, 5, (8, 10))
    p_out = flow.output_distribution(torch.zeros(8, 10, 5), flow.prior((8, 10)), torch.ones(8))
    torch.testing.assert_close(flow.reconstruction_loss(x, p_out), torch.full((8,), 10 * math.log(5)))


def test_optimal_network_gives_exact_nll_in_continuous_time(gen):
    """For independent Bernoulli pixels the Bayes-optimal output is the posterior p(x | theta), whose logits are
    ln p_data + theta's logits; with it L^inf + L^r is an unbiased estimate of -ln p(x), so its mean over data is
    the entropy."""
    flow = DiscreteFlow(num_classes=2, beta_1=3.0)
    p = torch.tensor([0.1, 0.5, 0.8, 0.97])
    m = 100_000
    x = torch.bernoulli(p.expand(m, 4), generator=gen).long()
    log_odds = (p / (1 - p)).log()

    def optimal(theta):
        return (log_odds + theta[..., 1] - theta[..., 0]).unsqueeze(-1)

    t = torch.rand(m, generator=gen)
    theta = flow.flow_sample(x, t, generator=gen)
    l_inf = flow.continuous_time_loss(x, flow.output_distribution(optimal(theta), theta, t), t)
    one = torch.ones(m)
    theta1 = flow.flow_sample(x, one, generator=gen)
    l_r = flow.reconstruction_loss(x, flow.output_distribution(optimal(theta1), theta1, one))
    total = l_inf + l_r
    entropy = float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())
    se = float(total.std()) / math.sqrt(m)
    print(f"NLL {float(total.mean()):.4f} +- {se:.4f} vs entropy {entropy:.4f}")
    assert abs(float(total.mean()) - entropy) < 3 * se


# --- discretized output distribution --------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 16, 256])
def test_discretized_probs_sum_to_one_and_mean_is_khat(k, gen):
    """p_O against an independent reference: mu_x, sigma_x from §5.3 written out here, the bins integrated with
    torch.distributions.Normal's CDF in float64 over edges -1 + 2j/K, and k-hat = sum_k p(k) ((2k + 1)/K - 1) (§5.4);
    plus a Monte Carlo check that k-hat is the mean of the clipped, binned Gaussian draw."""
    flow = DiscretizedFlow(num_bins=k, sigma_1=0.01)
    theta = GaussianParams(torch.randn(32, 7, generator=gen).clamp(-1, 1), torch.ones(32))
    t = torch.rand(32, generator=gen) * 0.98 + 0.01
    net_out = torch.randn(32, 7, 2, generator=gen)
    p = flow.output_distribution(net_out, theta, t)
    g = (1 - 0.01 ** (2 * t.double()))[:, None]
    mu_x = theta.mean.double() / g - ((1 - g) / g).sqrt() * net_out[..., 0].double()
    sigma_x = ((1 - g) / g).sqrt() * net_out[..., 1].double().exp()
    edges = torch.tensor([-1 + 2 * j / k for j in range(1, k)], dtype=torch.float64)
    cdf = Normal(mu_x[..., None], sigma_x[..., None]).cdf(edges)
    ref = torch.cat([cdf[..., :1], cdf.diff(dim=-1), 1 - cdf[..., -1:]], dim=-1)
    torch.testing.assert_close(p.probs.double(), ref, atol=2e-5, rtol=0)  # mu_x, sigma_x are float32 in the flow
    assert (p.probs >= 0).all()
    centres = torch.tensor([(2 * j + 1) / k - 1 for j in range(k)], dtype=torch.float64)
    torch.testing.assert_close(p.mean.double(), (ref * centres).sum(-1), atol=2e-5, rtol=0)
    # Monte Carlo: draw z ~ N(mu_x, sigma_x^2), clip to [-1, 1], map to its bin centre; average
    z = mu_x[0, 0] + sigma_x[0, 0] * torch.randn(200_000, generator=gen, dtype=torch.float64)
    binned = centres[((z.clamp(-1, 1) + 1) * k / 2).floor().clamp(0, k - 1).long()]
    assert abs(float(binned.mean() - p.mean[0, 0])) < 5 * float(binned.std()) / math.sqrt(200_000) + 1e-6


def test_discretized_clipping_puts_tails_in_edge_bins():
    flow = DiscretizedFlow(num_bins=4)
    theta = GaussianParams(torch.zeros(1, 2), torch.ones(1))
    # t < t_min: mu_x = 0, sigma_x = 1; P(first bin) = Phi(-0.5) since the first bin covers (-inf, -0.5]
    p = flow.output_distribution(torch.zeros(1, 2, 2), theta, torch.zeros(1))
    torch.testing.assert_close(p.probs[0, 0, 0], Normal(0.0, 1.0).cdf(torch.tensor(-0.5)))
    torch.testing.assert_close(p.probs[0, 0, 1], Normal(0.0, 1.0).cdf(torch.tensor(0.0)) - 0.5 + 0.5 -
                               Normal(0.0, 1.0).cdf(torch.tensor(-0.5)))


# --- gradients at the ends of time ----------------------------------------------------------------------

@pytest.mark.parametrize("flow", [ContinuousFlow(sigma_1=0.001), DiscretizedFlow(num_bins=16),
                                  DiscreteFlow(num_classes=2, beta_1=9.0), DiscreteFlow(num_classes=27)])
@pytest.mark.parametrize("t_value", [0.0, 1e-7, 1e-3, 0.999, 1.0])
def test_gradients_finite_near_t0_and_t1(flow, t_value, gen):
    b = 4
    if flow.kind == "discrete":
        x = torch.randint(0, flow.num_classes, (b, 6), generator=gen)
    elif flow.kind == "discretized":
        x = bin_centres(16)[torch.randint(0, 16, (b, 6), generator=gen)]
    else:
        x = torch.rand(b, 6, generator=gen) * 2 - 1
    t = full(b, t_value)
    theta = flow.flow_sample(x, t, generator=gen)
    net_out = torch.zeros(b, 6, flow.output_features, requires_grad=True)
    p_out = flow.output_distribution(net_out, theta, t)
    loss = (flow.continuous_time_loss(x, p_out, t) + flow.discrete_time_loss(x, p_out, t, 10, generator=gen)
            + flow.reconstruction_loss(x, p_out)).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(net_out.grad).all()


# --- validation -----------------------------------------------------------------------------------------

def test_validation_messages():
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        DiscretizedFlow(num_bins=16).validate(torch.full((2, 3), 1.5))
    with pytest.raises(DataError, match="bins"):
        DiscretizedFlow(num_bins=16).validate(torch.full((2, 3), 0.01))
    with pytest.raises(DataError, match="0..1"):
        DiscreteFlow(num_classes=2).validate(torch.full((2, 3), 2))
    with pytest.raises(DataError, match="NaN"):
        ContinuousFlow().validate(torch.tensor([[float("nan")]]))
    with pytest.raises(DataError, match="batch dim"):
        ContinuousFlow().validate(torch.tensor([0.1]))
