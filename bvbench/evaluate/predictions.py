"""Per-image predictions of a finished run (`predictions.npz`): which test image, its label, the predicted top-1
and top-5 classes. Claims compare two rows on the same images with them (bvbench.report.claims)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bvbench.errors import BvbenchError
from bvbench.results import atomic_write_bytes

FILENAME = "predictions.npz"
TOPK = 5


@dataclass
class Predictions:
    """One run's test-set predictions, one entry per image, in the loader's order."""

    index: np.ndarray  # int64 [N]: the image's index in the data set's test split (before any subset)
    label: np.ndarray  # int [N]: the true class
    top1: np.ndarray  # int [N]: the predicted class
    top5: np.ndarray | None = None  # int [N, 5]: the 5 highest classes, best first (None: fewer than 5 classes)

    @property
    def correct(self) -> np.ndarray:
        """bool [N]: top-1 is the label."""
        return self.top1 == self.label

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.label) else float("nan")


def _class_dtype(num_classes: int) -> type[np.signedinteger]:
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def from_logits(logits: torch.Tensor, targets: torch.Tensor, index: np.ndarray | None = None) -> Predictions:
    """Predictions of `logits` [N, C] for `targets` [N]; `index` defaults to 0 ... N-1."""
    n, c = logits.shape
    dt = _class_dtype(c)
    idx = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
    if len(idx) != n:
        raise ValueError(f"{len(idx)} image indices for {n} predictions")
    top5 = logits.topk(TOPK, dim=1).indices.numpy().astype(dt) if c >= TOPK else None
    return Predictions(idx, targets.numpy().astype(dt), logits.argmax(dim=1).numpy().astype(dt), top5)


def split_indices(dataset: object) -> np.ndarray | None:
    """The test-split index of each item of a bvbench data set (its `indices`), None for other data sets."""
    idx = getattr(dataset, "indices", None)
    return None if idx is None else np.asarray(idx, dtype=np.int64)


def write_predictions(path: Path, preds: Predictions) -> None:
    """np.savez_compressed into `path`, atomically (temporary file, fsync, rename)."""
    arrays = {"index": preds.index, "label": preds.label, "top1": preds.top1}
    if preds.top5 is not None:
        arrays["top5"] = preds.top5
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_predictions(path: Path) -> Predictions:
    """The record `write_predictions` wrote (allow_pickle=False); a BvbenchError when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise BvbenchError(f"{path} does not exist (runs before per-image predictions: rerun the row)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BvbenchError(f"{path} is not a bvbench predictions file ({type(e).__name__})") from None
    missing = {"index", "label", "top1"} - set(arrays)
    n = len(arrays.get("label", ()))
    if missing or any(a.ndim < 1 or len(a) != n or a.dtype.kind not in "iu" for a in arrays.values()):
        raise BvbenchError(f"{path} is not a bvbench predictions file (needs integer index, label, top1 of one "
                           f"length{'; missing ' + ', '.join(sorted(missing)) if missing else ''})")
    return Predictions(arrays["index"].astype(np.int64), arrays["label"], arrays["top1"], arrays.get("top5"))
