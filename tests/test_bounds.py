"""Every likelihood a valid bound (issue 17): log-probabilities deep in the tails against mpmath, the schedule at
t -> 1 against closed forms, the continuous data range, and unbiased low-variance n-step terms."""

import math

import mpmath
import pytest
import torch

from bfn.diffusion import BinnedGaussian, decoder_nll
from bfn.errors import ConfigError, DataError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow, GaussianParams
from bfn.utils.binned import bin_centres, bin_edges, bin_index, binned_gaussian_log_probs, class_values
from bfn.utils.stratified import stratified_normal

mpmath.mp.dps = 60  # mpmath's exponent range is unbounded: Phi(-1e4) ~ 1e-21,714,724 is an ordinary number


def ref_log_bin(mean, std, lo, hi) -> mpmath.mpf:
    """ln [Phi((hi - mean)/std) - Phi((lo - mean)/std)] in 60-digit arithmetic, from the definition, each case in
    the form without cancellation (mpmath's precision is relative; its exponent range is unbounded)."""
    mean, std = mpmath.mpf(mean), mpmath.mpf(std)
    z_lo = None if lo is None else (mpmath.mpf(lo) - mean) / std
    z_hi = None if hi is None else (mpmath.mpf(hi) - mean) / std
    if z_lo is not None and z_lo > 0:  # the bin lies right of the mean: Phi(-z_lo) - Phi(-z_hi)
        return mpmath.log(mpmath.ncdf(-z_lo) - (0 if z_hi is None else mpmath.ncdf(-z_hi)))
    if z_hi is not None and z_hi < 0:  # left of the mean
        return mpmath.log(mpmath.ncdf(z_hi) - (0 if z_lo is None else mpmath.ncdf(z_lo)))
    tails = (0 if z_lo is None else mpmath.ncdf(z_lo)) + (0 if z_hi is None else mpmath.ncdf(-z_hi))
    return mpmath.log1p(-tails)  # the bin holds the mean: 1 minus the two tails


def ref_bin_edges(k: int, num_bins: int):
    """(lo, hi) of bin k of K equal bins on [-1, 1], the outer ones extended to infinity (Graves et al. §5.3)."""
    lo = None if k == 0 else -1 + 2 * k / num_bins
    hi = None if k == num_bins - 1 else -1 + 2 * (k + 1) / num_bins
    return lo, hi


def rel_err(got: float, want: mpmath.mpf) -> float:
    """|got - want| / |want|, where an error below 1e-12 nats counts as none: ln p of a bin holding almost all the
    mass is ~ -1e-200 and float64 (or a float32 network input) cannot resolve it relative to itself, nor matters."""
    diff = abs(mpmath.mpf(got) - want)
    return 0.0 if diff < 1e-12 else float(diff / abs(want))


# cases (mean, std, bin k of 16): probabilities from 0.5 down to ~1e-21,714,724
TAIL_CASES = [(0.03, 0.02, 8), (0.9, 1e-3, 2), (-0.5, 1e-2, 15), (50.0, 1e-3, 7), (0.3, 1e-4, 0), (1.0, 1e-2, 0),
              (-1.0, 1e-2, 15), (0.0, 10.0, 15), (0.12, 1e-6, 9), (-0.99, 0.004, 13)]


@pytest.mark.parametrize("mean,std,k", TAIL_CASES)
def test_binned_gaussian_deep_tails_against_mpmath(mean, std, k):
    """The shared binned Gaussian (BFN's discretised output, DDPM's decoder): finite and within 1e-6 relative of
    a 60-digit reference however small the probability."""
    lp = binned_gaussian_log_probs(torch.tensor([mean], dtype=torch.float64), torch.tensor([std], dtype=torch.float64),
                                   bin_centres(16, dtype=torch.float64))[0, k].item()
    want = ref_log_bin(mean, std, *ref_bin_edges(k, 16))
    assert math.isfinite(lp)
    assert rel_err(lp, want) < 1e-6, (lp, mpmath.nstr(want, 12))


def test_tail_cases_reach_below_1e_minus_300():
    """The cases above do test the far tail: several have ln p below ln 1e-300 = -690.8, one near -2e7."""
    lps = [float(ref_log_bin(m, s, *ref_bin_edges(k, 16))) for m, s, k in TAIL_CASES]
    assert sum(lp < -690.8 for lp in lps) >= 5 and min(lps) < -1e7


def test_binned_gaussian_is_normalised_and_matches_bin_helpers():
    lp = binned_gaussian_log_probs(torch.linspace(-3, 3, 7, dtype=torch.float64), torch.full((7,), 0.3),
                                   bin_centres(16, dtype=torch.float64))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(7, dtype=torch.float64), atol=1e-12)
    centres = bin_centres(16, dtype=torch.float64)
    assert torch.equal(bin_index(centres, 16), torch.arange(16))
    assert torch.allclose(bin_edges(centres), torch.tensor([-1 + 2 * k / 16 for k in range(1, 16)],
                                                           dtype=torch.float64))
    assert class_values(2).tolist() == [-1.0, 1.0] and class_values(3).tolist() == [-1.0, 0.0, 1.0]


def test_gradients_stay_finite_in_the_tails():
    """Training backpropagates through p_O (k-hat); the log-space form must not give NaN gradients."""
    mean = torch.tensor([0.0, 30.0, -30.0, 0.9], dtype=torch.float64, requires_grad=True)
    lp = binned_gaussian_log_probs(mean, torch.full((4,), 1e-3, dtype=torch.float64), bin_centres(16))
    (lp.exp() * bin_centres(16, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(mean.grad).all()


# --- BFN discretised output: reconstruction and n-step terms -----------------------------------------------------
def _discretized_at_t1(x: float, mu: float, mu_eps: float, log_sigma_eps: float, sigma_1: float = 1e-3):
    flow = DiscretizedFlow(num_bins=16, sigma_1=sigma_1)
    t = torch.ones(1)
    theta = GaussianParams(torch.tensor([[mu]]), torch.ones(1))
    net_out = torch.tensor([[[mu_eps, log_sigma_eps]]])
    return flow, flow.output_distribution(net_out, theta, t), torch.tensor([[x]])


def _ref_output_params(mu: float, mu_eps: float, log_sigma_eps: float, sigma_1: float = 1e-3):
    """mu_x, sigma_x of §5.3 at t = 1 in 60 digits, gamma = 1 - sigma_1^2 (from the float32 inputs the code sees)."""
    f32 = lambda v: float(torch.tensor(v, dtype=torch.float32))  # noqa: E731
    g = 1 - mpmath.mpf(sigma_1) ** 2
    scale = mpmath.sqrt((1 - g) / g)
    mu_x = mpmath.mpf(f32(mu)) / g - scale * mpmath.mpf(f32(mu_eps))
    return mu_x, scale * mpmath.exp(mpmath.mpf(f32(log_sigma_eps)))


@pytest.mark.parametrize("x,mu,mu_eps,log_sigma_eps", [
    (0.0625, 0.06, 0.0, 0.0),       # a likely bin
    (0.9375, -0.9, 0.0, 2.0),       # x far from mu: -ln p ~ 5e4 nats
    (-0.9375, 0.99, 3.0, -1.0),     # -ln p ~ 4e6
    (0.5625, 0.5, -50.0, 0.5),      # mu_x far beyond the edge bin
])
def test_bfn_reconstruction_deep_tail_against_mpmath(x, mu, mu_eps, log_sigma_eps):
    """L^r = -ln p_O(x | theta; 1) of the discretised BFN (§5.8): finite and equal to the reference."""
    flow, p_out, xt = _discretized_at_t1(x, mu, mu_eps, log_sigma_eps)
    got = flow.reconstruction_loss(xt, p_out).item()
    mu_x, sigma_x = _ref_output_params(mu, mu_eps, log_sigma_eps)
    want = -ref_log_bin(mu_x, sigma_x, *ref_bin_edges(int((x + 1) * 8), 16))
    assert math.isfinite(got)
    # float32 network inputs give mu_x to ~1e-7 relative; -ln p ~ z^2/2 moves by ~2e-7 relative for that
    assert rel_err(got, want) < 1e-6, (got, mpmath.nstr(want, 12))


def test_bfn_n_step_log_ratio_deep_tail_against_mpmath():
    """The integrand of the n-step term, ln N(y | x, 1/alpha) - ln sum_k p_O(k) N(y | k_c, 1/alpha) (§5.6), with
    p_O(x) ~ 1e-1,000,000 (the old floors: 1e-30 and 1e-12): finite, and equal to a 60-digit reference."""
    flow, p_out, _ = _discretized_at_t1(0.0, 0.95, 0.0, -1.0)
    log_p = p_out.log_probs  # [1, 1, 16]
    assert log_p.min() < -1e6
    alpha = torch.tensor([[4.0e4]], dtype=torch.float64)
    centres = [mpmath.mpf(-1) + (2 * k + 1) / mpmath.mpf(16) for k in range(16)]
    for x, y in [(-0.0625, -0.06), (0.4375, 0.44), (-0.9375, -0.93)]:
        xt, yt = torch.tensor([[x]]), torch.tensor([[y]], dtype=torch.float64)
        got = flow._log_ratio(xt, log_p, yt, alpha).item()
        lp = [mpmath.mpf(v) for v in log_p[0, 0].tolist()]  # the log-probabilities are tested above
        a, xm, ym = mpmath.mpf(4.0e4), mpmath.mpf(x), mpmath.mpf(y)
        mix = mpmath.fsum(mpmath.exp(lp[k] - a / 2 * (ym - centres[k]) ** 2) for k in range(16))
        want = -a / 2 * (ym - xm) ** 2 - mpmath.log(mix)
        assert math.isfinite(got) and rel_err(got, want) < 1e-6, (x, got, mpmath.nstr(want, 12))


# --- DDPM decoder -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x0,x0_hat,std", [(1.0, -1.0, 0.01), (1.0, 0.3, 0.01), (-1.0, 0.999, 0.001),
                                            (1.0, 0.02, 0.01)])
def test_ddpm_decoder_deep_tail_against_mpmath(x0, x0_hat, std):
    """L_0 = -ln p(x_0 | x_1) of the binarized decoder (Ho et al. eq. 13, bins split at 0): the old floor reported
    27.6 nats for all but the last case; the truth reaches 5e3 to 5e5 nats."""
    values = class_values(2)
    got = decoder_nll(torch.tensor([[x0]]), torch.tensor([[x0_hat]]), torch.tensor(std), values=values).item()
    mean, sd = float(torch.tensor(x0_hat)), float(torch.tensor(std))  # the float32 values the code sees
    want = -ref_log_bin(mean, sd, *((0.0, None) if x0 > 0 else (None, 0.0)))
    assert math.isfinite(got) and rel_err(got, want) < 1e-6, (got, mpmath.nstr(want, 12))
    # the same numbers through BinnedGaussian.log_prob
    lp = BinnedGaussian(torch.tensor([[x0_hat]]), torch.tensor(std), values).log_prob(torch.tensor([[int(x0 > 0)]]))
    assert rel_err(-lp.item(), want) < 1e-6


# --- the schedule at t -> 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_1", [1e-3, 1e-6])
def test_gamma_and_schedule_at_t_to_1_against_closed_forms(sigma_1):
    """gamma = 1 - sigma_1^(2t), 1 - gamma = sigma_1^(2t), beta = sigma_1^(-2t) - 1, the step accuracy and the
    x-hat coefficients (§4.5), to 1e-12 relative at t up to 1 (float32 gave 1 - gamma 1.4% off at 1e-3)."""
    flow = ContinuousFlow(sigma_1=sigma_1)
    ts = [0.0, 1e-7, 0.5, 0.9, 0.99, 0.999, 0.9999999, 1.0]
    t = torch.tensor(ts, dtype=torch.float64)
    s = mpmath.mpf(sigma_1)
    for i, tv in enumerate(ts):
        tm = mpmath.mpf(tv)
        checks = {"gamma": (flow.gamma(t)[i], 1 - s ** (2 * tm)),
                  "1-gamma": (flow.one_minus_gamma(t)[i], s ** (2 * tm)),
                  "beta": (flow.beta(t)[i], s ** (-2 * tm) - 1)}
        if tv > 0:
            inv_g, scale = flow.x_hat_coefficients(t)
            checks["1/gamma"] = (inv_g[i], 1 / (1 - s ** (2 * tm)))
            checks["sqrt((1-g)/g)"] = (scale[i], mpmath.sqrt(s ** (2 * tm) / (1 - s ** (2 * tm))))
        if tv < 1:
            n = 784
            got = flow.accuracy_between(t[i:i + 1], t[i:i + 1] + 1 / n)[0]
            checks["alpha"] = (got, s ** (-2 * (tm + mpmath.mpf(1) / n)) - s ** (-2 * tm))
        for name, (got, want) in checks.items():
            if want == 0:
                assert float(got) == 0, (name, tv)
            else:
                assert rel_err(float(got), want) < 1e-12, (name, tv, float(got), mpmath.nstr(want, 15))


def test_x_hat_near_t_1_keeps_its_precision():
    """With the exact posterior-mean eps-hat, x-hat returns x at t = 0.999999, sigma_1 = 1e-6 (float32 gamma
    rounds 1 - gamma = 1e-12 to 0 there)."""
    flow = ContinuousFlow(sigma_1=1e-6)
    t = torch.tensor([0.999999])
    g, omg = flow.gamma(t).item(), flow.one_minus_gamma(t).item()
    x, eps = 0.3, 0.7
    mu = torch.tensor([[g * x + math.sqrt(g * omg) * eps]], dtype=torch.float32)
    eps_hat = torch.tensor([[eps]])
    assert flow.x_hat(eps_hat, mu, t).item() == pytest.approx(x, abs=1e-6)


# --- the continuous data range ---------------------------------------------------------------------------------------
def test_continuous_data_outside_the_reachable_range_is_refused():
    flow = ContinuousFlow()
    flow.validate(torch.rand(8, 3) * 2 - 1)  # inside [-1, 1]: fine
    grey = torch.randint(0, 256, (8, 1, 4, 4)).float()
    with pytest.raises(DataError, match=r"outside the range \[-1, 1\].*model.flow.x_range") as err:
        flow.validate(grey)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="x_range"):
        flow.validate(torch.tensor([[0.2], [1.5]]))  # (x - mean) / (3 std) leaves such values
    wide = ContinuousFlow(x_range=(0.0, 255.0))
    wide.validate(grey)  # a declared range that covers the data


def test_a_covering_x_range_lets_a_perfect_network_fit_the_data():
    """x = 2 with x_range [-3, 3]: x-hat = x exactly, L^inf = 0 (it was 6,907.8 at t = 0.5 with the clip at 1)."""
    flow = ContinuousFlow(x_range=(-3.0, 3.0))
    t = torch.tensor([0.5])
    g, omg = flow.gamma(t).item(), flow.one_minus_gamma(t).item()
    x, eps = torch.tensor([[2.0]]), 0.4
    theta = GaussianParams(torch.tensor([[g * 2.0 + math.sqrt(g * omg) * eps]]), torch.ones(1))
    p_out = flow.output_distribution(torch.tensor([[[eps]]]), theta, t)
    assert flow.continuous_time_loss(x, p_out, t).item() < 1e-6
    clipped = ContinuousFlow().output_distribution(torch.tensor([[[eps]]]), theta, t)
    assert ContinuousFlow().continuous_time_loss(x, clipped, t).item() == pytest.approx(6907.76, rel=1e-4)


def test_x_range_config_is_checked_and_saved():
    from bfn.config import load_config, to_dict
    from bfn.data.spec import DataSpec
    from bfn.models.hub import build_flow

    cfg = load_config("mixture-1d", ["model.flow.x_range=[0,255]"])
    assert cfg.model.flow.x_range == [0.0, 255.0] and to_dict(cfg)["model"]["flow"]["x_range"] == [0.0, 255.0]
    assert build_flow(cfg.model.flow, DataSpec(kind="continuous", shape=(1,))).x_range == (0.0, 255.0)
    with pytest.raises(ConfigError, match="model.flow.x_range"):
        load_config("mixture-1d", ["model.flow.x_range=[1,-1]"])


# --- unbiased, low-variance n-step terms ---------------------------------------------------------------------------
def test_stratified_normal_is_standard_normal():
    z = stratified_normal(8, (20000,), generator=torch.Generator().manual_seed(0))
    assert z.shape == (8, 20000)
    u = torch.special.ndtr(z)  # stratum j holds u in [j/8, (j+1)/8)
    for j in range(8):
        assert (u[j] >= j / 8 - 1e-12).all() and (u[j] <= (j + 1) / 8 + 1e-12).all()
    flat = z.flatten()
    assert abs(flat.mean()) < 0.01 and abs(flat.var() - 1) < 0.01


def _ref_kl_k2(lp_x: float, lp_o: float, alpha: float) -> float:
    """E[-ln(p_x + p_o exp(-d))], d ~ N(2 alpha, 4 alpha): the K = 2 sender-receiver KL (§6.11) by quadrature."""
    f = lambda z: -mpmath.log(mpmath.exp(lp_x) + mpmath.exp(lp_o - 2 * alpha - 2 * mpmath.sqrt(alpha) * z))  # noqa: E731
    return float(mpmath.quad(lambda z: f(z) * mpmath.npdf(z), [-mpmath.inf, -5, 0, 5, mpmath.inf]))


def test_discrete_k2_stratified_kl_is_unbiased_and_precise():
    """The stratified estimate of n KL(sender || receiver) for K = 2 agrees with a quadrature reference, and its
    spread is far below that of one sampled y."""
    flow = DiscreteFlow(num_classes=2, beta_1=3.0)
    n, t = 20, torch.full((4000,), 0.6)
    x = torch.ones(4000, 1, dtype=torch.long)
    from bfn.flows.distributions import Categorical
    p_out = Categorical(torch.tensor([0.0, -1.5]).expand(4000, 1, 2))
    alpha = 3.0 * (2 * 0.6 + 1 / n) / n
    log_p = torch.log_softmax(torch.tensor([0.0, -1.5], dtype=torch.float64), 0).tolist()
    want = n * _ref_kl_k2(log_p[1], log_p[0], alpha)
    gen = torch.Generator().manual_seed(0)
    strat = flow.discrete_time_loss(x, p_out, t, n, generator=gen, strata=16).double()
    one = flow.discrete_time_loss(x, p_out, t, n, generator=gen).double()
    assert abs(strat.mean() - want) < 4 * strat.std() / math.sqrt(4000) + 1e-9
    assert abs(one.mean() - want) < 4 * one.std() / math.sqrt(4000)
    assert strat.std() < one.std() / 20


def test_discretized_stratified_kl_is_unbiased_and_precise():
    """The same for the discretised flow's one-dimensional y (§5.6), against mpmath quadrature."""
    flow = DiscretizedFlow(num_bins=4, sigma_1=0.02)
    b, n = 4000, 10
    t = torch.full((b,), 0.5)
    mu = torch.tensor([[0.1]]).expand(b, 1)
    p_out = flow.output_distribution(torch.tensor([0.2, 1.5]).expand(b, 1, 2), GaussianParams(mu, torch.ones(b)), t)
    x = torch.full((b, 1), 0.25)
    alpha = float(flow.accuracy_between(t[:1], t[:1].double() + 1 / n))
    lp = [mpmath.mpf(v) for v in p_out.log_probs[0, 0].tolist()]
    centres = [-0.75, -0.25, 0.25, 0.75]

    def ratio(y):
        mix = mpmath.fsum(mpmath.exp(lp[k] - alpha / 2 * (y - centres[k]) ** 2) for k in range(4))
        return -alpha / 2 * (y - 0.25) ** 2 - mpmath.log(mix)

    sd = 1 / math.sqrt(alpha)
    want = n * float(mpmath.quad(lambda y: ratio(y) * mpmath.npdf(y, 0.25, sd),
                                 [0.25 - 12 * sd, 0.25 - 3 * sd, 0.25, 0.25 + 3 * sd, 0.25 + 12 * sd]))
    gen = torch.Generator().manual_seed(1)
    strat = flow.discrete_time_loss(x, p_out, t, n, generator=gen, strata=16)
    one = flow.discrete_time_loss(x, p_out, t, n, generator=gen)
    assert abs(strat.mean().item() - want) < 4 * strat.std().item() / math.sqrt(b) + 1e-9, (strat.mean(), want)
    assert abs(one.mean().item() - want) < 4 * one.std().item() / math.sqrt(b)
    assert strat.std() < one.std() / 4
