"""Bundled and synthetic data (digits, fake), stratified subsets and the train/test transforms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from bvbench.data import build_dataset, stratified_subset
from bvbench.data.datasets import fake_arrays
from bvbench.errors import BvbenchError
from bvbench.recipes import AugmentConfig, DataConfig

NOWHERE = Path("/nonexistent-bvbench-root")  # digits and fake never touch the disk


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_and_stratification() -> None:
    from sklearn.datasets import load_digits

    train, info = build_dataset(DataConfig(name="digits"), NOWHERE, "train")
    test, _ = build_dataset(DataConfig(name="digits"), NOWHERE, "test")
    assert (len(train), len(test)) == (1437, 360)
    assert info.num_classes == 10 and info.img_size == 8 and info.source.startswith("sklearn")
    total = Counter(load_digits().target.tolist())
    tr, te = Counter(train.targets), Counter(test.targets)
    for c in range(10):
        assert tr[c] + te[c] == total[c]
        assert abs(te[c] - 0.2 * total[c]) <= 1  # stratified
    again, _ = build_dataset(DataConfig(name="digits"), NOWHERE, "test")
    assert again.targets == test.targets  # fixed split


def test_digits_pixels() -> None:
    ds, info = build_dataset(DataConfig(name="digits"), NOWHERE, "train")
    raw = ds.source.images
    assert raw.dtype == np.uint8 and raw.shape[1:] == (8, 8, 3) and raw.max() == 255 and raw.min() == 0
    assert (raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all()
    x, _ = stack(ds)
    assert x.shape == (1437, 3, 8, 8)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05  # the info's mean/std fit the data
    big, _ = build_dataset(DataConfig(name="digits", img_size=32), NOWHERE, "test")
    assert big[0][0].shape == (3, 32, 32)


# ---------------------------------------------------------------- fake


def test_fake_is_deterministic() -> None:
    a, info = build_dataset(DataConfig(name="fake"), NOWHERE, "train")
    b, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "train")
    xa, ya = stack(a)
    xb, yb = stack(b)
    assert xa.shape == (512, 3, 32, 32) and torch.equal(xa, xb) and torch.equal(ya, yb)
    test, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "test")
    assert len(test) == 128 and set(test.targets) == set(range(10))
    assert info.num_classes == 10 and info.display == "Fake (synthetic)"
    assert not np.array_equal(fake_arrays("train")[0][:128], fake_arrays("test")[0])
    assert abs(xa.mean().item()) < 0.2 and abs(xa.std().item() - 1) < 0.2


def test_fake_img_size_override() -> None:
    ds, info = build_dataset(DataConfig(name="fake", img_size=48), NOWHERE, "test")
    assert ds[0][0].shape == (3, 48, 48) and info.img_size == 32


def test_fake_classes_are_separable() -> None:
    xtr, ytr = fake_arrays("train")
    xte, yte = fake_arrays("test")
    xtr = xtr.reshape(len(xtr), -1).astype(np.float32)
    xte = xte.reshape(len(xte), -1).astype(np.float32)
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(10)])
    pred = ((xte[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yte).mean() > 0.9  # chance is 0.1


def test_fake_loss_decreases() -> None:
    ds, _ = build_dataset(DataConfig(name="fake", img_size=16), NOWHERE, "train")
    x, y = stack(ds)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- subsets


def test_stratified_subset_keeps_class_shares() -> None:
    targets = [0] * 60 + [1] * 30 + [2] * 10
    idx = stratified_subset(targets, 10, seed=0)
    assert Counter(np.asarray(targets)[idx].tolist()) == {0: 6, 1: 3, 2: 1}
    assert list(idx) == sorted(set(idx.tolist()))
    assert np.array_equal(idx, stratified_subset(targets, 10, seed=0))
    assert not np.array_equal(stratified_subset(targets, 50, seed=0), stratified_subset(targets, 50, seed=1))
    assert len(stratified_subset(targets, 1000)) == 100
    assert len(stratified_subset(targets, 7, seed=3)) == 7


def test_subset_through_build_dataset() -> None:
    cfg = DataConfig(name="fake", train_subset=100, test_subset=20)
    a, _ = build_dataset(cfg, NOWHERE, "train", seed=5)
    b, _ = build_dataset(cfg, NOWHERE, "train", seed=5)
    c, _ = build_dataset(cfg, NOWHERE, "train", seed=6)
    assert len(a) == 100 and Counter(a.targets) == dict.fromkeys(range(10), 10)
    assert np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)
    assert torch.equal(a[7][0], b[7][0])
    test, _ = build_dataset(cfg, NOWHERE, "test", seed=5)
    assert len(test) == 20 and Counter(test.targets) == dict.fromkeys(range(10), 2)
    full = fake_arrays("train")[1]
    assert [int(full[i]) for i in a.indices] == a.targets


# ---------------------------------------------------------------- transforms


def test_train_augment_pipeline() -> None:
    aug = AugmentConfig(randaugment="rand-m9-mstd0.5-inc1", color_jitter=0.4, random_erasing=0.5)
    ds, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "train", augment=aug)
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "RandAugment", "ColorJitter", "ToTensor", "Normalize",
                     "RandomErasing"]
    assert ds.transform.transforms[0].padding == 4
    torch.manual_seed(0)
    draws = [ds[0][0] for _ in range(4)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # random
    big, _ = build_dataset(DataConfig(name="fake", img_size=96), NOWHERE, "train", augment=AugmentConfig())
    assert [type(t) for t in big.transform.transforms[:2]] == [T.RandomResizedCrop, T.RandomHorizontalFlip]
    assert big[0][0].shape == (3, 96, 96)
    plain, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "train",
                             augment=AugmentConfig(hflip=False, random_crop=False))
    assert [type(t) for t in plain.transform.transforms] == [T.ToTensor, T.Normalize]


def test_test_split_ignores_augment_and_large_images_are_center_cropped() -> None:
    a, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "test", augment=AugmentConfig(randaugment="rand-m9"))
    b, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "test")
    assert torch.equal(a[3][0], b[3][0])
    no_aug, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "train")  # train without augment: test transform
    assert torch.equal(no_aug[0][0], no_aug[0][0])
    from bvbench.data.datasets import static_info
    from bvbench.data.transforms import eval_transform

    ops = eval_transform(static_info("imagenet"), 224).transforms
    assert isinstance(ops[0], T.Resize) and ops[0].size == 256 and isinstance(ops[1], T.CenterCrop)


def test_bad_randaugment_string() -> None:
    with pytest.raises(BvbenchError, match="RandAugment"):
        build_dataset(DataConfig(name="fake"), NOWHERE, "train", augment=AugmentConfig(randaugment="bogus"))


def test_bad_split() -> None:
    with pytest.raises(ValueError):
        build_dataset(DataConfig(name="fake"), NOWHERE, "val")  # type: ignore[arg-type]


def test_randaugment_posterize_at_full_magnitude_keeps_an_image() -> None:
    """timm's increasing Posterize at magnitude 10 asks Pillow for 0 bits (a ValueError in Pillow >= 11);
    bvbench keeps 1 bit, so a noisy magnitude draw of 10 cannot kill a training run."""
    import random

    from PIL import Image

    aug = AugmentConfig(randaugment="rand-m10-n1-inc1")
    ds, _ = build_dataset(DataConfig(name="fake"), NOWHERE, "train", augment=aug)
    ra = ds.transform.transforms[2]
    post = next(op for op in ra.ops if op.name == "PosterizeIncreasing")
    post.prob = 1.0
    img = Image.new("RGB", (32, 32), (200, 120, 40))
    random.seed(0)
    out = post(img)
    assert out.getpixel((0, 0)) == (128, 0, 0)  # 1 most significant bit kept per channel
