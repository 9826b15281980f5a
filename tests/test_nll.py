"""Test-set likelihood: bounds against known entropies and closed forms, units, determinism, eval.json."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bfn.data.common import GreyImages
from bfn.data.spec import DataSpec
from bfn.errors import CheckpointError
from bfn.evaluation.nll import (
    evaluate_nll,
    materialize,
    read_eval,
    write_eval,
)
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.models import BFN
from bfn.models.base import Capabilities, GenerativeModel


class BernoulliPosterior(nn.Module):
    """The Bayes-optimal network for independent Bernoulli(p) pixels under a discrete BFN with K = 2.

    The network sees 2 P(class 1 | theta) - 1 per pixel; theta's log-odds are y_1 - y_0, the log-likelihood
    ratio of all sender samples so far, so the posterior log-odds are ln(p / (1 - p)) + (y_1 - y_0). Ignores t.
    """

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prior_logit", (p / (1 - p)).log())

    def forward(self, x, t, cond=None):
        prob = ((x + 1) / 2).clamp(1e-7, 1 - 1e-7)
        return self.prior_logit + prob.log() - (-prob).log1p()


def bernoulli_problem(d=16, seed=0):
    p = torch.rand(d, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.05
    entropy = float(-(p * p.log() + (1 - p) * (1 - p).log()).sum())
    model = BFN(BernoulliPosterior(p), DiscreteFlow(num_classes=2, beta_1=3.0), data_shape=(d,), layout="flat")
    return p, entropy, model


def test_optimal_network_matches_the_entropy_in_continuous_and_discrete_time():
    """For the Bayes-optimal output distribution the bound is tight: E[L^n + L^r] = H(x) for every n."""
    p, entropy, model = bernoulli_problem()
    x = torch.bernoulli(p.expand(4000, -1), generator=torch.Generator().manual_seed(1)).long()
    out = evaluate_nll(model, x, steps=["inf", 10], repeats=2, batch_size=2000, seed=0)
    for key in ("inf", "10"):
        res = out["results"][key]
        assert abs(res["nats"] - entropy) < 3 * res["nats_se"], (key, res["nats"], entropy, res["nats_se"])
    assert out["results"]["inf"]["nats_se"] < 0.1  # the test has power: H is about 9.3 nats


class PosteriorMean(nn.Module):
    """Continuous BFN, data x ~ N(0, S^2) per variable: eps-hat such that x-hat = E[x | mu, t] exactly."""

    def __init__(self, sigma_1: float, s: float) -> None:
        super().__init__()
        self.sigma_1, self.s = sigma_1, s

    def forward(self, x, t, cond=None):
        mu = x.double()
        g = (1 - self.sigma_1 ** (2 * t.double())).clamp_min(1e-12)[:, None]
        x_hat = (mu / (1 - g)) / (1 / self.s**2 + g / (1 - g))
        return ((mu / g - x_hat) * (g / (1 - g)).sqrt()).float()


def gaussian_bound(n, sigma_1, s):
    """Closed form of E[L^n + L^r] per variable for `PosteriorMean`: E||x - x-hat||^2 at accuracy beta is the
    posterior variance v(beta) = 1 / (1/s^2 + beta), so L^n = sum_i alpha_i / 2 v(beta_{i-1}) (a left Riemann
    sum of a decreasing function) and L^inf = 1/2 ln(1 + s^2 beta(1))."""
    def beta(t):
        return sigma_1 ** (-2 * t) - 1

    def v(b):
        return 1 / (1 / s**2 + b)

    if n == "inf":
        diffusion = 0.5 * math.log(1 + s**2 * beta(1.0))
    else:
        diffusion = sum((beta(i / n) - beta((i - 1) / n)) / 2 * v(beta((i - 1) / n)) for i in range(1, n + 1))
    return diffusion + v(beta(1.0)) / (2 * sigma_1**2) + 0.5 * math.log(2 * math.pi * sigma_1**2)


def test_n_step_bound_decreases_towards_the_continuous_time_bound():
    """A network whose error shrinks with t (the posterior mean as a point estimate, continuous data): L^n is
    a left Riemann sum of a decreasing function, so L^10 > L^100 > L^1000 > L^inf, and each estimate matches
    its closed form. Step counts share their random numbers, so per-example differences resolve the order."""
    sigma_1, s = 0.1, 0.5
    model = BFN(PosteriorMean(sigma_1, s), ContinuousFlow(sigma_1=sigma_1, x_range=None), data_shape=(1,),
                layout="flat")
    x = s * torch.randn(5000, 1, generator=torch.Generator().manual_seed(0))
    out = evaluate_nll(model, x, steps=[10, 100, 1000, "inf"], repeats=2, batch_size=5000, seed=3,
                       per_example=True)["results"]
    exact = {k: gaussian_bound(r["steps"], sigma_1, s) for k, r in out.items()}
    assert exact["10"] > exact["100"] > exact["1000"] > exact["inf"]
    for key, res in out.items():  # every estimate agrees with its closed form
        assert abs(res["nats"] - exact[key]) < 4 * res["nats_se"], (key, res["nats"], exact[key], res["nats_se"])
        assert res["per_example"].shape == (5000,)

    def paired_gap(a, b):  # mean per-example difference in units of its standard error
        d = out[a]["per_example"] - out[b]["per_example"]
        return float(d.mean() / (d.std() / math.sqrt(d.numel())))

    assert paired_gap("10", "100") > 5
    assert paired_gap("100", "1000") > 5
    assert paired_gap("1000", "inf") > 5
    entropy = 0.5 * math.log(2 * math.pi * math.e * s**2)
    assert out["inf"]["nats"] > entropy - 4 * out["inf"]["nats_se"]  # a bound: not below -E ln p(x)


def test_units_and_json_shape(tmp_path):
    p, _, model = bernoulli_problem(d=12)
    x = torch.bernoulli(p.expand(50, -1), generator=torch.Generator().manual_seed(2)).long()
    out = evaluate_nll(model, x, steps="5,inf", repeats=3, batch_size=16, seed=1)
    assert set(out) >= {"n_examples", "dims", "repeats", "seed", "batch_size", "uniform", "results"}
    assert (out["n_examples"], out["dims"], out["repeats"]) == (50, 12, 3)
    assert list(out["results"]) == ["5", "inf"]
    for res in out["results"].values():
        assert len(res["nats_per_repeat"]) == 3
        assert res["nats"] == pytest.approx(sum(res["nats_per_repeat"]) / 3)
        assert res["nats_mc_se"] == pytest.approx(float(np.std(res["nats_per_repeat"], ddof=1)) / math.sqrt(3))
    # units against the entropy of the data, a number computed apart from the code: H bits / 12 dims in bits/dim
    p, entropy, model = bernoulli_problem(d=12)
    x = torch.bernoulli(p.expand(3000, -1), generator=torch.Generator().manual_seed(3)).long()
    big = evaluate_nll(model, x, steps="5,inf", repeats=2, batch_size=1000, seed=2, per_example=True)["results"]
    for res in big.values():
        per = res["per_example"].numpy()
        assert res["nats_se"] == pytest.approx(float(np.std(per, ddof=1)) / math.sqrt(3000))
        se_bits = float(np.std(per, ddof=1)) / math.sqrt(3000) / math.log(2) / 12
        assert res["bits_per_dim_se"] == pytest.approx(se_bits)
        assert abs(res["bits_per_dim"] - entropy / math.log(2) / 12) < 4 * se_bits, res
        assert abs(res["nats_per_dim"] - entropy / 12) < 4 * res["nats_se"] / 12, res
    assert out["results"]["5"]["bound"] == "L^5 + L^r" and out["results"]["inf"]["steps"] == "inf"
    assert out["uniform"]["nats"] == pytest.approx(12 * math.log(2))

    path = write_eval(tmp_path, "nll", out)
    write_eval(tmp_path, "quality", {"fid": 1.0})
    saved = json.loads(path.read_text())
    assert set(saved) == {"nll", "quality"}
    assert saved["nll"]["results"]["inf"]["nats"] == out["results"]["inf"]["nats"]
    write_eval(tmp_path, "nll", {"replaced": True})
    assert read_eval(tmp_path) == {"nll": {"replaced": True}, "quality": {"fid": 1.0}}
    path.write_text("{not json")
    with pytest.raises(CheckpointError):
        read_eval(tmp_path)


def test_same_seed_same_numbers_other_seed_other_numbers():
    p, _, model = bernoulli_problem(d=8)
    x = torch.bernoulli(p.expand(64, -1), generator=torch.Generator().manual_seed(3)).long()
    a = evaluate_nll(model, x, steps=[3, "inf"], repeats=2, batch_size=20, seed=7)
    b = evaluate_nll(model, x, steps=[3, "inf"], repeats=2, batch_size=20, seed=7)
    c = evaluate_nll(model, x, steps=[3, "inf"], repeats=2, batch_size=20, seed=8)
    d = evaluate_nll(model, x, steps=["inf"], repeats=2, batch_size=20, seed=7)
    assert a["results"] == b["results"]
    assert a["results"]["inf"]["nats"] != c["results"]["inf"]["nats"]
    assert d["results"]["inf"] == a["results"]["inf"]  # adding a step count does not shift the others


def test_dynamic_binarization_is_redrawn_per_repeat_and_seeded():
    grey = np.random.default_rng(0).integers(0, 256, size=(30, 1, 4, 4), dtype=np.uint8)
    data = GreyImages(grey, np.zeros(30, dtype=np.int64), "binarized")
    a, b, c = (materialize(data, seed=s) for s in (5, 5, 6))
    assert a.shape == (30, 1, 4, 4) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(materialize(data, limit=7, seed=5), a[:7])

    model = BFN(BernoulliPosterior(torch.full((16,), 0.5)), DiscreteFlow(num_classes=2), data_shape=(1, 4, 4),
                layout="flat")
    r1 = evaluate_nll(model, data, steps=["inf"], repeats=2, batch_size=8, seed=0, limit=20)
    r2 = evaluate_nll(model, data, steps=["inf"], repeats=2, batch_size=8, seed=0, limit=20)
    assert r1["results"] == r2["results"] and r1["n_examples"] == 20
    r3 = evaluate_nll(model, data, steps=["inf"], repeats=2, batch_size=8, seed=1, limit=20)
    assert r3["results"] != r1["results"]


class Recorder(GenerativeModel):
    """Returns the sum of each example's variables as its "bound" and records every batch it is given."""

    family = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.data = DataSpec(kind="discrete", shape=(1, 4, 4), num_classes=2)
        self.seen: list[torch.Tensor] = []

    @property
    def capabilities(self):
        return Capabilities(likelihood="bound")

    def loss(self, x, *, cond=None, generator=None):
        return x.double().flatten(1).sum(1)

    def nll(self, x, steps=None, *, cond=None, generator=None):
        self.seen.append(x.clone())
        return self.loss(x)

    def sample(self, n, steps=None, **kwargs):
        raise NotImplementedError


@pytest.mark.parametrize("redraw", [False, True])
def test_the_test_set_is_binarized_once_unless_redraw_is_asked(redraw):
    grey = np.random.default_rng(1).integers(0, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    data = GreyImages(grey, np.zeros(40, dtype=np.int64), "binarized")
    model = Recorder()
    out = evaluate_nll(model, data, steps=["inf"], repeats=3, batch_size=40, seed=0, redraw_data=redraw)
    first, *rest = model.seen
    assert len(rest) == 2
    same = [torch.equal(first, other) for other in rest]
    assert same == ([False, False] if redraw else [True, True])
    mc_se = out["results"]["inf"]["nats_mc_se"]
    assert (mc_se > 0) if redraw else (mc_se == 0.0)  # a deterministic "bound" has no Monte Carlo error


def test_stratified_uniforms_fill_every_stratum_and_are_each_uniform():
    from bfn.evaluation.nll import stratified_uniforms

    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([stratified_uniforms(10, gen) for _ in range(4000)])  # [4000, 10]
    assert torch.equal((draws * 10).floor().sort(1).values, torch.arange(10.0).expand(4000, -1))
    # each position on its own is U(0, 1): mean 1/2, variance 1/12, and its deciles equally filled (chi-square,
    # 9 degrees of freedom, 0.1% critical value 27.9)
    for i in (0, 7):
        u = draws[:, i]
        assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 4000)
        counts = torch.bincount((u * 10).long(), minlength=10).double()
        chi2 = float(((counts - 400) ** 2 / 400).sum())
        assert chi2 < 27.9, chi2


def test_monte_carlo_error_is_honest_and_stratification_shrinks_it():
    """Over 16 seeds on one fixed data set, the spread of the test-set estimate agrees with the Monte Carlo
    standard error the evaluation reports, and the variance reductions (times stratified across examples, the
    stratified sender draws of the n-step KL) shrink the n-step bound's spread several fold against the plain
    one-sample estimator (K = 2 with the Bayes-optimal network)."""
    p, _, model = bernoulli_problem(d=16)
    x = torch.bernoulli(p.expand(1000, -1), generator=torch.Generator().manual_seed(0)).long()

    def spread(variance_reduction):
        outs = [evaluate_nll(model, x, steps=[20, "inf"], repeats=3, batch_size=1000, seed=seed,
                             variance_reduction=variance_reduction)["results"] for seed in range(16)]
        return {k: (float(np.std([o[k]["nats"] for o in outs], ddof=1)),
                    float(np.sqrt(np.mean([o[k]["nats_mc_se"] ** 2 for o in outs])))) for k in ("20", "inf")}

    strat, plain = spread(True), spread(False)
    for k in ("20", "inf"):
        observed, reported = strat[k]
        assert 0.5 < observed / reported < 2.0, (k, observed, reported)  # the reported error is the real one
    assert strat["20"][0] < plain["20"][0] / 3, (strat, plain)


def test_se_floor_recovers_the_real_spread_between_examples():
    """Synthetic repeats: example e's estimate in repeat r is mu_e + noise, mu_e ~ N(0, 3^2), noise ~ N(0, 10^2).
    The floor is the real spread over sqrt(N), 3 / sqrt(N), whatever the noise; the standard error over examples
    of the R-averages is sqrt(3^2 + 10^2 / R) / sqrt(N)."""
    from bfn.evaluation.nll import se_floor

    gen = torch.Generator().manual_seed(0)
    n, r = 40000, 3
    mu = 3 * torch.randn(n, generator=gen, dtype=torch.float64)
    stacked = mu + 10 * torch.randn(r, n, generator=gen, dtype=torch.float64)
    assert se_floor(stacked) == pytest.approx(3 / math.sqrt(n), rel=0.05)
    assert float(stacked.mean(0).std()) / math.sqrt(n) == pytest.approx(math.sqrt(9 + 100 / r) / math.sqrt(n),
                                                                        rel=0.02)
    assert se_floor(stacked[:1]) is None and se_floor(stacked[:, :1]) is None
    assert se_floor(10 * torch.randn(r, n, generator=gen, dtype=torch.float64)) < 1 / math.sqrt(n)  # no spread
