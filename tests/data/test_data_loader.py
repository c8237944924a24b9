"""Loader helpers: seeded workers, the test-set loader, signal-quiet workers, cached deterministic splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from bvbench.data import build_dataset
from bvbench.data.loader import eval_loader, seed_worker
from bvbench.recipes import AugmentConfig, DataConfig

NOWHERE = Path("/nonexistent-bvbench-root")


def labels(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


@pytest.fixture(scope="module")
def fake_train():
    return build_dataset(DataConfig(name="fake"), NOWHERE, "train")[0]


def test_eval_loader_keeps_order_and_last_batch(fake_train) -> None:
    dl = eval_loader(fake_train, 100, 0)
    assert labels(dl) == fake_train.targets and len(dl) == 6 and not dl.drop_last
    assert not dl.persistent_workers


def test_workers_are_seeded() -> None:
    """seed_worker (the training loader's worker init) seeds numpy and `random` from the loader's generator."""
    aug = AugmentConfig(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5)
    ds, _ = build_dataset(DataConfig(name="fake", train_subset=64), NOWHERE, "train", augment=aug)

    def batches(seed: int) -> list[torch.Tensor]:
        g = torch.Generator()
        g.manual_seed(seed)
        dl = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, generator=g, worker_init_fn=seed_worker,
                        persistent_workers=True)
        return [x for x, _ in dl]

    a, b, c = batches(7), batches(7), batches(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # augmentations included
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_eval_loader_workers_leave_termination_signals_to_the_main_process() -> None:
    """Ctrl-C / preemption signal the whole process group, also during the per-epoch evaluation: its workers
    must keep serving so that the main process can stop at a step boundary and save."""
    import signal
    import subprocess

    from torch.utils.data import TensorDataset


    loader = eval_loader(TensorDataset(torch.arange(64.0).view(64, 1)), 8, 2)
    it = iter(loader)
    first = [next(it), next(it)]  # one batch from each worker: both ran their init
    for w in it._workers:  # type: ignore[attr-defined]  # sent by another process, as a group signal is
        subprocess.run(["kill", f"-{int(signal.SIGTERM)}", str(w.pid)], check=True)
    batches = first + list(it)
    assert torch.equal(torch.cat([b[0] for b in batches]).view(-1), torch.arange(64.0))


def test_small_deterministic_splits_are_kept_in_memory_with_the_same_values() -> None:
    """digits without random augmentation: each item is transformed once; a random transform never is cached."""
    from bvbench.data import data_root

    cfg = DataConfig(name="digits", img_size=16, num_workers=0)
    still = AugmentConfig(hflip=False, random_crop=False)
    ds, _ = build_dataset(cfg, data_root(None), "train", augment=still, seed=0)
    plain = [ds[i][0].clone() for i in range(5)]
    assert ds._cache is not None and len(ds._cache) == 5
    assert all(torch.equal(ds[i][0], plain[i]) for i in range(5)) and len(ds._cache) == 5
    ds.transform = None  # served from memory: the transform is not called again
    assert torch.equal(ds[3][0], plain[3])
    moving, _ = build_dataset(cfg, data_root(None), "train", augment=AugmentConfig(hflip=True), seed=0)
    assert moving._cache is None
    test, _ = build_dataset(cfg, data_root(None), "test")
    assert test._cache is not None
