"""`bfn distill`: the trajectory-distillation targets against closed forms, and the command end to end on a tiny
mixture-1d teacher (resume, safety, the student as a normal model that samples but reports no likelihood)."""

from __future__ import annotations

import json

import pytest
import torch

from bfn.cli import main
from bfn.errors import ConfigError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.models import BFN, from_pretrained
from bfn.samplers import SAMPLERS
from bfn.samplers.bfn_solver import solver_step
from bfn.samplers.distilled import student_grid
from bfn.samplers.gaussian_path import GaussianPath
from bfn.training.distill import DistillSettings, ode_step_target, teacher_chunk


class _PointMassTeacher:
    """Stand-in teacher for data that is always x*: the Bayes-optimal output is x* at every time, so the teacher's
    ODE is exactly the first-order step with D = x* on any grid, and every distillation target must be x*."""

    def __init__(self, flow, x_star: torch.Tensor) -> None:
        self.flow, self.x_star, self.data_shape, self.device = flow, x_star, tuple(x_star.shape), torch.device("cpu")

    def output_distribution(self, theta, t):
        b = t.shape[0]
        if isinstance(self.flow, DiscreteFlow):
            from bfn.flows import Categorical
            one_hot = torch.nn.functional.one_hot(self.x_star, self.flow.num_classes).float()
            return Categorical((one_hot * 60 - 30).expand(b, *one_hot.shape))
        from bfn.flows import PointMass
        return PointMass(self.x_star.expand(b, *self.x_star.shape).float())


@pytest.mark.parametrize("flow", [ContinuousFlow(sigma_1=0.01), DiscretizedFlow(num_bins=16, sigma_1=0.001),
                                  DiscreteFlow(num_classes=3, beta_1=4.0)], ids=lambda f: f.kind)
def test_step_targets_recover_the_data_of_a_point_mass(flow):
    x_star = torch.tensor([2, 0, 1]) if flow.kind == "discrete" else torch.tensor([0.3125, -0.6875, 0.9375])
    teacher = _PointMassTeacher(flow, x_star)
    settings = DistillSettings(teacher="stub", steps=4, substeps=3)
    chunk = teacher_chunk(teacher, settings, 5, torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    path = GaussianPath(flow)
    grid = student_grid(path, 4)
    expected = flow.num_classes * torch.nn.functional.one_hot(x_star, 3).float() - 1 if flow.kind == "discrete" \
        else x_star.float()
    states = chunk["states"]
    assert states.shape == (5, 4, *flow.state_shape((1, 3))[1:])
    for j, m in ((0, 1), (0, 2), (1, 1), (2, 1), (1, 2)):
        target = ode_step_target(path, states[:, j].double(), states[:, j + m].double(), [grid[j]] * 5,
                                 [grid[j + m]] * 5)
        torch.testing.assert_close(target.float(), expected.expand_as(target), atol=2e-3, rtol=1e-3)
        # and the first-order step with that target lands on the teacher's state
        land = solver_step(states[:, j].double(), target, path=path, t=grid[j], s=grid[j + m], stochastic=False)
        torch.testing.assert_close(land.float(), states[:, j + m], atol=1e-4, rtol=1e-4)
    end = chunk["end"]  # the teacher's final output: probabilities (or the mean) at t = 1
    if flow.kind == "continuous":
        torch.testing.assert_close(end, x_star.float().expand_as(end))
    elif flow.kind == "discrete":
        assert (end.argmax(-1) == x_star).all()


def test_student_grids_nest():
    path = GaussianPath(DiscretizedFlow(num_bins=16, sigma_1=0.001))
    g1, g2, g4 = (student_grid(path, n) for n in (1, 2, 4))
    assert g4[-1] == 1.0 and g4[0] == g2[0] == g1[0] and g2[1] == g4[2]
    assert all(a < b for a, b in zip(g4[:-1], g4[1:], strict=True))


def test_distill_end_to_end(tmp_path, capsys):
    teacher, student = tmp_path / "t", tmp_path / "t-student"
    common = ["train.threads=1", "train.batch_size=16"]
    assert main(["train", "mixture-1d", "--out", str(teacher), "--no-progress", "model.network.kwargs.hidden=16",
                 "train.steps=20", *common]) == 0
    args = ["distill", str(teacher), "--no-progress", "--trajectories", "48", "--student-steps", "2",
            "--substeps", "2", "train.checkpoint_every=4"]
    assert main([*args, "train.steps=6", *common]) == 0
    record = json.loads((student / "config.json").read_text())["distilled"]
    assert record["steps"] == 2 and record["teacher"] == str(teacher)
    assert len(list((student / "trajectories").glob("chunk_*.pt"))) == 1
    # a second distillation into the same folder needs --resume; resume continues the trainer's run
    capsys.readouterr()
    assert main([*args, "train.steps=6", *common]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume", "train.steps=10", *common]) == 0
    steps = [json.loads(line)["step"] for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 10
    # the student is a normal BFN: loads, samples with the distilled sampler, has no likelihood
    model = from_pretrained(student)
    assert type(model) is BFN and model.capabilities.likelihood == "none"
    assert from_pretrained(teacher).capabilities.likelihood == "bound"
    x = model.sample(32, 2, sampler="distilled", generator=torch.Generator().manual_seed(0))
    assert x.shape == (32, 1) and torch.isfinite(x).all()
    with pytest.raises(ConfigError, match="distilled"):
        model.nll(torch.zeros(4, 1))
    capsys.readouterr()
    assert main(["eval", str(student), "--nll", "--no-progress"]) == 0
    assert "no NLL is reported" in capsys.readouterr().out
    assert not (student / "eval.json").exists() or "nll" not in json.loads((student / "eval.json").read_text())
    assert main(["distill", str(teacher), "--out", str(tmp_path / "x"), "--student-steps", "3"]) == 2


def test_distilled_sampler_counts_its_evaluations():
    flow = DiscreteFlow(num_classes=3, beta_1=4.0)
    calls = []

    def output_fn(theta, t):
        from bfn.flows import Categorical
        calls.append(float(t[0]))
        return Categorical(torch.zeros(*theta.shape))

    x = SAMPLERS["distilled"](flow, output_fn, (7, 2), 4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (7, 2) and len(calls) == 4
    assert calls == pytest.approx(student_grid(GaussianPath(flow), 4)[:4])
