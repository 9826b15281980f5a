"""The training loop, on Hugging Face Accelerate: the same code on one CPU core or many GPUs.

Nothing here knows about BFNs: a model is any module with `loss(x, cond=...) -> [B]` nats and
`sample(n, steps, ...)`, built from the run config by `bfn.models.build_model`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bfn.config import RunConfig, to_yaml
from bfn.errors import CheckpointError, ConfigError, TrainingError
from bfn.models.hub import DataInfo, atomic_write_text, build_model, save_pretrained
from bfn.training.checkpoint import STATE_NAME, load_state, lock_run_dir, remove_stale_temps, save_state
from bfn.training.ema import ema_model
from bfn.training.logging import MetricsLogger


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    final_loss: float
    images_per_second: float
    wall_seconds: float
    interrupted: bool = False


def data_info(spec: Any) -> DataInfo:
    """The model-side description of a dataset spec from `bfn.data`."""
    return DataInfo(kind=spec.kind, shape=tuple(spec.shape), num_classes=spec.num_classes, num_bins=spec.num_bins,
                    num_labels=spec.num_labels)


def batch_indices(n_items: int, batch: int, world: int, rank: int, seed: int, start_step: int) -> Iterator[list[int]]:
    """Index lists for steps start_step, start_step + 1, ...: a fresh permutation each epoch, seeded by (seed,
    epoch), so a resumed run sees exactly the batches it would have seen; rank r takes its slice of the global
    batch. A dataset smaller than one global batch is a ConfigError, raised at the call (not at the first batch)."""
    global_batch = batch * world
    if n_items < global_batch:
        raise ConfigError(f"the dataset has {n_items} examples, fewer than one global batch of {global_batch}; "
                          "lower train.batch_size")
    return _batches(n_items, batch, global_batch, rank, seed, start_step)


def _batches(n_items: int, batch: int, global_batch: int, rank: int, seed: int,
             start_step: int) -> Iterator[list[int]]:
    per_epoch = n_items // global_batch
    step = start_step
    while True:
        epoch, pos = divmod(step, per_epoch)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        while pos < per_epoch:
            chunk = perm[pos * global_batch:(pos + 1) * global_batch]
            yield chunk[rank * batch:(rank + 1) * batch].tolist()
            pos += 1
            step += 1


def _lr_lambda(warmup: int):
    def f(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
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


def train(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, device: str = "auto",
          progress: bool = True) -> TrainResult:
    """Train the model of `cfg` on its dataset, writing everything into `run_dir` (see training.checkpoint).
    The main process holds the folder's lock file for the whole run (`checkpoint.lock_run_dir`)."""
    with contextlib.ExitStack() as stack:
        return _train(cfg, run_dir, resume=resume, device=device, progress=progress, stack=stack)


def _train(cfg: RunConfig, run_dir: str | Path, *, resume: bool, device: str, progress: bool,
           stack: contextlib.ExitStack) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from bfn.data import load_dataset

    run_dir = Path(run_dir)
    tc = cfg.train
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda for training, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    accelerator = Accelerator(cpu=cpu, mixed_precision=tc.precision)
    main = accelerator.is_main_process
    if accelerator.device.type == "cpu":
        if tc.threads:
            torch.set_num_threads(tc.threads)
        if tc.precision != "no" and main:
            warnings.warn(f"train.precision={tc.precision} on a CPU: autocast is emulated on most CPUs and was 10x "
                          "slower than float32 in benchmarks/optimisations.py; use train.precision=no", stacklevel=2)
    state_file = run_dir / STATE_NAME
    if state_file.exists() and not resume:
        raise CheckpointError(f"{run_dir} already holds a run; add --resume to continue it, or choose another "
                              "--out directory")
    set_seed(tc.seed, device_specific=True)

    dataset, spec = load_dataset(cfg.data.name, "train", root=cfg.data.root, **cfg.data.options)
    model = build_model(cfg.model, data_info(spec)).to(accelerator.device)
    ema = ema_model(model, tc.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(tc.warmup_steps))
    if main:  # after every check of the config and the data, before the first read or write of the folder
        stack.enter_context(lock_run_dir(run_dir))
    start_step, elapsed_before = 0, 0.0
    if resume and state_file.exists():
        state = load_state(run_dir)
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_cpu"])
            if torch.cuda.is_available() and "rng_cuda" in state:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            first = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{state_file} does not match this config ({first}); resume with the run's own "
                                  "config.yaml") from None
        start_step = int(state["step"])
        elapsed_before = float(state.get("elapsed", 0.0))
    elif resume and main:
        tqdm.write(f"--resume: no checkpoint in {run_dir} yet, starting from step 0")
    ema.to(accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    if tc.compile:
        raw_model.network.compile()

    logger = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)  # left by a run killed while writing a file
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        logger = MetricsLogger(run_dir / "metrics.jsonl", tensorboard_dir=run_dir / "tb" if tc.tensorboard else None)
        logger.truncate_after(start_step)

    saved_step = start_step if resume and state_file.exists() else None  # the last checkpoint on disk

    def checkpoint(step: int, elapsed: float) -> None:
        nonlocal saved_step
        accelerator.wait_for_everyone()
        saved_step = step
        if not main:
            return
        save_pretrained(ema.module, run_dir, extra={"step": step})
        state = {"step": step, "elapsed": elapsed, "model": raw_model.state_dict(), "ema": ema.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        save_state(run_dir, state)

    indices = batch_indices(len(dataset), tc.batch_size, accelerator.num_processes, accelerator.process_index,
                            tc.seed, start_step)
    num_labels = raw_model.num_labels
    bar = tqdm(total=tc.steps, initial=start_step, disable=not (progress and main), desc=cfg.name,
               dynamic_ncols=True)
    step, last_loss, bad = start_step, float("nan"), 0
    t0 = time.perf_counter()
    window_t, window_n = time.perf_counter(), 0
    interrupted = False
    with _Interrupt() as stop, bar:  # the bar is closed (and its line ended) whatever stops the loop
        while step < tc.steps:
            items = [dataset[i] for i in next(indices)]
            x = torch.stack([it[0] for it in items]).to(accelerator.device)
            cond = None
            if num_labels is not None:
                cond = torch.stack([torch.as_tensor(it[1]) for it in items]).long().to(accelerator.device)
                drop = torch.rand(cond.shape, device=cond.device) < cfg.model.label_dropout
                cond = torch.where(drop, torch.full_like(cond, num_labels), cond)
            with accelerator.autocast():
                per_example = model(x, cond=cond)  # forward through the (possibly DDP-wrapped) module
            dims = x[0].numel()
            loss = per_example.mean() / dims  # nats per dimension: a scale-free objective for the optimizer
            if not torch.isfinite(loss):
                bad += 1
                if saved_step is None:
                    msg = (f"non-finite loss at step {step + 1}, before the first checkpoint; check the data "
                           "(values far outside [-1, 1]?) and lower train.lr")
                else:
                    msg = (f"non-finite loss at step {step + 1}; the last good checkpoint (step {saved_step}) in "
                           f"{run_dir} is kept. Lower train.lr or train.grad_clip, then rerun with --resume")
                if tc.nan_policy == "stop" or bad > tc.max_bad_steps:
                    raise TrainingError(msg)
                tqdm.write(f"skipping: {msg.split(';')[0]}")
                optimizer.zero_grad(set_to_none=True)
                continue
            bad = 0
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update_parameters(raw_model)
            step += 1
            window_n += x.shape[0] * accelerator.num_processes
            mean_loss = accelerator.reduce(per_example.detach().mean(), reduction="mean")
            last_loss = float(mean_loss)
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                now = time.perf_counter()
                ips = window_n / max(now - window_t, 1e-9)
                window_t, window_n = now, 0
                bar.set_postfix(loss=f"{last_loss:.2f}", img_s=f"{ips:.0f}")
                if logger is not None:
                    logger.log({"step": step, "loss": last_loss, "loss_per_dim": last_loss / dims,
                                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                                "lr": scheduler.get_last_lr()[0], "images_per_s": ips,
                                "elapsed_s": elapsed_before + now - t0, "world_size": accelerator.num_processes})
            if main and tc.sample_every and step % tc.sample_every == 0:
                _save_samples(ema.module, spec, run_dir / "samples" / f"step_{step:07d}.png", tc)
            if step % tc.checkpoint_every == 0 or step == tc.steps or stop.requested:
                checkpoint(step, elapsed_before + time.perf_counter() - t0)
            if stop.requested:
                interrupted = True
                break
    bar.close()
    wall = time.perf_counter() - t0
    if logger is not None:
        logger.close()
    done = step - start_step
    batch = tc.batch_size * accelerator.num_processes
    result = TrainResult(run_dir=run_dir, step=step, final_loss=last_loss,
                         images_per_second=done * batch / wall if wall > 0 else math.nan,
                         wall_seconds=elapsed_before + wall, interrupted=interrupted)
    if interrupted and main:
        tqdm.write(f"stopped at step {step}; continue with: bfn train {run_dir / 'config.yaml'} --out {run_dir} "
                   "--resume")
    return result


def _save_samples(model: nn.Module, spec: Any, path: Path, tc: Any) -> None:
    """A grid of EMA samples with a fixed generator, so grids of successive steps are comparable; a conditional
    model draws labels 0, 1, ..., L-1, 0, 1, ... in order."""
    from bfn.viz.grid import save_sample_grid

    was_training = model.training
    model.eval()
    device = _device_of(model)
    gen = torch.Generator(device=device).manual_seed(0)
    labels = getattr(model, "num_labels", None)
    cond = torch.arange(tc.sample_n, device=device) % labels if labels else None
    with torch.no_grad():
        x = model.sample(tc.sample_n, tc.sample_steps, generator=gen, cond=cond)
    model.train(was_training)
    save_sample_grid(x, path, kind=spec.kind, num_bins=spec.num_bins, num_classes=spec.num_classes or 2)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
