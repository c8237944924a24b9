"""Start-up stays light: the CLI and `--help` import no torchvision / scikit-learn / timm, and the metrics
that replaced scikit-learn's are bit-identical to it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bvbench.evaluate.metrics import classification_metrics, confusion_matrix, macro_prf

HEAVY = ("torchvision", "sklearn", "timm")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("LOADED="), out.stdout[-500:]
    return [m for m in line.removeprefix("LOADED=").split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = f"import sys\nsys.argv = ['bvbench', *{argv!r}]\nimport bvbench.cli\ntry:\n    bvbench.cli.main()\n" \
           "except SystemExit as e:\n    assert e.code in (0, None), e.code"
    assert _loaded_after(code) == []


def test_data_and_metrics_import_no_heavy_library() -> None:
    assert _loaded_after("import bvbench.cli, bvbench.data, bvbench.evaluate.metrics") == []


@pytest.mark.parametrize("n_classes,n,seed", [(10, 500, 0), (4, 37, 1), (7, 5, 2), (100, 300, 3), (1, 9, 4)])
def test_metrics_bit_identical_to_sklearn(n_classes: int, n: int, seed: int) -> None:
    from sklearn.metrics import confusion_matrix as sk_cm
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, max(1, n_classes // 2), n))  # some classes unpredicted
    labels = list(range(n_classes))
    want = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)[:3]
    cm = confusion_matrix(y, pred, n_classes)
    assert np.array_equal(cm, sk_cm(y, pred, labels=labels))
    assert macro_prf(cm) == tuple(float(v) for v in want)  # exact, not approximate


def test_classification_metrics_uses_the_same_values() -> None:
    from sklearn.metrics import precision_recall_fscore_support

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(200, 10, generator=g), torch.randint(0, 10, (200,), generator=g)
    m, cm = classification_metrics(logits, targets, 10)
    p, r, f, _ = precision_recall_fscore_support(targets.numpy(), logits.argmax(1).numpy(), labels=list(range(10)),
                                                 average="macro", zero_division=0)
    assert (m["precision"], m["recall"], m["f1"]) == (float(p), float(r), float(f))
    assert cm.sum() == 200 and cm.dtype == np.int64
