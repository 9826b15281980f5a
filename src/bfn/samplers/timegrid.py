"""Time grids for the BFN solvers: n + 1 increasing times t_0 < t_1 < ... < t_n = 1.

The network is evaluated at t_0 .. t_{n-1} (one evaluation per step) and once more at t_n = 1 for the output
distribution the sample is drawn from, as in the paper's samplers (Graves et al. 2023, Algorithms 3, 6, 9).

* "paper": t_i = i / n, the paper's grid. Its first step starts at t_0 = 0, where the input distribution is the
  prior, lambda = -inf and the network sees nothing (the flows even force x-hat = 0 there), so one of the n
  evaluations is spent learning only the data mean; with few steps the first jump 0 -> 1/n is also long.
* "lambda": uniform in lambda_t = ln(a_t / s_t) from `lambda_start` to lambda_1, as DPM-Solver recommends
  (Lu et al. 2022, §3.3): the exponential-integrator error of each step grows with its length h in lambda,
  so equal h spreads it evenly. lambda_1 is finite (1 - gamma(1) = sigma_1^2, beta(1) = beta_1), and t = 0 is
  at lambda = -inf, so the grid starts at the small time t_start with lambda(t_start) = `lambda_start`.
  The state there is drawn from N(0, s_t^2 I), which leaves out the signal a_t x0: a share
  exp(2 lambda) |x0|^2 of the noise variance, with |x0|^2 <= 1 for data in [-1, 1] and = K (K - 1) for
  x0 = K e_x - 1. The default start keeps that share at exp(-4) ~ 0.018 (`default_lambda_start`): lambda = -2
  for continuous and discretised data (t_start ~ 1e-3 for sigma_1 = 0.001, the usual DPM-Solver t_eps) and
  -2 - 0.5 ln(K (K - 1)) for discrete data (-2.35 for K = 2, -2.9 for K = 3). Measured on the toys of
  tests/test_fast_samplers.py with the Bayes-optimal output: starting much lower spends steps where nothing
  happens, starting higher leaves a visible bias; with a trained continuous network, whose eps-prediction is
  amplified by 1 / sqrt(SNR) at low SNR, starting lower also hurt the ODE solvers (mixture-1d preset).
  That left-out share is a bias that more steps do not remove from the ODE solvers (the SDE solvers' fresh noise
  forgets the initial draw): on the two-pixel discretised toy with the Bayes-optimal output, ode1/ode2 stayed at
  total variation 0.011 from 100 to 400 steps while the SDE solvers reached the sampling floor (0.003-0.005).
  Beyond `FULL_STEPS` steps the start therefore moves down by 0.5 ln(steps / FULL_STEPS), so the share falls
  like 1 / steps and the error goes to zero as evaluations grow (ode2 at 200 steps: 0.011 -> 0.004), while
  grids of up to `FULL_STEPS` steps are unchanged.
* The end of the grid, for discretised data: z_t = a_t x0 + s_t eps with x0 on the K bin centres, 2 / K apart, so
  once the noise-to-signal ratio exp(-lambda) falls below the half-width 1 / K of a bin, i.e. lambda > ln K,
  each pixel's bin is nearly settled and the remaining steps only move it within its bin, which the final
  discretised p_O ignores. `default_lambda_end` is therefore min(lambda_1, ln K): the evaluations t_0..t_{n-1}
  are spread uniformly over [lambda_start, lambda_end] and the last step jumps from lambda_end to t = 1, where
  the final evaluation picks the bins. That jump sends a draw x' ~ p_O(. | theta; t_{n-1}), not the mean, as
  the paper's samplers do at every step: the mean of a pixel torn between two adjacent grey levels lies between
  them and the final evaluation would round it, a bias that showed at 100 NFE (sde2, 3 seeds: FID 46.0 with the
  mean, 43.5 with a draw, 41.7 for the uniform grid up to lambda_1). Measured on `bfn train mnist-discretized`
  (K = 16, lambda_1 = 6.9; classifier FID of 200 samples, mean of 3 seeds, sde2, mean sent in the jump):
  142.5 -> 82.7 at 5 NFE, 53.6 -> 44.3 at 10 NFE, 46.9 -> 45.8 at 50 NFE; with a draw sent: 45.5 at 10 NFE.
  Ending lower still (lambda 1 to 2) helps at 5 NFE but costs 8-10 FID at 20-50 NFE. Continuous and discrete
  flows keep lambda_end = lambda_1.
* "time": uniform in t from the same t_start; kept for comparison (on both toys it was worse than "lambda" for
  the ODE solvers at 5 to 20 steps).
"""

from __future__ import annotations

import math
from typing import Literal

from bfn.errors import ConfigError
from bfn.samplers.gaussian_path import GaussianPath

Spacing = Literal["lambda", "time", "paper"]

#: ln of the largest share of the noise variance that the initial draw may leave out (see the module docstring)
LOG_SIGNAL_SHARE = -4.0
#: grids of more steps start lower, so that the initial draw's bias vanishes as steps grow
FULL_STEPS = 10


def default_lambda_start(path: GaussianPath, steps: int = 1) -> float:
    """lambda_start = 0.5 (LOG_SIGNAL_SHARE - ln |x0|^2_max - ln max(1, steps / FULL_STEPS)), with |x0|^2_max the
    flow's `max_state_norm2` (1 for data in [-1, 1], K (K - 1) for discrete data)."""
    return 0.5 * (LOG_SIGNAL_SHARE - math.log(path.flow.max_state_norm2) - math.log(max(1.0, steps / FULL_STEPS)))


def default_lambda_end(path: GaussianPath) -> float:
    """min(lambda_1, the flow's `settled_log_snr`): ln K for discretised data with K bins (see the module
    docstring), else lambda_1."""
    lam_1 = path.log_snr(1.0)
    settled = path.flow.settled_log_snr
    return lam_1 if settled is None else min(lam_1, settled)


def grid_end(path: GaussianPath, lambda_end: float | None) -> float:
    """The lambda where the evaluations stop: `lambda_end` (None: the default) clipped to lambda_1."""
    return min(default_lambda_end(path) if lambda_end is None else lambda_end, path.log_snr(1.0))


def time_grid(path: GaussianPath, steps: int, *, spacing: Spacing = "lambda",
              lambda_start: float | None = None, lambda_end: float | None = None) -> list[float]:
    """The n + 1 = `steps` + 1 grid times (float64 Python floats), ending at exactly 1.0.

    With lambda_end = lambda_1 the n steps split [lambda_start, lambda_1] (or the matching times) evenly; with
    lambda_end < lambda_1 the first n - 1 steps split [lambda_start, lambda_end] and the last one jumps to t = 1.
    """
    if spacing == "paper":
        return [i / steps for i in range(steps)] + [1.0]
    if spacing not in ("lambda", "time"):
        raise ConfigError(f"spacing must be 'lambda', 'time' or 'paper', got {spacing!r}")
    lam_1 = path.log_snr(1.0)
    lambda_start = default_lambda_start(path, steps) if lambda_start is None else lambda_start
    lambda_end = grid_end(path, lambda_end)
    if not lambda_start < lambda_end:
        raise ConfigError(f"lambda_start={lambda_start} must be below lambda_end={lambda_end:.3g} (lambda(1) = "
                          f"{lam_1:.3g} for this flow)")
    # fractions of the way from the start to the end at which the network is evaluated
    if lambda_end < lam_1 and steps > 1:
        fractions = [i / (steps - 1) for i in range(steps)]
    else:
        fractions = [i / steps for i in range(steps)]
    if spacing == "lambda":
        return [path.time_at(lambda_start + (lambda_end - lambda_start) * f) for f in fractions] + [1.0]
    t0, t_end = path.time_at(lambda_start), path.time_at(lambda_end)
    return [t0 + (t_end - t0) * f for f in fractions] + [1.0]

