"""Small JPEG splits decoded once into one uint8 array: the same batches, bit for bit, as reading the files,
and an on-disk copy keyed by the split's content."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bvbench.data import build_dataset
from bvbench.data import decoded as dec
from bvbench.data.base import ArraySource, FileSource
from bvbench.data.datasets import CIFAR10_CLASSES
from bvbench.data.loader import seed_worker
from bvbench.recipes import AugmentConfig, DataConfig


def _noisy_jpegs(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            d = root / "cifar10-jpeg" / split / c
            d.mkdir(parents=True)
            for k in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{k}.jpg", quality=90)
    return root / "cifar10-jpeg"


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    dec._MEMORY.clear()


def _batches(ds: torch.utils.data.Dataset, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(ds, 8, shuffle=True, num_workers=workers, worker_init_fn=seed_worker,
                                         generator=torch.Generator().manual_seed(3))
    out = []
    for epoch in range(2):
        torch.manual_seed(epoch)  # the main process's draws (workers=0): the same start for both paths
        random.seed(epoch)
        np.random.seed(epoch)
        out += [(x.clone(), y.clone()) for x, y in loader]
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_decoded_batches_equal_file_batches(tmp_path: Path, workers: int) -> None:
    _noisy_jpegs(tmp_path)
    cfg = DataConfig(name="cifar10", train_subset=24, num_workers=workers)
    aug = AugmentConfig(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5, color_jitter=0.3)
    files, _ = build_dataset(cfg, tmp_path, "train", augment=aug, seed=1, decode=False)
    arrays, _ = build_dataset(cfg, tmp_path, "train", augment=aug, seed=1)
    assert isinstance(files.source, FileSource) and isinstance(arrays.source, ArraySource)
    assert arrays.targets == files.targets and len(arrays) == 24
    a, b = _batches(files, workers), _batches(arrays, workers)
    assert len(a) == len(b) == 6
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)  # exact: same pixels, same random draws
    test_f, _ = build_dataset(cfg, tmp_path, "test", decode=False)
    test_a, _ = build_dataset(cfg, tmp_path, "test")
    assert all(torch.equal(test_f[i][0], test_a[i][0]) for i in range(len(test_f)))


def test_disk_copy_is_reused_and_replaced_when_the_split_changes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base = _noisy_jpegs(tmp_path, 2)
    cfg = DataConfig(name="cifar10")
    first, _ = build_dataset(cfg, tmp_path, "train")
    folder = tmp_path / dec.CACHE_DIR
    files = sorted(folder.glob("cifar10-train-*.npy"))
    assert len(files) == 1
    dec._MEMORY.clear()
    monkeypatch.setattr(dec, "_decode", lambda *a: pytest.fail("decoded again despite the disk copy"))
    again, _ = build_dataset(cfg, tmp_path, "train")
    assert np.array_equal(np.asarray(again.source.images), first.source.images)
    monkeypatch.undo()
    dec._MEMORY.clear()
    changed = base / "train" / "cat" / "0.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed, quality=50)  # another size on disk
    new, _ = build_dataset(cfg, tmp_path, "train")
    after = sorted(folder.glob("cifar10-train-*.npy"))
    assert len(after) == 1 and after != files  # the stale copy is gone
    k = new.targets.index(CIFAR10_CLASSES.index("cat"))
    assert np.array_equal(new.source.images[k], np.asarray(Image.open(changed).convert("RGB")))


def test_odd_sizes_and_disabled_disk_cache_keep_files_or_memory(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    base = _noisy_jpegs(tmp_path, 1)
    monkeypatch.setenv(dec.ENV_VAR, "0")
    ds, _ = build_dataset(DataConfig(name="cifar10"), tmp_path, "test")
    assert isinstance(ds.source, ArraySource) and not (tmp_path / dec.CACHE_DIR).exists()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(base / "test" / "dog" / "0.jpg")
    dec._MEMORY.clear()
    odd, _ = build_dataset(DataConfig(name="cifar10"), tmp_path, "test")
    assert isinstance(odd.source, FileSource)  # not all 32x32: read from the files as before
