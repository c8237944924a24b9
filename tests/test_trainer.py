"""The trainer: learning on fake data, schedules, distillation losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bvbench.data import build_dataset
from bvbench.models import build_model
from bvbench.recipes import DistillConfig, TrainConfig, load_recipe
from bvbench.train.losses import ClassificationLoss
from bvbench.train.schedule import lr_at
from bvbench.train.trainer import EpochSampler, Trainer


def test_loss_decreases_on_fake(tiny_recipe: Path, tmp_path: Path) -> None:
    recipe = load_recipe(str(tiny_recipe), sets=["train.epochs=4"])
    row = recipe.row("fp")
    ds, info = build_dataset(row.data, tmp_path, "train")
    model = build_model(row.model, info.num_classes)
    tr = Trainer(row, model, ds, None, info.num_classes, torch.device("cpu"), tmp_path, seed=0, log=lambda s: None)
    tr.fit()
    losses = [h["train_loss"] for h in tr.state.history]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "history.csv").read_text().count("\n") == 5


def test_warmup_then_cosine() -> None:
    cfg = TrainConfig(warmup_epochs=1, warmup_lr=0.0, min_lr=0.0, schedule="cosine")
    spe, total, lr = 10, 100, 1.0
    assert lr_at(0, total, spe, cfg, lr) == pytest.approx(0.1)  # linear warm-up, 1/10 of the way
    assert lr_at(9, total, spe, cfg, lr) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_at(mid, total, spe, cfg, lr) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    step = TrainConfig(schedule="step", step_size=2, gamma=0.1)
    assert lr_at(25, total, spe, step, lr) == pytest.approx(0.1)  # epoch 2 -> one drop


def test_epoch_sampler_is_seeded_sharded_and_resumable() -> None:
    a = list(EpochSampler(10, seed=1, epoch=0))
    assert sorted(a) == list(range(10)) and a == list(EpochSampler(10, seed=1, epoch=0))
    assert a != list(EpochSampler(10, seed=1, epoch=1))
    assert list(EpochSampler(10, seed=1, epoch=0, start=4)) == a[4:]
    r0, r1 = list(EpochSampler(9, 1, 0, rank=0, world=2)), list(EpochSampler(9, 1, 0, rank=1, world=2))
    assert len(r0) == len(r1) == 5 and set(r0) | set(r1) == set(range(9))


def test_hard_distillation_loss_by_hand() -> None:
    cls = torch.tensor([[2.0, 0.0]])
    dist = torch.tensor([[0.0, 1.0]])
    teacher = torch.tensor([[0.0, 5.0]])  # teacher says class 1
    y = torch.tensor([0])
    loss = ClassificationLoss(0.0, DistillConfig(kind="hard", alpha=0.5))((cls, dist), y, teacher)
    ce_cls = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce_dist = -math.log(math.exp(1) / (math.exp(1) + 1))
    assert loss.item() == pytest.approx(0.5 * ce_cls + 0.5 * ce_dist)


def test_soft_distillation_is_zero_when_student_matches_teacher() -> None:
    z = torch.tensor([[1.0, 2.0, 0.5]])
    fn = ClassificationLoss(0.0, DistillConfig(kind="soft", alpha=1.0, tau=2.0))
    assert fn(z, torch.tensor([1]), z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(z, torch.tensor([1]), torch.tensor([[3.0, 0.0, 0.0]])).item() > 0.1
