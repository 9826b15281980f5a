"""Adversarial distillation (`bfn distill --adversarial`): the critic's inputs are draws from p_O (Monte Carlo
against the probabilities), their straight-through gradients, the objectives against closed forms for a linear
critic, the gradient isolation between student and critic, and the command end to end (phase switch, export
without the critic, resume)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bfn.cli import main
from bfn.data.spec import DataSpec
from bfn.flows import Categorical, DiscretizedGaussian
from bfn.models import BFN, from_pretrained
from bfn.training.adversarial import build_critic, critic_loss, critic_shape, fake_format, real_format, student_loss
from bfn.utils.binned import bin_centres

N = 40_000


def test_discretized_fakes_are_draws_from_the_output_distribution():
    torch.manual_seed(0)
    spec = DataSpec(kind="discretized", shape=(3,), num_bins=8)
    mean = torch.tensor([-0.9, 0.1, 0.7]).expand(N, 3).clone().requires_grad_(True)
    std = torch.tensor([0.3, 0.05, 0.4]).expand(N, 3)
    output = DiscretizedGaussian(mean, std, 8)
    fake = fake_format(output, spec)
    centres = bin_centres(8)
    index = (fake.detach().unsqueeze(-1) - centres).abs().argmin(-1)
    assert torch.allclose(fake.detach(), centres[index])  # every draw sits on a bin centre, as the data do
    freq = F.one_hot(index, 8).float().mean(0)  # [3, 8]
    probs = output.probs[0].detach()
    se = (probs * (1 - probs) / N).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-4).all()
    # straight-through: d fake / d mu = 1 wherever mu + sigma e fell inside [-1, 1] (clipped draws carry none)
    fake.sum().backward()
    grad_share = mean.grad.sum(0) / N
    # the share of unclipped draws: P(|mu + sigma e| <= 1), a closed form
    normal = torch.distributions.Normal(mean[0].detach(), std[0])
    unclipped = normal.cdf(torch.tensor(1.0)) - normal.cdf(torch.tensor(-1.0))
    assert torch.allclose(grad_share, unclipped, atol=5 * math.sqrt(0.25 / N))


def test_discrete_fakes_are_one_hot_draws_in_the_format_of_the_data():
    torch.manual_seed(1)
    spec = DataSpec(kind="discrete", shape=(2, 4, 4), num_classes=3)
    logits = torch.randn(1, 2, 4, 4, 3).expand(N // 10, -1, -1, -1, -1).clone().requires_grad_(True)
    fake = fake_format(Categorical(logits), spec)
    real = real_format(torch.randint(0, 3, (5, 2, 4, 4)), spec)
    assert fake.shape[1:] == real.shape[1:] == critic_shape(spec) == (6, 4, 4)
    assert set(fake.detach().unique().tolist()) == {0.0, 1.0} and set(real.unique().tolist()) == {0.0, 1.0}
    # channel c * K + k holds class k of channel c, for data and fakes alike
    x = torch.tensor([[[[2]]], [[[0]]]]).expand(2, 2, 4, 4)
    onehot = real_format(x, spec)
    assert onehot[0, 2, 0, 0] == 1 and onehot[0, 0:2, 0, 0].sum() == 0 and onehot[1, 3, 0, 0] == 1
    freq = fake.detach().reshape(-1, 2, 3, 4, 4).permute(0, 1, 3, 4, 2).mean(0)
    probs = logits.softmax(-1)[0].detach()
    se = (probs * (1 - probs) / (N // 10)).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-4).all()
    # the straight-through gradient is the gradient of the probabilities themselves
    weights = torch.randn(6, 4, 4)
    (fake * weights).sum().backward()
    expected = torch.autograd.grad((_probs_format(logits.softmax(-1)) * weights).sum(), logits)[0]
    torch.testing.assert_close(logits.grad, expected)


def _probs_format(probs: torch.Tensor) -> torch.Tensor:
    b, c, h, w, k = probs.shape
    return probs.permute(0, 1, 4, 2, 3).reshape(b, c * k, h, w)


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
        self.b = torch.nn.Parameter(torch.tensor(0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


def test_objectives_match_closed_forms_and_keep_their_gradients_apart():
    critic = _Linear()
    real = torch.tensor([[0.1, 0.2, -0.3], [1.0, 0.0, 0.5]])
    source = torch.tensor([[0.3, -0.2, 0.4], [-1.0, 0.5, 0.0]], requires_grad=True)
    fake = source * 1.0
    w, b = critic.w.detach(), critic.b.detach()
    # critic: softplus(-d(real)) + softplus(d(fake)) + gamma / 2 ||grad_x d||^2, and ||grad_x d||^2 = ||w||^2
    expected = F.softplus(-(real @ w + b)) + F.softplus(fake.detach() @ w + b) + 0.5 * w.square().sum()
    loss_c = critic_loss(critic, real, fake)
    torch.testing.assert_close(loss_c, expected)
    loss_c.sum().backward()
    assert source.grad is None  # the student learns nothing from the critic's loss
    critic.zero_grad()
    loss_s = student_loss(critic, fake)
    torch.testing.assert_close(loss_s, F.softplus(-(fake.detach() @ w + b)))
    loss_s.sum().backward()
    assert critic.w.grad is None and critic.b.grad is None  # nor the critic from the student's
    # d softplus(-(w.x + b)) / dx = -sigmoid(-(w.x + b)) w
    torch.testing.assert_close(source.grad, -torch.sigmoid(-(source.detach() @ w + b)).unsqueeze(1) * w)


def test_critics_take_every_data_kind():
    for spec in (DataSpec(kind="discretized", shape=(1, 28, 28), num_bins=16),
                 DataSpec(kind="discrete", shape=(1, 8, 8), num_classes=2),
                 DataSpec(kind="discrete", shape=(12,), num_classes=27),
                 DataSpec(kind="continuous", shape=(2,))):
        critic = build_critic(spec, width=8)
        assert critic(torch.zeros(5, *critic_shape(spec))).shape == (5,)


def test_adversarial_distillation_end_to_end(tmp_path):
    teacher, student = tmp_path / "t", tmp_path / "s"
    common = ["train.threads=1", "train.batch_size=16"]
    assert main(["train", "mixture-1d", "--out", str(teacher), "--no-progress", "model.network.kwargs.hidden=16",
                 "train.steps=20", *common]) == 0
    args = ["distill", str(teacher), "--out", str(student), "--no-progress", "--trajectories", "32",
            "--student-steps", "2", "--substeps", "2", "--adversarial", "0.5", "--adversarial-start", "3",
            "--adversarial-nfe", "2,1",
            "train.checkpoint_every=3", "train.warmup_steps=1", *common]
    assert main([*args, "train.steps=6"]) == 0
    state = torch.load(student / "state.pt", weights_only=True)
    assert any(k.startswith("critic.") for k in state["model"]) and float(state["model"]["adv_step"]) == 6
    critic_before = {k: v.clone() for k, v in state["model"].items() if k.startswith("critic.")}
    # from the critic's first step: the student at a tenth of train.lr, the critic at train.lr with beta_1 = 0
    student_group, critic_group = state["optimizer"]["param_groups"]
    assert student_group["lr"] == pytest.approx(0.1 * 2e-4) and critic_group["lr"] == pytest.approx(2e-4)
    assert tuple(critic_group["betas"]) == (0.0, 0.99) and tuple(student_group["betas"]) == (0.9, 0.99)
    assert main([*args, "--resume", "train.steps=9"]) == 0
    state = torch.load(student / "state.pt", weights_only=True)
    assert any(not torch.equal(state["model"][k], v) for k, v in critic_before.items())  # the critic trains
    # the export is a plain BFN: no critic, no step counter, and a config that says how it was made
    assert all(k.startswith("network.") for k in load_file(student / "model.safetensors"))
    record = json.loads((student / "config.json").read_text())["distilled"]
    assert record["method"] == "adversarial" and record["adversarial"] == 0.5 and record["adversarial_nfe"] == [1, 2]
    model = from_pretrained(student)
    assert type(model) is BFN and model.capabilities.likelihood == "none"
    x = model.sample(16, 2, sampler="distilled", generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 1) and torch.isfinite(x).all()


def test_the_critic_sees_draws_of_every_listed_number_of_evaluations(monkeypatch):
    """With adversarial_nfe [1, 2] each adversarial batch draws fakes with 1 or 2 evaluations, both turn up (30
    batches: both missing by chance has probability 2^-29), and no other number does."""
    import bfn.training.distill as distill
    from bfn.config import load_config
    from bfn.data import load_dataset
    from bfn.models import build_model

    cfg = load_config("mixture-1d")
    cfg.model.network.kwargs = {**cfg.model.network.kwargs, "hidden": 8}
    spec = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)[1]
    teacher = build_model(cfg.model, spec)
    settings = distill.DistillSettings(teacher="t", steps=4, trajectories=4, adversarial=1.0, adversarial_start=0,
                                       adversarial_nfe=[1, 2]).check()
    chunk = distill.teacher_chunk(teacher, settings, 4, torch.Generator().manual_seed(0))
    student = distill.DistillingBFN(teacher, settings, tuple(chunk["end"].shape[1:]))
    assert student.config["distilled"]["adversarial_nfe"] == [1, 2]
    reals = torch.utils.data.TensorDataset(torch.randn(4, *teacher.data_shape))
    batch = torch.stack([distill.TrajectoryDataset(chunk, reals)[i][0] for i in range(4)])
    seen: list[int] = []
    real_output = distill.student_output

    def recording(flow, output_fn, shape, steps, **kwargs):
        seen.append(steps)
        return real_output(flow, output_fn, shape, steps, **kwargs)

    monkeypatch.setattr(distill, "student_output", recording)
    for _ in range(30):
        assert torch.isfinite(student(batch)).all()
    assert set(seen) == {1, 2} and len(seen) == 30


@pytest.mark.parametrize("nfe", [[3], [8], []])
def test_adversarial_nfe_must_be_served_by_the_student(nfe):
    from bfn.errors import ConfigError
    from bfn.training.distill import DistillSettings

    with pytest.raises(ConfigError, match="--adversarial-nfe"):
        DistillSettings(teacher="t", steps=4, adversarial=1.0, adversarial_nfe=nfe).check()


def test_adversarial_nfe_parses_a_list_and_names_a_bad_one():
    from bfn.commands.distill import nfe_list
    from bfn.errors import ConfigError

    assert nfe_list("4, 1,2,1") == [1, 1, 2, 4] and nfe_list(None) is None
    with pytest.raises(ConfigError, match="whole numbers separated by commas"):
        nfe_list("1;2")
