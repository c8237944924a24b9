"""Small image files decoded once into one uint8 array `[N, H, W, 3]`, so later epochs do not decode them again.

A split read from files (the CIFAR-10 JPEG copy, Tiny ImageNet subsets) whose images all have the data set's
native size and whose pixels fit in `DECODE_BYTES` is decoded once per process (kept in memory for later builds
of the same split) and, unless `BVBENCH_DECODE_CACHE=0`, stored as `<data root>/bvbench-cache/decoded/
<name>-<split>-<split hash>-<subset hash>.npy`. The split hash is the split's content fingerprint
(`fingerprint.source_hash`: file names, sizes, labels), so a changed copy gets a new file and the stale ones of
that split are deleted. The pixels are exactly those `FileSource.image` returns, so every transform and random
draw sees the same input and results are bit-identical to reading the files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bvbench.data.base import ArraySource, FileSource
from bvbench.errors import CorruptDataError

DECODE_BYTES = 512 * 2**20
"""Splits (or subsets) whose decoded pixels fit in this many bytes are held as one array."""
ENV_VAR = "BVBENCH_DECODE_CACHE"
CACHE_DIR = Path("bvbench-cache") / "decoded"
_MEMORY: dict[str, np.ndarray] = {}
_MEMORY_ENTRIES = 4


def _disk_enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "off", "false", "no")


def cache_key(src: FileSource, indices: np.ndarray) -> tuple[str, str]:
    """(split hash, subset hash): 16 hex digits each, from the split's content fingerprint and the indices."""
    from bvbench.data.fingerprint import source_hash

    split = source_hash(src)[:16]
    subset = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
    return split, subset


def _decode(src: FileSource, indices: np.ndarray, size: int, threads: int) -> np.ndarray | None:
    """The images at `indices` as uint8 `[n, size, size, 3]`, or None when one has another size or is corrupt."""
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)

    def one(k: int) -> bool:
        try:
            a = np.asarray(src.image(int(indices[k])))
        except CorruptDataError:  # keep reading files: the error then comes from the item, as without decoding
            return False
        if a.shape != (size, size, 3):
            return False
        out[k] = a
        return True

    with ThreadPoolExecutor(max(1, threads)) as pool:  # Pillow releases the GIL while decoding
        ok = all(pool.map(one, range(len(indices)), chunksize=256))
    return out if ok else None


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return a if a.shape == shape and a.dtype == np.uint8 else None


def _store(folder: Path, name: str, keep: str, prefix: str, images: np.ndarray) -> None:
    """Write atomically; delete this split's files of other content. A read-only data root is left alone."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, images, allow_pickle=False)
        os.replace(tmp, folder / name)
        for old in folder.glob(f"{prefix}-*.npy"):
            if not old.name.startswith(keep):
                old.unlink(missing_ok=True)
    except OSError:
        pass


def decoded_source(src: FileSource, indices: np.ndarray | None, dataset: str, split: str, size: int,
                   root: Path, threads: int = 1) -> ArraySource | None:
    """The images `src[indices]` (all when None) as an ArraySource, or None when they do not qualify (too many
    bytes, or an image that is not `size`x`size`); the caller then keeps reading the files."""
    idx = np.arange(len(src), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    shape = (len(idx), size, size, 3)
    if len(idx) == 0 or int(np.prod(shape)) > DECODE_BYTES:
        return None
    split_hash, subset_hash = cache_key(src, idx)
    prefix = f"{dataset}-{split}"
    name = f"{prefix}-{split_hash}-{subset_hash}.npy"
    images = _MEMORY.get(name)
    folder = Path(root).expanduser() / CACHE_DIR
    if images is None and _disk_enabled():
        images = _load(folder / name, shape)
    if images is None:
        images = _decode(src, idx, size, threads)
        if images is None:
            return None
        if _disk_enabled():
            _store(folder, name, f"{prefix}-{split_hash}-", prefix, images)
    if name not in _MEMORY and len(_MEMORY) >= _MEMORY_ENTRIES:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[name] = images
    return ArraySource(images, src.targets[idx])
