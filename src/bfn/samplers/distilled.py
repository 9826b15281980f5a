"""The few-step sampler of a distilled BFN student (`bfn distill`, `bfn.training.distill`).

The student takes the same input parameters theta as its teacher and is sampled on a fixed grid of `steps` times,
uniform in lambda = ln(a_t / s_t) from the solvers' default start (-2 for data in [-1, 1]) to the default end
(lambda_1, or ln K for discretised data; `bfn.samplers.timegrid`):

    t_j = t(lambda_start + j (lambda_end - lambda_start) / steps),  j = 0 .. steps - 1.

For steps = 1, 2, 4, 8 these grids nest, so one student serves all of them. Each evaluation but the last gives the
data estimate D of a first-order ODE step (DDIM; `bfn.samplers.bfn_solver.solver_step`) to the next grid time, and
the student was trained so that this step lands where its teacher's fine ODE solution lands. The last evaluation's
output distribution is the result (a draw, the mode or the mean, per `final`): the student was trained to put there
the teacher's output distribution at t = 1 at the end of the same trajectory. Network evaluations: exactly `steps`.
On a model that was not distilled this sampler runs but is poor (one evaluation returns the first prediction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bfn.flows.base import BayesianFlow
from bfn.samplers.base import Callback, FinalChoice, OutputFn, StepInfo, check_steps, final_value
from bfn.samplers.bfn_solver import solver_step
from bfn.samplers.gaussian_path import GaussianPath
from bfn.samplers.timegrid import default_lambda_end, default_lambda_start


def student_grid(path: GaussianPath, steps: int) -> list[float]:
    """The `steps` evaluation times t_0 < ... < t_{steps-1} of a student (see the module docstring), then 1.0."""
    check_steps(steps)
    start, end = default_lambda_start(path), default_lambda_end(path)
    return [path.time_at(start + (end - start) * j / steps) for j in range(steps)] + [1.0]


def student_output(flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *,
                   generator: torch.Generator | None = None, callback: Callback | None = None,
                   device: torch.device | str | None = None) -> Any:
    """The last evaluation's output distribution p_O after `steps` evaluations on `student_grid` with first-order
    ODE steps between them; differentiable in the network (adversarial distillation backpropagates through it)."""
    path = GaussianPath(flow)
    grid = student_grid(path, steps)
    batch = shape[0]
    z = path.initial(shape, grid[0], generator=generator, device=device)
    for i in range(steps):
        t, s = grid[i], grid[i + 1]
        theta = path.theta(z, t)
        output = output_fn(theta, torch.full((batch,), t, device=device))
        if callback is not None:
            callback(StepInfo(i=i + 1, n=steps, t=t, theta=theta, output=output))
        if i == steps - 1:
            return output
        z = solver_step(z, path.data_estimate(output), path=path, t=t, s=s, stochastic=False)
    raise AssertionError("unreachable")  # the loop returns at its last step


@torch.no_grad()
def distilled_sampler(flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *,
                      generator: torch.Generator | None = None, callback: Callback | None = None,
                      device: torch.device | str | None = None, final: FinalChoice = "sample") -> Tensor:
    """Few-step sampler of a distilled student: `steps` network evaluations on `student_grid`, first-order ODE
    steps between them, the last evaluation's output distribution as the result."""
    output = student_output(flow, output_fn, shape, steps, generator=generator, callback=callback, device=device)
    return final_value(output, final, generator)
