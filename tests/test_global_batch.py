"""`train.global_batch` (issue 16.1): the per-process batch and gradient accumulation follow from it and the world
size, and the run id then does not depend on the world size; accumulation is the same optimisation as one big
batch, and a step checkpoint inside it resumes exactly."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from bvbench.data import build_dataset
from bvbench.errors import BvbenchError
from bvbench.models import build_model
from bvbench.recipes import TrainConfig, load_recipe
from bvbench.recipes.schema import batch_split
from bvbench.runner.identity import RunContext, identity_record, run_id
from bvbench.train.loggers import RunLogger
from bvbench.train.trainer import Interrupted, Trainer

CPU = torch.device("cpu")
SGD = ["train.optimizer=sgd", "train.lr=0.05", "train.weight_decay=0", "train.momentum=0.9", "train.epochs=2",
       "train.max_steps_per_epoch=3", "train.schedule=cosine", "train.min_lr=0"]


def test_batch_split_takes_the_largest_per_process_batch_that_divides() -> None:
    assert batch_split(TrainConfig(batch_size=64), 4) == (64, 1)  # no global_batch: as before
    assert batch_split(TrainConfig(batch_size=64, global_batch=512), 1) == (64, 8)
    assert batch_split(TrainConfig(batch_size=64, global_batch=512), 8) == (64, 1)
    assert batch_split(TrainConfig(batch_size=128, global_batch=512), 8) == (64, 1)  # never above global / world
    assert batch_split(TrainConfig(batch_size=50, global_batch=96), 2) == (48, 1)
    assert batch_split(TrainConfig(batch_size=40, global_batch=96), 2) == (24, 2)
    assert batch_split(TrainConfig(batch_size=32, global_batch=33), 1) == (11, 3)
    with pytest.raises(BvbenchError, match="does not split over 4 process"):
        batch_split(TrainConfig(batch_size=64, global_batch=510), 4)
    mix = TrainConfig(batch_size=32, global_batch=30, augment={"mixup": 0.8})
    assert batch_split(mix, 1) == (30, 1)
    with pytest.raises(BvbenchError, match="even batch per process"):
        batch_split(mix, 2)  # 15 per process: mixup pairs the images of a batch, no even batch divides 15
    assert batch_split(TrainConfig(batch_size=32, global_batch=64, augment={"mixup": 0.8}), 1) == (32, 2)


def test_with_global_batch_the_id_is_the_same_on_any_world_size_and_batch_without_it_differs(
        tiny_recipe: Path) -> None:
    plain = load_recipe(str(tiny_recipe), "smoke")
    fixed = load_recipe(str(tiny_recipe), "smoke", ["train.global_batch=64"])
    small = load_recipe(str(tiny_recipe), "smoke", ["train.global_batch=64", "train.batch_size=8"])
    ctx1, ctx2, ctx8 = RunContext(), RunContext(world=2), RunContext(world=8)
    p, f, s = plain.row("fp"), fixed.row("fp"), small.row("fp")
    assert run_id(plain, p, 0, ctx1) != run_id(plain, p, 0, ctx2)  # the per-process batch x 2: another run
    ids = {run_id(fixed, f, 0, ctx1), run_id(fixed, f, 0, ctx2), run_id(fixed, f, 0, ctx8),
           run_id(small, s, 0, ctx1)}
    assert len(ids) == 1 and ids != {run_id(plain, p, 0, ctx1)}
    other = load_recipe(str(tiny_recipe), "smoke", ["train.global_batch=128"])
    assert run_id(other, other.row("fp"), 0, ctx1) != run_id(fixed, f, 0, ctx1)  # another global batch
    rec = identity_record(small, s, 0, ctx2)
    assert (rec["world_size"], rec["global_batch"], rec["batch_per_process"], rec["accum_steps"]) == (2, 64, 8, 4)
    assert "accum_steps" not in identity_record(plain, p, 0, ctx2)


def _trainer(recipe: Path, out: Path, sets: list[str], logger: RunLogger | None = None) -> Trainer:
    row = load_recipe(str(recipe), sets=sets).row("fp")
    ds, info = build_dataset(row.data, out, "train")
    torch.manual_seed(0)
    model = build_model(row.model, info.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(row, model, ds, None, info.num_classes, CPU, out, seed=0, log=lambda s: None, logger=logger)


def test_accumulating_two_batches_of_16_is_one_batch_of_32(tiny_recipe: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    big = _trainer(tiny_recipe, tmp_path / "big", [*SGD, "train.batch_size=32"])
    acc = _trainer(tiny_recipe, tmp_path / "acc", [*SGD, "train.batch_size=16", "train.global_batch=32"])
    assert (big.micro, big.accum, acc.micro, acc.accum) == (32, 1, 16, 2)
    assert big.steps_per_epoch() == acc.steps_per_epoch() == 3
    start = {k: v.clone() for k, v in big.model.state_dict().items()}
    a, b = big.fit().state_dict(), acc.fit().state_dict()
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-2 and worst < 1e-5, (moved, worst)  # trained, and the same up to float rounding
    for h, g in zip(big.state.history, acc.state.history, strict=True):
        assert h["train_loss"] == pytest.approx(g["train_loss"], abs=1e-5)
        assert h["lr"] == g["lr"]
    one = _trainer(tiny_recipe, tmp_path / "one", [*SGD, "train.batch_size=16"])  # 16 per step: not the same
    c = one.fit().state_dict()
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 100 * max(worst, 1e-7)


class _StopAt(RunLogger):
    """Sets the trainer's stop flag (as a signal handler would) once `step` optimizer steps are logged."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.trainer: Any = None

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        if step == self.step:
            self.trainer.stop.signal = signal.SIGUSR1


def test_a_step_checkpoint_inside_an_accumulating_epoch_resumes_exactly(tiny_recipe: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sets = [*SGD, "train.batch_size=8", "train.global_batch=24", "model.drop_path_rate=0.1"]
    full = _trainer(tiny_recipe, tmp_path / "full", sets).fit().state_dict()
    stop = _StopAt(4)  # epoch 2, after its first optimizer step (3 micro-batches of 8)
    part = _trainer(tiny_recipe, tmp_path / "part", sets, stop)
    stop.trainer = part
    with pytest.raises(Interrupted, match="epoch 2, step 1"):
        part.fit()
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert (ckpt["fit"]["epoch"], ckpt["fit"]["step"]) == (1, 1)
    resumed = _trainer(tiny_recipe, tmp_path / "part", sets)
    assert resumed.accum == 3
    after = resumed.fit(resume=ckpt).state_dict()
    differ = [k for k in full if not torch.equal(full[k], after[k])]
    assert not differ, differ[:5]
