"""A content fingerprint of the data copy a row trains on: which copy (its display name) and a hash of both
splits' file lists (relative path, size, label) or, for data held in memory, of its bytes and labels."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from bvbench.data.base import ArraySource, FileSource, ImageSource
from bvbench.data.datasets import DATASETS, static_info


def source_hash(src: ImageSource) -> str:
    """sha256 over the split: file count and (path relative to the split folder, size, label) per file, or
    the image bytes and labels of an in-memory split."""
    h = hashlib.sha256()
    if isinstance(src, FileSource):
        paths = src.paths
        base = os.path.commonpath([paths[0], paths[-1]]) if paths else ""
        h.update(f"files {len(paths)}\n".encode())
        for p, label in zip(paths, src.targets.tolist(), strict=True):
            rel = os.path.relpath(p, base) if p.startswith(base) else p
            h.update(f"{rel}\t{os.stat(p).st_size}\t{label}\n".encode())
    elif isinstance(src, ArraySource):
        images = np.ascontiguousarray(src.images)
        h.update(f"array {images.shape} {images.dtype}\n".encode())
        h.update(memoryview(images).cast("B"))
        h.update(np.ascontiguousarray(src.targets, dtype=np.int64).tobytes())
    else:  # a source type without a known layout: its length and class only
        h.update(f"{type(src).__name__} {len(src)}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def _fingerprint(name: str, root: str, download: bool) -> tuple[str, str, int]:
    spec = DATASETS.get(name)
    parts, display, files = [], "", 0
    for split in ("train", "test"):
        info = static_info(name)
        src = spec.load(Path(root), split, download, info)
        parts.append(f"{split} {source_hash(src)}")
        display, files = info.display, files + len(src)
    return display, hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16], files


def data_fingerprint(name: str, root: Path, download: bool = False) -> dict[str, str | int]:
    """{copy: display name, fingerprint: 16 hex digits, files: train + test count} of data set `name` under
    `root` (computed once per process; a JPEG copy of CIFAR-10 costs one stat per file, about 0.5 s)."""
    display, fp, files = _fingerprint(name, str(Path(root).expanduser().resolve()), download)
    return {"copy": display, "fingerprint": fp, "files": files}


__all__ = ["data_fingerprint", "source_hash"]
