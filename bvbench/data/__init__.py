"""The data registry: `dataset_info`, `build_dataset`, `data_root` and `DATASETS` for `bvbench list datasets`.

Layouts under the data root (see `data_root`):
  cifar10       cifar-10-batches-py/ (torchvision, --download), else the JPEG copy cifar10-jpeg/{train,test}/<class>/*.jpg
                (or cifar10/{train,test}/...); the official release wins when both exist
  cifar100      cifar-100-python/ (torchvision, --download)
  flowers102    flowers-102/ (torchvision, --download); train = official train+val, test = test
  tinyimagenet  tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt}
  imagenet      imagenet/{train,val}/<wnid>/*
  chaoyang      chaoyang/{train,test}.json ([{"name": "train/x.jpg", "label": 0-3}]) + the images they name
  digits        scikit-learn's bundled load_digits (stratified 80/20 split)
  fake          synthetic, deterministic, learnable (for tests)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from torch.utils.data import Dataset

from bvbench.data.base import DatasetInfo, FileSource, ImageDataset, ImageSource, stratified_subset
from bvbench.data.datasets import DATASETS, static_info

if TYPE_CHECKING:  # the transforms import torchvision (seconds): only build_dataset needs them
    from bvbench.data.transforms import AugmentConfig

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "build_dataset",
    "data_root",
    "dataset_info",
    "stratified_subset",
]



class DataConfig(Protocol):
    """What `build_dataset` reads from a data configuration (any object with these attributes, e.g. the recipe
    schema's `DataConfig`; data/ never imports the schema)."""

    name: str
    img_size: int | None
    train_subset: int | None
    test_subset: int | None


ENV_VAR = "BVBENCH_DATA"
SMALL_IMAGES = 64  # native sizes up to this are decoded into one array when they fit (`data.decoded`)
CACHE_BYTES = 64 * 2**20
"""Splits whose transformed tensors fit in this many bytes and do not change between epochs are kept in memory."""


def data_root(cli_dir: str | Path | None = None) -> Path:
    """`--data-dir` if given, else `$BVBENCH_DATA`, else `~/.cache/bvbench`."""
    if cli_dir is not None and str(cli_dir) != "":
        return Path(cli_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bvbench"


def dataset_info(name: str) -> DatasetInfo:
    """The static info of a registered data set (no disk access); unknown names raise with suggestions."""
    return static_info(name)


def _decoded(source: ImageSource, indices: np.ndarray | None, name: str, split: str, info: DatasetInfo,
             root: Path) -> tuple[ImageSource, np.ndarray | None]:
    """A small-image FileSource as one decoded uint8 array (then all its items, in order), else unchanged."""
    if not isinstance(source, FileSource) or info.img_size > SMALL_IMAGES:
        return source, indices
    import torch

    from bvbench.data.decoded import decoded_source

    arrays = decoded_source(source, indices, name, split, info.img_size, root, threads=torch.get_num_threads())
    return (source, indices) if arrays is None else (arrays, None)


def build_dataset(
    cfg: DataConfig,
    root: Path,
    split: Literal["train", "test"],
    *,
    download: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    decode: bool = True,
) -> tuple[Dataset, DatasetInfo]:
    """The split as `(normalised float tensor [3, S, S], int label)` items and the info of what was read.

    S is `cfg.img_size` or the native size. Train transforms apply only for split "train" with `augment` given.
    `cfg.train_subset`/`cfg.test_subset` keep a class-stratified subset, the same for the same `seed`.
    With `decode`, a small split read from files is decoded once into a uint8 array (`data.decoded`; the same
    pixels, so the same items). Raises DataMissingError (one line: data set, expected path, how to get it) when
    the data is not there.
    """
    from bvbench.data.transforms import eval_transform, train_transform

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    spec = DATASETS.get(cfg.name)
    info = static_info(cfg.name)
    source = spec.load(Path(root).expanduser(), split, download, info)
    size = cfg.img_size or info.img_size
    if split == "train" and augment is not None:
        transform = train_transform(info, size, augment)
    else:
        transform = eval_transform(info, size)
    random = split == "train" and augment is not None and augment.random
    n = cfg.train_subset if split == "train" else cfg.test_subset
    indices = stratified_subset(source.targets, n, seed) if n is not None else None
    count = len(source.targets) if indices is None else len(indices)
    if decode:
        source, indices = _decoded(source, indices, cfg.name, split, info, Path(root))
    # A deterministic transform of a small split gives the same tensor every epoch: keep it (digits, fake).
    cache = not random and count * 3 * size * size * 4 <= CACHE_BYTES
    return ImageDataset(source, transform, info, indices, cache=cache), info
