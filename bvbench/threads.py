"""CPU thread settings that fit the machine; imports no torch so the CLI can set OpenMP env before torch loads."""

from __future__ import annotations

import os
import sys
from typing import Any

from bvbench.errors import BvbenchError


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def prepare_env() -> None:
    """Before torch is imported: idle OpenMP threads sleep instead of spinning (torch reads this at import)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def resolve_threads(threads: int | None, workers: int = 0) -> int:
    """`threads`, else $BVBENCH_THREADS, else this process's share of the usable cores (divided among the
    processes torchrun starts on this node) minus its loader workers: threads + workers <= cores, at least 1."""
    raw = threads if threads is not None else os.environ.get("BVBENCH_THREADS")
    if raw is None:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return max(1, usable_cores() // local - max(0, workers))
    try:
        n = int(raw)
    except ValueError:
        raise BvbenchError(f"BVBENCH_THREADS must be a whole number, got {raw!r}") from None
    if n < 1:
        raise BvbenchError(f"thread count must be at least 1, got {n}")
    return n


def apply_threads(threads: int | None, workers: int = 0) -> int:
    """Set torch's intra-op thread count; returns it."""
    import torch  # here, not at module top: this module runs before torch is imported (see prepare_env)

    n = resolve_threads(threads, workers)
    torch.set_num_threads(n)
    return n


def thread_info(workers: int | None = None) -> dict[str, Any]:
    """What env.json records about threads (and the loader workers beside them)."""
    torch = sys.modules.get("torch")
    return {"threads": torch.get_num_threads() if torch is not None else None, "usable_cores": usable_cores(),
            "loader_workers": workers, "bvbench_threads": os.environ.get("BVBENCH_THREADS"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
