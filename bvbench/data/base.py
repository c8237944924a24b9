"""Data set building blocks: `DatasetInfo`, image sources (arrays or files) and the transformed data set."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from bvbench.errors import CorruptDataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class DatasetInfo:
    """What a data set is: the names tables print, its classes, native size and normalisation."""

    name: str
    display: str
    num_classes: int
    img_size: int
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""

    def copy(self) -> DatasetInfo:
        """A deep copy, so callers can change it without touching the registry."""
        return copy.deepcopy(self)


class ImageSource:
    """Random access to `(PIL RGB image, label)` pairs without any transform."""

    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, i: int) -> Image.Image:
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images held in memory as a uint8 array `[N, H, W, 3]` (CIFAR pickles, digits, fake)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int]) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.images) != len(self.targets):
            raise ValueError("images and targets differ in length")

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i], mode="RGB")


class FileSource(ImageSource):
    """Images read from files on each access (ImageFolder-like layouts)."""

    def __init__(self, paths: Sequence[str | Path], targets: Sequence[int]) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.paths) != len(self.targets):
            raise ValueError("paths and targets differ in length")

    def image(self, i: int) -> Image.Image:
        try:
            with Image.open(self.paths[i]) as im:
                return im.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
            reason = "not an image file PIL can read" if isinstance(e, UnidentifiedImageError) else \
                (str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise CorruptDataError(f"corrupt or truncated image {self.paths[i]} ({reason}); delete or replace "
                                   "it") from None


class ImageDataset(Dataset):
    """`(float tensor [3, S, S], int label)` items: a source, the indices used from it and a transform."""

    def __init__(
        self,
        source: ImageSource,
        transform: Callable[[Image.Image], torch.Tensor],
        info: DatasetInfo,
        indices: Sequence[int] | np.ndarray | None = None,
        cache: bool = False,
    ) -> None:
        self.source = source
        self.transform = transform
        self.info = info
        self.indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        # cache=True: the transform is deterministic, so each item is computed once (per process)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    @property
    def targets(self) -> list[int]:
        """Labels of the items, in item order."""
        return self.source.targets[self.indices].tolist()

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        if self._cache is None:
            return self.transform(self.source.image(j)), int(self.source.targets[j])
        x = self._cache.get(j)
        if x is None:
            x = self._cache[j] = self.transform(self.source.image(j))
        return x, int(self.source.targets[j])

    def __repr__(self) -> str:
        return f"ImageDataset({self.info.display!r}, {len(self)} images, source={self.info.source!r})"


def stratified_subset(targets: Sequence[int] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` items, each class keeping its share of the data (largest remainder), seeded."""
    t = np.asarray(targets, dtype=np.int64)
    if n >= len(t):
        return np.arange(len(t), dtype=np.int64)
    classes, counts = np.unique(t, return_counts=True)
    exact = counts * n / len(t)
    quota = np.floor(exact).astype(np.int64)
    short = n - int(quota.sum())
    if short > 0:  # the classes with the largest fractional parts (then the larger, then the first) get one more
        order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - quota[k]), -counts[k], k))
        for k in order[:short]:
            quota[k] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(t == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
