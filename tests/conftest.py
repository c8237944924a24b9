"""Shared fixtures: a tiny recipe on `fake` data and an in-process CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread per pytest-xdist worker (workers = cores), two in a serial run.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
os.environ.setdefault("BVBENCH_DATA", "/nonexistent-bvbench-data")  # tests never read the user's data

TINY = """
name: {name}
title: tiny test recipe
seed: 0
paper:
  citation: test
  file: none.txt
  tables:
    - name: Table 1
      columns:
        - {{key: top1, label: Top-1 (%), unit: percent}}
        - {{key: f1, label: F1, unit: fraction}}
        - {{key: bits, label: W-A, unit: text, measured: false}}
data: {{name: fake, img_size: 16, num_workers: 0}}
model: {{name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}}
train: {{epochs: {epochs}, batch_size: 32, lr: 2.0e-3, warmup_epochs: 0, amp: false,
        augment: {{hflip: false, random_crop: false}}}}
eval: {{batch_size: 128}}
rows:
  - name: fp
    label: Full precision
    paper: {{top1: 70.5, f1: 0.7, bits: 32-32}}
  - name: other
    label: Reference only
    status: reference
    note: a CNN the suite does not train
    paper: {{top1: 50.0, bits: 1-1}}
profiles:
  smoke:
    train: {{epochs: 1, max_steps_per_epoch: 2}}
"""


def write_recipe(path: Path, name: str = "tiny", epochs: int = 2) -> Path:
    f = path / f"{name}.yaml"
    f.write_text(TINY.format(name=name, epochs=epochs))
    return f


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `bvbench ARGS` in process; returns (exit code, stdout, stderr)."""
    from bvbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
