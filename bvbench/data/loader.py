"""Deterministic DataLoaders: seeded shuffling, seeded workers, optional DistributedSampler."""

from __future__ import annotations

import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a worker from torch's per-worker seed (itself drawn from the loader's generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    _quiet_worker(worker_id)


def _quiet_worker(worker_id: int) -> None:
    """Ctrl-C and batch-system preemption (Slurm) signal the whole process group. The main process turns the
    signal into a checkpoint at the next step boundary and then shuts its workers down itself; a worker killed
    by the signal first would instead make the DataLoader raise in the middle of a step. Evaluation workers
    use this alone (nothing random to seed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """A test-set loader in the dataset's order. Its workers ignore SIGINT/SIGTERM like the training workers:
    a signal to the process group during the per-epoch evaluation must reach the main process only."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=_quiet_worker if num_workers else None, persistent_workers=num_workers > 0)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    seed: int,
    distributed: bool = False,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader whose batch order and worker randomness depend only on `seed` (and the epoch).

    Train loaders shuffle and, by default, drop the last incomplete batch when there is more than one batch.
    With `distributed`, a seeded DistributedSampler splits the data; call `loader.sampler.set_epoch(epoch)`.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last is None:
        drop_last = train and n > batch_size
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0,
    )
