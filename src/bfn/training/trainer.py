"""The training loop, on Hugging Face Accelerate: the same code on one CPU core or many GPUs.

Nothing here knows about model families: a model is any `bfn.models.base.GenerativeModel`, built from the run
config by `bfn.models.build_model`; the loop minimises `model(x, cond=cond)` (its `loss`, per example) divided by
the number of variables per example.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bfn.config import RunConfig, TrainConfig, to_yaml
from bfn.data.spec import DataSpec
from bfn.errors import CheckpointError, ConfigError, TrainingError, first_line
from bfn.models.base import GenerativeModel
from bfn.models.hub import build_model, save_pretrained
from bfn.training.batches import training_batches
from bfn.training.checkpoint import STATE_NAME, load_state, lock_run_dir, remove_stale_temps, save_state
from bfn.training.ema import ema_model
from bfn.training.logging import MetricsLogger
from bfn.utils.io import atomic_write_text
from bfn.utils.threads import auto_threads


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_loss: float
    images_per_second: float
    wall_seconds: float
    interrupted: bool = False
    steps_done: int = 0  # steps taken by this call (0 when a resumed run was already finished)


@dataclass
class StepOutput:
    """One optimisation step: the mean loss per example (nats for likelihood-trained models), the per-example
    losses, the gradient norm before clipping (None without clipping), and whether the loss was finite (when it
    was not, no update was made)."""

    loss: float
    per_example: Tensor
    grad_norm: float | None
    finite: bool


def train_step(model: nn.Module, x: Tensor, cond: Tensor | None, optimizer: torch.optim.Optimizer, *,
               grad_clip: float, autocast: Callable[[], Any] = contextlib.nullcontext,
               backward: Callable[[Tensor], None] | None = None,
               clip: Callable[[Any, float], Any] = torch.nn.utils.clip_grad_norm_,
               scheduler: Any = None, ema: Any = None, raw_model: nn.Module | None = None) -> StepOutput:
    """One step exactly as `train` takes it: forward under `autocast`, the loss per variable (a scale-free
    objective), a finite check (no update when it fails), backward, gradient clipping, the optimizer, the LR
    scheduler and the EMA update. `backward`/`clip`/`autocast` are Accelerate's in the trainer; plain torch in
    benchmarks. `raw_model` is the unwrapped module for the EMA (default `model`)."""
    with autocast():
        per_example = model(x, cond=cond)
    loss = per_example.mean() / x[0].numel()
    if not torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        return StepOutput(float("nan"), per_example.detach(), None, False)
    (backward or Tensor.backward)(loss)
    grad_norm = clip(model.parameters(), grad_clip) if grad_clip > 0 else None
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update_parameters(raw_model if raw_model is not None else model)
    return StepOutput(float(per_example.detach().mean()), per_example.detach(),
                      None if grad_norm is None else float(grad_norm), True)


def param_groups(model: nn.Module, weight_decay: float, decay_vectors: bool) -> list[dict[str, Any]]:
    """AdamW parameter groups: all parameters decayed, or (decay_vectors=False) only matrices and kernels, with
    biases and norm scales undecayed (nanoGPT's rule, which the official text8 recipe uses)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_vectors:
        return [{"params": params}]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def exported(module: nn.Module) -> GenerativeModel:
    """What a run exports: the module itself, or what its `exported()` returns (a distilling student without its
    critic, `bfn.training.distill`)."""
    export = getattr(module, "exported", None)
    return export() if callable(export) else module  # type: ignore[return-value]


def _lr_lambda(warmup: int, after: tuple[int, float] | None = None):
    """Linear warm-up over `warmup` steps; with `after` = (step, factor), the factor from that step on."""
    def f(step: int) -> float:
        scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return scale * after[1] if after is not None and step >= after[0] else scale
    return f


class _Interrupt:
    """First Ctrl-C: finish the step, save and stop; second: the usual KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("interrupt: finishing this step and saving (Ctrl-C again to abort without saving)")

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


#: builds (model, dataset, data spec) instead of the config's model and dataset (e.g. `training.distill`)
Setup = Callable[[], tuple[GenerativeModel, Any, Any]]


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, device: str = "auto",
          progress: bool = True, setup: Setup | None = None) -> TrainResult:
    """Train the model of `cfg` on its dataset, writing everything into `run_dir` (see training.checkpoint).
    The main process holds the folder's lock file for the whole run (`checkpoint.lock_run_dir`). `setup`
    replaces the config's model and dataset (its data spec is only used for periodic sample grids)."""
    with contextlib.ExitStack() as stack:
        return _Run(cfg, Path(run_dir), resume=resume, device=device, progress=progress, stack=stack,
                    setup=setup).fit()


class _Run:
    """One `bfn train` invocation: set up (accelerator, data, model, optimizer, restored state), then `fit`."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, resume: bool, device: str, progress: bool,
                 stack: contextlib.ExitStack, setup: Setup | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from bfn.data import load_dataset

        self.cfg, self.tc, self.run_dir, self.progress = cfg, cfg.train, run_dir, progress
        tc = cfg.train
        self.accelerator = accelerator = Accelerator(cpu=_use_cpu(device), mixed_precision=tc.precision)
        self.main = accelerator.is_main_process
        _set_threads(tc, accelerator.device, self.main)
        self.state_file = run_dir / STATE_NAME
        if self.state_file.exists() and not resume:
            raise CheckpointError(f"{run_dir} already holds a run; add --resume to continue it, or choose another "
                                  "--out directory")
        set_seed(tc.seed, device_specific=True)

        if setup is None:
            self.dataset, self.spec = load_dataset(cfg.data.name, "train", root=cfg.data.root, **cfg.data.options)
            model = build_model(cfg.model, self.spec).to(accelerator.device)
        else:
            model, self.dataset, self.spec = setup()
            model = model.to(accelerator.device)
        self.ema = ema_model(model, tc.ema_decay, warmup=tc.ema_warmup)
        own_groups = getattr(model, "param_groups", None)  # a model's own groups, e.g. a critic's learning rate
        groups: list[dict[str, Any]] = (own_groups(tc.weight_decay) if callable(own_groups)
                                        else param_groups(model, tc.weight_decay, tc.decay_vectors))
        lambdas = []
        for group in groups:  # a group may scale train.lr (lr_scale), from some step on (lr_scale_after)
            group["lr"] = tc.lr * group.pop("lr_scale", 1.0)
            lambdas.append(_lr_lambda(tc.warmup_steps, group.pop("lr_scale_after", None)))
        optimizer = torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas),  # type: ignore[arg-type]
                                      weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        if self.main:  # after every check of the config and the data, before the first read or write of the folder
            stack.enter_context(lock_run_dir(run_dir))
        self.start_step, self.elapsed_before = 0, 0.0
        self.saved_step: int | None = None  # the last checkpoint on disk
        if resume and self.state_file.exists():
            self._restore(model, optimizer)
        elif resume and self.main:
            tqdm.write(f"--resume: no checkpoint in {run_dir} yet, starting from step 0")
        self.ema.to(accelerator.device)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.raw_model: GenerativeModel = accelerator.unwrap_model(self.model)
        if tc.compile:
            self.raw_model.compile_networks()

    def _restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        state = load_state(self.run_dir)
        try:
            model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_cpu"])
            if torch.cuda.is_available() and "rng_cuda" in state:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = first_line(err, 100)
            raise CheckpointError(f"{self.state_file} does not match this config ({first}); resume with the run's "
                                  "own config.yaml") from None
        self.start_step = self.saved_step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed", 0.0))

    def checkpoint(self, step: int, elapsed: float) -> None:
        """EMA weights (config.json + model.safetensors) and the full resume state, atomically."""
        self.accelerator.wait_for_everyone()
        self.saved_step = step
        if not self.main:
            return
        save_pretrained(exported(self.ema.module), self.run_dir, extra={"step": step})
        state = {"step": step, "elapsed": elapsed, "model": self.raw_model.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        save_state(self.run_dir, state)

    def _labels(self, labels: Tensor) -> Tensor | None:
        """Conditioning labels of a batch, with the null label at rate model.label_dropout (classifier-free
        guidance); None for an unconditional model."""
        num_labels = self.raw_model.num_labels
        if num_labels is None:
            return None
        cond = labels.to(self.accelerator.device)
        drop = torch.rand(cond.shape, device=cond.device) < self.cfg.model.label_dropout
        return torch.where(drop, torch.full_like(cond, num_labels), cond)

    def _bad_step(self, step: int, bad: int) -> None:
        """The NaN policy: stop with a one-line error, or skip the batch (up to train.max_bad_steps in a row)."""
        if self.saved_step is None:
            msg = (f"non-finite loss at step {step + 1}, before the first checkpoint; check the data "
                   "(values far outside [-1, 1]?) and lower train.lr")
        else:
            msg = (f"non-finite loss at step {step + 1}; the last good checkpoint (step {self.saved_step}) in "
                   f"{self.run_dir} is kept. Lower train.lr or train.grad_clip, then rerun with --resume")
        if self.tc.nan_policy == "stop" or bad > self.tc.max_bad_steps:
            raise TrainingError(msg)
        tqdm.write(f"skipping: {msg.split(';')[0]}")

    def fit(self) -> TrainResult:
        cfg, tc, accelerator, run_dir = self.cfg, self.tc, self.accelerator, self.run_dir
        logger = None
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(run_dir)  # left by a run killed while writing a file
            atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
            logger = MetricsLogger(run_dir / "metrics.jsonl",
                                   tensorboard_dir=run_dir / "tb" if tc.tensorboard else None)
            logger.truncate_after(self.start_step)
        batches = training_batches(self.dataset, tc.batch_size, seed=tc.seed, start_step=self.start_step,
                                   world=accelerator.num_processes, rank=accelerator.process_index,
                                   num_workers=cfg.data.num_workers) if self.start_step < tc.steps else iter(())
        bar = tqdm(total=tc.steps, initial=self.start_step, disable=not (self.progress and self.main), desc=cfg.name,
                   dynamic_ncols=True)
        step, last_loss, bad, interrupted = self.start_step, float("nan"), 0, False
        t0 = window_t = time.perf_counter()
        window_n = 0
        with _Interrupt() as stop, bar:  # the bar is closed (and its line ended) whatever stops the loop
            while step < tc.steps:
                x, labels = next(batches)
                x = x.to(accelerator.device)
                out = train_step(self.model, x, self._labels(labels), self.optimizer, grad_clip=tc.grad_clip,
                                 autocast=accelerator.autocast, backward=accelerator.backward,
                                 clip=accelerator.clip_grad_norm_, scheduler=self.scheduler, ema=self.ema,
                                 raw_model=self.raw_model)
                if not out.finite:
                    bad += 1
                    self._bad_step(step, bad)
                    continue
                bad = 0
                step += 1
                window_n += x.shape[0] * accelerator.num_processes
                last_loss = float(accelerator.reduce(out.per_example.mean(), reduction="mean"))
                bar.update(1)
                if step % tc.log_every == 0 or step == tc.steps:
                    now = time.perf_counter()
                    ips = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    bar.set_postfix(loss=f"{last_loss:.2f}", img_s=f"{ips:.0f}")
                    if logger is not None:
                        logger.log({"step": step, "loss": last_loss, "loss_per_dim": last_loss / x[0].numel(),
                                    "grad_norm": out.grad_norm, "lr": self.scheduler.get_last_lr()[0],
                                    "images_per_s": ips, "elapsed_s": self.elapsed_before + now - t0,
                                    "world_size": accelerator.num_processes})
                if self.main and tc.sample_every and step % tc.sample_every == 0:
                    path = run_dir / "samples" / f"step_{step:07d}.png"
                    _save_samples(self.ema.module, self.spec, path, tc)  # type: ignore[arg-type]
                elapsed = self.elapsed_before + time.perf_counter() - t0
                out_of_time = tc.max_seconds > 0 and elapsed >= tc.max_seconds
                if step % tc.checkpoint_every == 0 or step == tc.steps or stop.requested or out_of_time:
                    self.checkpoint(step, elapsed)
                if out_of_time and not stop.requested:
                    if self.main:
                        tqdm.write(f"train.max_seconds={tc.max_seconds:g} reached at step {step}; saved")
                    break
                if stop.requested:
                    interrupted = True
                    break
        wall = time.perf_counter() - t0
        if logger is not None:
            logger.close()
        done = step - self.start_step
        batch = tc.batch_size * accelerator.num_processes
        if done == 0 and self.main and not interrupted:
            last_loss = _last_logged_loss(run_dir)
        result = TrainResult(run_dir=run_dir, step=step, final_loss=last_loss,
                             images_per_second=done * batch / wall if wall > 0 and done else math.nan,
                             wall_seconds=self.elapsed_before + wall, interrupted=interrupted, steps_done=done)
        if interrupted and self.main:
            tqdm.write(f"stopped at step {step}; continue with: bfn train {run_dir / 'config.yaml'} --out {run_dir} "
                       "--resume")
        return result


def _use_cpu(device: str) -> bool:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda for training, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def _set_threads(tc: TrainConfig, device: torch.device, main: bool) -> None:
    if device.type != "cpu":
        return
    threads, note = (tc.threads, None) if tc.threads else auto_threads()
    torch.set_num_threads(threads)
    if note and main:
        tqdm.write(note)
    from bfn.training.allocator import keep_freed_memory

    keep_freed_memory()  # no page faults for re-allocated activations; same numbers
    if tc.precision != "no" and main:
        warnings.warn(f"train.precision={tc.precision} on a CPU: autocast is emulated on most CPUs and was 10x "
                      "slower than float32 in benchmarks/optimisations.py; use train.precision=no", stacklevel=3)


def _last_logged_loss(run_dir: Path) -> float:
    """The last loss in metrics.jsonl (for a resumed run that had nothing left to do)."""
    from bfn.utils.io import read_metrics

    path = run_dir / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    return float(records[-1]["loss"]) if records and "loss" in records[-1] else math.nan


def _save_samples(model: GenerativeModel, spec: DataSpec, path: Path, tc: TrainConfig) -> None:
    """A grid of EMA samples with a fixed generator, so grids of successive steps are comparable; a conditional
    model draws labels 0, 1, ..., L-1, 0, 1, ... in order."""
    from bfn.data.text import data_is_text
    from bfn.viz.grid import save_sample_grid

    was_training = model.training
    model.eval()
    device = model.device
    gen = torch.Generator(device=device).manual_seed(0)
    labels = model.num_labels
    cond = torch.arange(tc.sample_n, device=device) % labels if labels else None
    steps = tc.sample_steps if model.capabilities.default_steps is not None else None
    with torch.no_grad():
        x = model.sample(tc.sample_n, steps, generator=gen, cond=cond)
    model.train(was_training)
    if data_is_text(spec):  # text: the samples as lines of a .txt file
        from bfn.viz.text import write_text_samples

        write_text_samples(x, path.with_suffix(".txt"))
        return
    save_sample_grid(x, path, kind=spec.kind, num_bins=spec.num_bins, num_classes=spec.num_classes or 2)
