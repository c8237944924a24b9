"""history.csv after a resume mid-epoch: the resumed epoch's row covers the whole epoch (its totals before the
stop are kept in the step checkpoint), so it equals the row of an uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch

import bvbench.train.trainer as trainer_mod

SAME = ["stage", "epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1"]  # not the timings


def history(out: Path) -> list[dict[str, str]]:
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_resumed_epoch_row_covers_the_whole_epoch(cli, tiny_recipe: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", str(tiny_recipe), "--device", "cpu", "--set", "train.epochs=2", "--set", "train.batch_size=64"]
    code, _, err = cli(*args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    reference = history(tmp_path / "a")

    real_lr_at, calls = trainer_mod.lr_at, {"n": 0}

    def signal_at_step_11(*a: object, **k: object) -> float:
        calls["n"] += 1
        if calls["n"] == 11:  # epoch 2, step 3 of 8
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(*a, **k)

    monkeypatch.setattr(trainer_mod, "lr_at", signal_at_step_11)
    out = tmp_path / "b"
    code, _, err = cli(*args, "--out", str(out))
    assert code == 143 and "interrupted by SIGTERM" in err, err
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]
    fit = torch.load(run / "checkpoint.pt", weights_only=True)["fit"]
    assert (fit["epoch"], fit["step"]) == (1, 3) and fit["sums"]["seen"] == 3 * 64
    monkeypatch.setattr(trainer_mod, "lr_at", real_lr_at)
    code, _, err = cli(*args, "--out", str(out), "--resume")
    assert code == 0, err
    resumed = history(out)
    assert [{k: r[k] for k in SAME} for r in resumed] == [{k: r[k] for k in SAME} for r in reference]
    assert float(resumed[1]["epoch_time_s"]) > 0 and float(resumed[1]["images_per_s"]) > 0
