"""Classification metrics: top-k, macro precision / recall / F1 (scikit-learn), confusion matrix."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from bvbench.data.loader import batches
from bvbench.results import pause_for_tests


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of a whole loader (model in eval mode; DeiT heads are averaged by timm)."""
    pause_for_tests("eval")
    was_training = model.training
    model.eval()
    logits, targets = [], []
    with batches(loader) as it:  # its workers stop however the loop ends
        for x, y in it:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                out = model(x)
            if isinstance(out, tuple):  # a distilled model left in distilled-training mode
                out = (out[0] + out[1]) / 2
            logits.append(out.float().cpu())
            targets.append(torch.as_tensor(y))
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the k highest logits, for each k <= number of classes."""
    out = {}
    n_classes = logits.shape[1]
    for k in ks:
        if k > n_classes:
            continue
        top = logits.topk(k, dim=1).indices
        out[f"top{k}"] = (top == targets[:, None]).any(dim=1).float().mean().item()
    return out


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, num_classes: int, topk: Iterable[int] = (1, 5)
) -> tuple[dict[str, float], np.ndarray]:
    """top-k, macro precision/recall/F1 (zero_division=0) and the confusion matrix (rows = true class)."""
    preds = logits.argmax(dim=1).numpy()
    y = targets.numpy()
    cm = confusion_matrix(y, preds, num_classes)
    p, r, f = macro_prf(cm)
    metrics = {**topk_accuracy(logits, targets, topk), "precision": p, "recall": r, "f1": f}
    metrics["test_loss"] = float(nn.functional.cross_entropy(logits, targets).item())
    return metrics, cm


def confusion_matrix(y: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 counts [true, predicted] over the labels 0..num_classes-1 (others ignored), as scikit-learn's."""
    y, preds = np.asarray(y, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    keep = (y >= 0) & (y < num_classes) & (preds >= 0) & (preds < num_classes)
    flat = y[keep] * num_classes + preds[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64, 0 where den is 0 (scikit-learn's zero_division=0)."""
    den = den.astype(np.float64)
    zero = den == 0
    den[zero] = 1
    out = num.astype(np.float64) / den
    out[zero] = 0.0
    return out


def macro_prf(cm: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall and F1 with zero_division=0, in scikit-learn's operations (so bit-identical to
    `precision_recall_fscore_support(..., average="macro")`, without importing scikit-learn: ~2 s)."""
    tp = np.diag(cm).astype(np.int64)
    pred, true = cm.sum(axis=0), cm.sum(axis=1)
    precision, recall = _divide(tp, pred), _divide(tp, true)
    f1 = _divide(2.0 * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    return float(np.mean(precision)), float(np.mean(recall)), float(np.mean(f1))


def write_confusion_csv(cm: np.ndarray, classes: list[str], path: Path) -> None:
    """Rows are the true class, columns the predicted class, both labelled."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *classes])
        for name, row in zip(classes, cm, strict=True):
            w.writerow([name, *row.tolist()])


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """A labelled heat map (row-normalised colours, raw counts written in the cells when legible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
