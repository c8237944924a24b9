"""Metrics against values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bvbench.evaluate.metrics import (
    classification_metrics,
    plot_confusion,
    topk_accuracy,
    write_confusion_csv,
)


def _logits(preds: list[int], n: int) -> torch.Tensor:
    out = torch.zeros(len(preds), n)
    out[torch.arange(len(preds)), torch.tensor(preds)] = 1.0
    return out


def test_precision_recall_f1_by_hand() -> None:
    # true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    m, cm = classification_metrics(_logits([0, 0, 1, 1, 2, 2], 3), y, 3, topk=(1,))
    # class 0: P=2/2 R=2/3 ; class 1: P=1/2 R=1/2 ; class 2: P=1/2 R=1/1
    p = (1 + 0.5 + 0.5) / 3
    r = (2 / 3 + 0.5 + 1) / 3
    f = (2 * 1 * (2 / 3) / (1 + 2 / 3) + 0.5 + 2 * 0.5 * 1 / 1.5) / 3
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(p) and m["recall"] == pytest.approx(r) and m["f1"] == pytest.approx(f)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_zero_division_is_zero() -> None:
    y = torch.tensor([0, 1, 2])
    m, _ = classification_metrics(_logits([0, 0, 0], 3), y, 3, topk=(1,))
    assert m["precision"] == pytest.approx((1 / 3) / 3)  # classes 1 and 2 never predicted -> 0


def test_topk() -> None:
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]])
    y = torch.tensor([2, 2])
    acc = topk_accuracy(logits, y, (1, 2, 5))
    assert acc == {"top1": 0.0, "top2": 0.5}  # top5 skipped: only 3 classes


def test_confusion_files(tmp_path: Path) -> None:
    cm = np.array([[3, 1], [0, 4]])
    write_confusion_csv(cm, ["cat", "dog"], tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().splitlines() == ["true\\pred,cat,dog", "cat,3,1", "dog,0,4"]
    plot_confusion(cm, ["cat", "dog"], tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
