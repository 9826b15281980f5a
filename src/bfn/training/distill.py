"""Trajectory distillation of a trained BFN into a few-step student (`bfn distill RUN`).

The teacher's probability-flow ODE (second-order multistep solver, `substeps` steps per student interval) maps an
initial state z_0 ~ N(0, s_{t_0}^2 I) at the first time of the student's grid (`bfn.samplers.distilled`) to an
output distribution at t = 1. For each of `trajectories` initial draws the teacher's states z_j at the student's
grid times t_0 .. t_{n-1} and its final output probabilities are stored. The student, a normal BFN with the
teacher's architecture and input parameters theta, starts from the teacher's weights and learns, for every
interval [t_j, t_{j+m}] of the nested grids of n / m steps (m = 1, 2, 4, .. n):
* within the trajectory: the data estimate D* that makes one first-order ODE step (DDIM, Lu et al. 2022;
  `bfn.samplers.bfn_solver.solver_step`) from z_j land on the teacher's state z_{j+m},
      D* = (z_{j+m} - (s_{t'} / s_t) z_j) / (a_{t'} (1 - e^{-h})),  h = lambda_{t'} - lambda_t,
  with a squared error on the student's data estimate (the state format of `BayesianFlow.state_target`);
* at the last interval: the teacher's output distribution at t = 1, by the cross-entropy of the student's output
  probabilities against the teacher's (squared error on the mean for continuous data, whose p_O is a point mass).
This is knowledge distillation of the sampler's trajectory (Luhman & Luhman 2021) on the nested grids of
progressive distillation (Salimans & Ho 2022) in one round, because the teacher's fine ODE solution is computed once
and reused.

A student of the ODE can only be as good as the ODE, and with an imperfect network the ODE ends a little away from
the data (benchmarks/RESULTS.md). With `adversarial` w > 0, from trainer step `adversarial_start` on, a critic
(`bfn.training.adversarial`) learns to tell the student's `steps`-evaluation draws from training examples, and the
student's loss per example becomes distillation + w D (student's adversarial term), D the number of variables, so
that w weighs the critic against the distillation error per variable (adversarial diffusion distillation, Sauer et
al. 2023, with this trajectory loss as the distillation term). The critic and the student update in the same step
from one batch of draws, each with its own objective (their gradients are kept apart). The draws take `steps`
evaluations, or a number drawn per batch from `adversarial_nfe` (e.g. [1, 2, 4]: the critic then trains the
student's shorter samplers too, which the trajectory loss alone leaves blurred at 1 evaluation on discrete data).

The student's p_O is no longer a BFN output distribution in the paper's sense, so the BFN loss is not a
likelihood bound for it: its config.json records `distilled`, and `bfn eval --nll` refuses it.

Training runs on the trainer (`bfn.training.trainer.train`, with this module's `setup`): progress, resume, the
folder lock, Ctrl-C, the NaN policy and the atomic checkpoints are the trainer's.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bfn.errors import CheckpointError, ConfigError
from bfn.models.base import GenerativeModel
from bfn.models.bfn import BFN
from bfn.samplers.bfn_solver import solver_step
from bfn.samplers.distilled import student_grid, student_output
from bfn.samplers.gaussian_path import GaussianPath
from bfn.training.adversarial import build_critic, critic_loss, fake_format, real_format, student_loss
from bfn.utils.io import atomic_write, atomic_write_text
from bfn.utils.tensors import append_dims

SETTINGS_NAME = "distill.json"
ADVERSARIAL_LR_FACTOR = 0.1  # the student's learning rate in the adversarial phase, relative to train.lr
TRAJ_DIR = "trajectories"


@dataclass
class DistillSettings:
    """What `bfn distill` does besides the trainer's settings (written to RUN/distill.json)."""

    teacher: str  # the teacher's run directory
    steps: int = 4  # the student's finest grid; it serves 1, 2, 4, .. `steps` evaluations (a power of two)
    substeps: int = 8  # teacher ODE steps per student interval (twice that for the last interval, up to t = 1)
    trajectories: int = 1024
    chunk: int = 128  # trajectories per file (the unit of progress and resume of the teacher pass)
    seed: int = 0
    adversarial: float = 0.0  # weight of the critic's term (bfn.training.adversarial); 0: trajectories only
    adversarial_start: int = 600  # trainer steps of trajectory distillation before the critic joins
    adversarial_nfe: list[int] | None = None  # evaluations of the draws the critic sees, one at random per batch;
    #                                            None: `steps` only

    def check(self) -> DistillSettings:
        if self.steps < 1 or self.steps & (self.steps - 1):
            raise ConfigError(f"--student-steps must be a power of two (1, 2, 4, 8), got {self.steps}")
        if self.substeps < 1:
            raise ConfigError(f"--substeps must be at least 1, got {self.substeps}")
        if self.trajectories < 1 or self.chunk < 1:
            raise ConfigError(f"--trajectories must be at least 1, got {self.trajectories}")
        if not (math.isfinite(self.adversarial) and self.adversarial >= 0) or self.adversarial_start < 0:
            raise ConfigError(f"--adversarial must be a weight >= 0 and --adversarial-start a step >= 0, got "
                              f"{self.adversarial} and {self.adversarial_start}")
        nested = [2**i for i in range(int(math.log2(self.steps)) + 1)]
        if self.adversarial_nfe is not None and (not self.adversarial_nfe
                                                 or any(n not in nested for n in self.adversarial_nfe)):
            raise ConfigError(f"--adversarial-nfe must list evaluations the student serves ({nested}), got "
                              f"{self.adversarial_nfe}")
        return self

    @property
    def critic_nfe(self) -> list[int]:
        """The evaluations of the draws the critic sees (one, at random, per batch)."""
        return list(self.adversarial_nfe) if self.adversarial_nfe else [self.steps]


def write_settings(run_dir: Path, settings: DistillSettings) -> None:
    atomic_write_text(run_dir / SETTINGS_NAME, json.dumps(asdict(settings), indent=2))


def read_settings(run_dir: Path) -> DistillSettings:
    path = run_dir / SETTINGS_NAME
    try:
        return DistillSettings(**json.loads(path.read_text())).check()
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is missing or damaged ({err}); start the distillation in a new --out "
                              "directory") from None


# --- the teacher pass ----------------------------------------------------------------------------------------
def _fine_grid(path: GaussianPath, grid: list[float], substeps: int) -> tuple[list[float], list[int]]:
    """Teacher times: each student interval split uniformly in lambda (the last, up to t = 1, in 2 x substeps);
    returns the times and the index in them of each student grid time."""
    times: list[float] = []
    marks: list[int] = []
    for j in range(len(grid) - 1):
        marks.append(len(times))
        lo, hi = path.log_snr(grid[j]), path.log_snr(grid[j + 1])
        n = substeps * (2 if j == len(grid) - 2 else 1)
        times += [path.time_at(lo + (hi - lo) * i / n) for i in range(n)]
    return times + [1.0], marks


@torch.no_grad()
def teacher_chunk(teacher: BFN, settings: DistillSettings, n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """n teacher trajectories: states [n, steps, *state] at the student's grid times and the final output
    (probabilities [n, *S, K], or the mean [n, *S] for a point mass)."""
    path = GaussianPath(teacher.flow)
    grid = student_grid(path, settings.steps)
    times, marks = _fine_grid(path, grid, settings.substeps)
    device = teacher.device
    z = path.initial((n, *teacher.data_shape), times[0], generator=generator, device=device)
    states, prev = [], None
    for i in range(len(times) - 1):
        if i in marks:
            states.append(z.clone())
        t, s = times[i], times[i + 1]
        d = path.data_estimate(teacher.output_distribution(path.theta(z, t), torch.full((n,), t, device=device)))
        z = solver_step(z, d, path=path, t=t, s=s, stochastic=False, prev=prev)
        prev = (path.log_snr(t), d)
    final = teacher.output_distribution(path.theta(z, 1.0), torch.ones(n, device=device))
    end = final.probs if hasattr(final, "probs") else final.mean
    return {"states": torch.stack(states, 1).float().cpu(), "end": end.float().cpu()}


def teacher_pass(teacher: BFN, run_dir: Path, settings: DistillSettings, *, progress: bool = True) -> None:
    """Write the teacher's trajectories as RUN/trajectories/chunk_XXXX.pt (atomic writes); chunks already on disk
    are kept, so an interrupted pass resumes where it stopped."""
    folder = run_dir / TRAJ_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = math.ceil(settings.trajectories / settings.chunk)
    todo = [c for c in range(n_chunks) if not (folder / f"chunk_{c:04d}.pt").is_file()]
    bar = tqdm(total=n_chunks, initial=n_chunks - len(todo), disable=not progress, desc="teacher trajectories",
               dynamic_ncols=True)
    with bar:
        for c in todo:
            n = min(settings.chunk, settings.trajectories - c * settings.chunk)
            gen = torch.Generator(device=teacher.device).manual_seed(settings.seed * 1_000_003 + c)
            data = teacher_chunk(teacher, settings, n, gen)

            def write(tmp: str, data: dict[str, Tensor] = data) -> None:
                torch.save(data, tmp)

            atomic_write(folder / f"chunk_{c:04d}.pt", write)
            bar.update(1)


def load_trajectories(run_dir: Path, settings: DistillSettings) -> dict[str, Tensor]:
    n_chunks = math.ceil(settings.trajectories / settings.chunk)
    parts = []
    for c in range(n_chunks):
        path = run_dir / TRAJ_DIR / f"chunk_{c:04d}.pt"
        try:
            parts.append(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # a missing or damaged chunk: it is rewritten by the next pass
            raise CheckpointError(f"{path} is missing or damaged ({str(err).splitlines()[0][:80]}); delete it and "
                                  "rerun `bfn distill` with --resume to recompute it") from None
    return {k: torch.cat([p[k] for p in parts]) for k in ("states", "end")}


class TrajectoryDataset(torch.utils.data.Dataset):
    """Item i = (teacher trajectory i packed into one flat float tensor, label 0): what the trainer batches. With
    `reals` (adversarial distillation: a dataset whose items start with an example in data format), a training
    example is packed after the trajectory, read from `reals` when the item is asked for; the dataset is then as
    long as the longer of the two, the shorter one cycling."""

    def __init__(self, data: dict[str, Tensor], reals: torch.utils.data.Dataset | None = None) -> None:
        self.packed = torch.cat([data["states"].flatten(1), data["end"].flatten(1)], 1)
        self.reals = reals

    def __len__(self) -> int:
        return max(self.packed.shape[0], 0 if self.reals is None else len(self.reals))  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        item = self.packed[i % self.packed.shape[0]]
        if self.reals is None:
            return item, 0
        real = self.reals[i % len(self.reals)][0]  # type: ignore[arg-type]
        return torch.cat([item, torch.as_tensor(real).flatten().float()]), 0


# --- the student ---------------------------------------------------------------------------------------------
class DistillingBFN(BFN):
    """A BFN whose training loss (`forward`) is the distillation loss on packed teacher trajectories (see the
    module docstring), plus, with `settings.adversarial` > 0, a critic's term (`bfn.training.adversarial`) from
    trainer step `settings.adversarial_start` on. What it exports (`exported`) is a normal BFN: the student's
    network and config.json with the `distilled` entry, without the critic."""

    adv_step: Tensor

    def __init__(self, teacher: BFN, settings: DistillSettings, end_shape: tuple[int, ...]) -> None:
        super().__init__(copy.deepcopy(teacher.network), teacher.flow, layout=teacher.layout, loss=teacher.train_loss,
                         data=teacher.data)
        method = "adversarial" if settings.adversarial > 0 else "trajectory"
        self.config = {**copy.deepcopy(teacher.config),
                       "distilled": {"method": method, "teacher": settings.teacher, "steps": settings.steps,
                                     "substeps": settings.substeps, "trajectories": settings.trajectories,
                                     **({"adversarial": settings.adversarial, "adversarial_nfe": settings.critic_nfe}
                                        if settings.adversarial > 0 else {})}}
        self.path = GaussianPath(self.flow)
        self.grid = student_grid(self.path, settings.steps)
        self.steps = settings.steps
        self.state_shape = self.flow.state_shape((1, *self.data_shape))[1:]
        self.end_shape = end_shape
        self.adversarial = settings.adversarial
        self.adversarial_start = settings.adversarial_start
        self.critic_nfe = settings.critic_nfe
        self.critic = build_critic(self.data) if self.adversarial > 0 else None
        self.register_buffer("adv_step", torch.zeros(()))  # trainer steps taken (float: EMA-safe; resumes)

    def exported(self) -> BFN:
        """The student as a plain BFN sharing this network (what the trainer writes to model.safetensors)."""
        student = BFN(self.network, self.flow, layout=self.layout, loss=self.train_loss, data=self.data)
        student.config = self.config
        return student

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups for the trainer. The student's learning rate drops to a tenth when the critic joins; the
        critic learns at the student's first rate (ten times the student's from then on: the critic faster, Heusel
        et al. 2017) with StyleGAN2's beta_1 = 0, beta_2 = 0.99 (Karras et al. 2020). On grey MNIST, the student at
        the full rate against a critic at ten times it turned the student's draws to noise within 400 steps."""
        if self.critic is None:
            return [{"params": list(self.parameters()), "weight_decay": weight_decay}]
        critic = list(self.critic.parameters())
        ids = {id(p) for p in critic}
        student = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": student, "weight_decay": weight_decay,
                 "lr_scale_after": (self.adversarial_start, ADVERSARIAL_LR_FACTOR)},
                {"params": critic, "weight_decay": 0.0, "betas": (0.0, 0.99)}]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Loss per example [B]: the distillation loss of a random interval of the nested grids, plus in the
        adversarial phase w x (number of variables) x (student's + critic's adversarial terms), on draws of a number
        of evaluations picked at random per batch from `critic_nfe`."""
        per_traj = self.steps * math.prod(self.state_shape) + math.prod(self.end_shape)
        loss = self.trajectory_loss(x[:, :per_traj])
        adversarial = self.critic is not None and float(self.adv_step) >= self.adversarial_start
        if self.training and torch.is_grad_enabled():
            self.adv_step += 1
        if not adversarial or self.critic is None:
            return loss
        real = x[:, per_traj:].reshape(x.shape[0], *self.data_shape)
        if self.data.kind == "discrete":
            real = real.round().long()
        nfe = self.critic_nfe[int(torch.randint(len(self.critic_nfe), ()))]  # this batch's path
        output = student_output(self.flow, self.output_distribution, (x.shape[0], *self.data_shape), nfe,
                                device=x.device)
        fake = fake_format(output, self.data)
        terms = student_loss(self.critic, fake) + critic_loss(self.critic, real_format(real, self.data), fake)
        return loss + self.adversarial * math.prod(self.data_shape) * terms

    def trajectory_loss(self, x: Tensor) -> Tensor:
        """Distillation loss per example [B] for a random interval [t_j, t_{j+m}] of the nested grids."""
        b, k = x.shape[0], self.steps
        per_state = math.prod(self.state_shape)
        states = x[:, : k * per_state].reshape(b, k, *self.state_shape)
        end = x[:, k * per_state:].reshape(b, *self.end_shape)
        sizes = 2 ** torch.randint(0, int(math.log2(k)) + 1, (b,), device=x.device)  # m in 1, 2, 4, .. k
        j = (torch.rand(b, device=x.device) * (k // sizes)).floor().long() * sizes
        last = j + sizes == k
        t = torch.tensor(self.grid, device=x.device, dtype=torch.float64)[j]
        z = states[torch.arange(b, device=x.device), j]
        theta = self._theta_at(z, t)
        output = self.flow.output_distribution(self.net_output(theta, t.float()), theta, t.float())
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.where(last, self._end_loss(output, end), self._step_loss(output, states, z, j, sizes, t))

    def _theta_at(self, z: Tensor, t: Tensor) -> Any:
        """theta of each example's state at its own time (per-example accuracy)."""
        thetas = [self.flow.state_theta(z[i:i + 1], self.path.beta(float(t[i]))) for i in range(z.shape[0])]
        if isinstance(thetas[0], Tensor):
            return torch.cat(thetas)
        return type(thetas[0])(*(torch.cat(parts) for parts in zip(*thetas, strict=True)))

    def _end_loss(self, output: Any, end: Tensor) -> Tensor:
        if hasattr(output, "probs"):
            return -(end * output.probs.clamp_min(1e-12).log()).flatten(1).sum(1)
        return (output.mean - end).flatten(1).pow(2).sum(1)

    def _step_loss(self, output: Any, states: Tensor, z: Tensor, j: Tensor, sizes: Tensor, t: Tensor) -> Tensor:
        b = z.shape[0]
        nxt = (j + sizes).clamp_max(self.steps - 1)  # the last interval's entry is a finite dummy (unused)
        z_s = states[torch.arange(b, device=z.device), nxt]
        s_time = torch.tensor(self.grid, device=z.device, dtype=torch.float64)[nxt]
        target = ode_step_target(self.path, z, z_s, [float(v) for v in t], [float(v) for v in s_time])
        return (self.flow.state_target(output) - target).flatten(1).pow(2).sum(1)


def ode_step_target(path: GaussianPath, z_t: Tensor, z_s: Tensor, t: list[float], s: list[float]) -> Tensor:
    """Per example i, the data estimate D* with which one first-order ODE step from z_t at t[i] lands on z_s at
    s[i]: D* = (z_s - (s_s / s_t) z_t) / (a_s (1 - e^-h)), h = lambda_s - lambda_t (module docstring). Examples with
    s[i] <= t[i] get a finite dummy (z_s itself): torch.where would pass NaN gradients of a 0/0 on."""
    ratio, gain = [], []
    for ti, si in zip(t, s, strict=True):
        if si <= ti:
            ratio.append(0.0)
            gain.append(1.0)
            continue
        h = path.log_snr(si) - path.log_snr(ti)
        ratio.append(path.noise(si) / path.noise(ti))
        gain.append(path.signal(si) * -math.expm1(-h))
    ratio_t, gain_t = (append_dims(torch.tensor(v, device=z_t.device, dtype=z_t.dtype), z_t.ndim)
                       for v in (ratio, gain))
    return (z_s - ratio_t * z_t) / gain_t


def bfn_teacher(model: GenerativeModel) -> BFN:
    """The teacher as a BFN (distillation follows a BFN's flow); a ConfigError for any other family."""
    if not isinstance(model, BFN):
        raise ConfigError(f"bfn distill needs a BFN teacher, got a {model.family} model")
    if "distilled" in model.config:
        raise ConfigError("the teacher is itself a distilled student; distill its teacher instead")
    return model


def student_setup(teacher: BFN, run_dir: Path, settings: DistillSettings,
                  reals: torch.utils.data.Dataset | None = None) -> tuple[DistillingBFN, Any, None]:
    """(student, dataset, spec) for `trainer.train(..., setup=...)`; `reals`, the training data (`training_data`),
    is needed with `settings.adversarial` > 0."""
    if settings.adversarial > 0 and reals is None:
        raise ConfigError("adversarial distillation needs the teacher's training data")
    data = load_trajectories(run_dir, settings)
    student = DistillingBFN(teacher, settings, tuple(data["end"].shape[1:]))
    return student, TrajectoryDataset(data, reals if settings.adversarial > 0 else None), None


def training_data(cfg: Any) -> torch.utils.data.Dataset:
    """The teacher's training split (its config's `data`): a dataset whose items start with an example in data
    format, read as the trainer asks for them (not held in memory at once)."""
    from bfn.data import load_dataset

    return load_dataset(cfg.data.name, "train", root=cfg.data.root, **cfg.data.options)[0]
