"""Fixtures that write tiny copies of each data set's official layout into tmp_path.

Every image is a solid grey whose level encodes its label (`level(label)`), so tests can read labels back
from the pixels and check that the class order is right.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bvbench.data.datasets import CIFAR10_CLASSES


def level(label: int) -> int:
    """The grey level that encodes `label` (distinct for labels 0..9, JPEG-safe)."""
    return 20 + 22 * label


def solid(path: Path, label: int, size: tuple[int, int] = (32, 32)) -> None:
    """Write a solid-grey RGB image (format from the suffix) whose level encodes `label`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (level(label),) * 3).save(path)


def labels_from_pixels(ds, mean: tuple[float, ...], std: tuple[float, ...]) -> list[int]:
    """Decode each item's label from its (solid) pixels; an item's tensor is un-normalised first."""
    out = []
    m = np.asarray(mean)[:, None, None]
    s = np.asarray(std)[:, None, None]
    for i in range(len(ds)):
        x = ds[i][0].numpy() * s + m
        out.append(int(round((x.mean() * 255 - 20) / 22)))
    return out


@pytest.fixture
def decode_labels() -> Callable[..., list[int]]:
    """`labels_from_pixels` as a fixture (test modules do not import conftest)."""
    return labels_from_pixels


@pytest.fixture
def grey() -> Callable[[int], int]:
    """`level` as a fixture: the grey level that encodes a label."""
    return level


@pytest.fixture
def cifar_jpeg() -> Callable[[Path, int, int, str], Path]:
    """Write `<root>/<folder>/{train,test}/<class>/NNNN.jpg`, n_train and n_test images per class."""

    def make(root: Path, n_train: int = 3, n_test: int = 2, folder: str = "cifar10-jpeg") -> Path:
        for split, n in (("train", n_train), ("test", n_test)):
            for label, c in enumerate(CIFAR10_CLASSES):
                for k in range(n):
                    solid(root / folder / split / c / f"{k:04d}.jpg", label)
        return root / folder

    return make


@pytest.fixture
def cifar_pickle() -> Callable[..., Path]:
    """Write a tiny torchvision-style CIFAR pickle release (md5s will not match: tests bypass the check)."""

    def make(root: Path, hundred: bool = False, per_batch: int = 20) -> Path:
        rng = np.random.default_rng(0)
        if hundred:
            base = root / "cifar-100-python"
            files, key, names = ["train", "test"], "fine_labels", [f"c{i:02d}" for i in range(100)]
            meta = ("meta", {"fine_label_names": names})
        else:
            base = root / "cifar-10-batches-py"
            files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
            key, names = "labels", CIFAR10_CLASSES
            meta = ("batches.meta", {"label_names": names})
        base.mkdir(parents=True)
        for f in files:
            labels = [int(v) for v in rng.integers(0, len(names), per_batch)]
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            (base / f).write_bytes(pickle.dumps({"data": data, key: labels}))
        (base / meta[0]).write_bytes(pickle.dumps(meta[1]))
        return base

    return make


@pytest.fixture
def tiny_imagenet() -> Callable[[Path], tuple[Path, list[str]]]:
    """Write tiny-imagenet-200 with 3 wnids (listed unsorted), 2 train images each and 4 val images."""

    def make(root: Path) -> tuple[Path, list[str]]:
        base = root / "tiny-imagenet-200"
        wnids = ["n03000000", "n01000000", "n02000000"]
        base.mkdir(parents=True)
        (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
        order = sorted(wnids)
        for w in wnids:
            for k in range(2):
                solid(base / "train" / w / "images" / f"{w}_{k}.JPEG", order.index(w), (64, 64))
            (base / "train" / w / f"{w}_boxes.txt").write_text("")
        lines = []
        for k, w in enumerate(["n02000000", "n03000000", "n01000000", "n02000000"]):
            solid(base / "val" / "images" / f"val_{k}.JPEG", order.index(w), (64, 64))
            lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
        return base, order

    return make


@pytest.fixture
def imagenet() -> Callable[[Path], Path]:
    """Write imagenet/{train,val}/<wnid>/*.JPEG with 3 classes of non-square images."""

    def make(root: Path) -> Path:
        base = root / "imagenet"
        for label, w in enumerate(["n01440764", "n01443537", "n01484850"]):
            for k in range(3):
                solid(base / "train" / w / f"{w}_{k}.JPEG", label, (80, 60))
            solid(base / "val" / w / f"ILSVRC2012_val_{label:08d}.JPEG", label, (60, 80))
        return base

    return make


@pytest.fixture
def chaoyang() -> Callable[[Path], Path]:
    """Write chaoyang/{train,test}.json and the images they name (4 classes)."""

    def make(root: Path) -> Path:
        base = root / "chaoyang"
        for split, n in (("train", 3), ("test", 2)):
            entries = []
            for label in range(4):
                for k in range(n):
                    name = f"{split}/{label}_{k}.jpg"
                    solid(base / name, label, (40, 40))
                    entries.append({"name": name, "label": label})
            (base / f"{split}.json").write_text(json.dumps(entries))
        return base

    return make


@pytest.fixture
def flowers() -> Callable[[Path], Path]:
    """Write flowers-102/{jpg/, imagelabels.mat, setid.mat}: 12 images of 3 classes (md5s bypassed by tests)."""

    def make(root: Path) -> Path:
        from scipy.io import savemat

        base = root / "flowers-102"
        labels = np.array([1, 2, 3] * 4)  # 1-based, image ids 1..12
        for i, lab in enumerate(labels, 1):
            solid(base / "jpg" / f"image_{i:05d}.jpg", int(lab) - 1, (50, 40))
        savemat(base / "imagelabels.mat", {"labels": labels})
        savemat(base / "setid.mat", {"trnid": np.array([1, 2, 3]), "valid": np.array([4, 5, 6]),
                                     "tstid": np.array([7, 8, 9, 10, 11, 12])})
        return base

    return make
