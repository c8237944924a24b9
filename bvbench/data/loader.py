"""DataLoader helpers: seeded, signal-quiet workers that die with their parent; the test-set loader."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a worker from torch's per-worker seed (itself drawn from the loader's generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    _quiet_worker(worker_id)


def _quiet_worker(worker_id: int) -> None:
    """Ctrl-C and batch-system preemption (Slurm) signal the whole process group. The main process turns the
    signal into a checkpoint at the next step boundary and then shuts its workers down itself; a worker killed
    by the signal first would instead make the DataLoader raise in the middle of a step. So a worker ignores
    SIGINT and a SIGTERM from anyone but its parent, exits on its parent's SIGTERM (`terminate()`, which
    multiprocessing also sends at exit) and is killed when its parent dies (Linux). Evaluation workers use this
    alone (nothing random to seed)."""
    parent = os.getppid()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # Slurm's preemption signal: the main process checkpoints
    if not hasattr(signal, "sigwaitinfo"):  # no sender information (macOS, Windows): ignore as before
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(0)
    # Threads torch started before this hook do not block SIGTERM, so a group signal may land on one of them:
    # a Python-level handler keeps it from killing the worker (the main thread runs it and drops the signal).
    signal.signal(signal.SIGTERM, _drop_signal)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # otherwise delivered to the waiting thread
    threading.Thread(target=_wait_for_parent_sigterm, args=(parent,), daemon=True, name="bvbench-sigterm").start()


def _drop_signal(signum: int, frame: object) -> None:
    """A SIGTERM whose sender is unknown (it reached a thread that does not block it) is dropped."""


def _wait_for_parent_sigterm(parent: int) -> None:
    """Exit 0 on a SIGTERM sent by the parent (as torch's own worker handler does, so no SIGCHLD error follows);
    a SIGTERM from anyone else (a signal to the process group) is dropped."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(0)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel kills this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the parent's shutdown still stops the worker
        pass


@contextlib.contextmanager
def batches(loader: Iterable[T]) -> Iterator[Iterator[T]]:
    """Iterate a loader and shut its worker processes down however the loop ends (an exception, a signal):
    otherwise the live iterator, held by the traceback, keeps them running until interpreter exit."""
    it = iter(loader)
    try:
        yield it
    except BaseException:
        shutdown_workers(it)
        if getattr(loader, "_iterator", None) is it:  # a persistent loader builds fresh workers next time
            loader._iterator = None  # type: ignore[attr-defined]
        raise
    if not getattr(loader, "persistent_workers", False):  # persistent workers serve the next pass
        shutdown_workers(it)


def shutdown_workers(it: object) -> None:
    """Stop the worker processes of a DataLoader iterator now (a no-op for other iterators and None)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """A test-set loader in the dataset's order. Its workers ignore SIGINT/SIGTERM like the training workers:
    a signal to the process group during the per-epoch evaluation must reach the main process only."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      worker_init_fn=_quiet_worker if num_workers else None, persistent_workers=num_workers > 0)

