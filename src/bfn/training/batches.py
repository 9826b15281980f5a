"""Batches for training: a resumable batch sampler feeding a standard `DataLoader`, so that `data.num_workers`
loads in worker processes and a resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bfn.errors import ConfigError


class ResumableBatchSampler(Sampler[list[int]]):
    """Index lists for steps start_step, start_step + 1, ... (endless): a fresh permutation each epoch, seeded by
    (seed, epoch), so the batch of a step depends only on the seed and the step; rank r of `world` processes takes
    its slice of the global batch. Incomplete last batches of an epoch are dropped (as the official code does)."""

    def __init__(self, n_items: int, batch_size: int, *, seed: int, start_step: int = 0, world: int = 1,
                 rank: int = 0) -> None:
        global_batch = batch_size * world
        if n_items < global_batch:
            raise ConfigError(f"the dataset has {n_items} examples, fewer than one global batch of {global_batch}; "
                              "lower train.batch_size")
        self.n_items, self.batch_size, self.global_batch = n_items, batch_size, global_batch
        self.seed, self.start_step, self.rank = seed, start_step, rank

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n_items // self.global_batch
        step = self.start_step
        while True:
            epoch, pos = divmod(step, per_epoch)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n_items, generator=gen)
            while pos < per_epoch:
                chunk = perm[pos * self.global_batch:(pos + 1) * self.global_batch]
                yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
                pos += 1
                step += 1


def _collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, label) items -> (x [B, *S], labels [B] int64)."""
    x = torch.stack([torch.as_tensor(it[0]) for it in items])
    labels = torch.stack([torch.as_tensor(it[1]) for it in items]).long()
    return x, labels


def training_batches(dataset: Dataset, batch_size: int, *, seed: int, start_step: int, world: int = 1,
                     rank: int = 0, num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, labels) batches from step `start_step` on. With num_workers > 0 the items are read in worker
    processes; the batches stay those of the seed, but random draws made inside the dataset (dynamic
    binarization) then come from the workers' own generators, so a resumed run draws them afresh."""
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, start_step=start_step,  # type: ignore[arg-type]
                                    world=world, rank=rank)
    # a private generator: the loader's base seed must not consume the global RNG, whose state resume restores
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate,
                        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    return iter(loader)
