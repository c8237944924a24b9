"""The progress bar of `bvbench run`: `row 2/4`, the row's stage and epoch (as text, not rich markup), loss and
accuracy once a step has run, and time left for the epoch, the row and (estimated) the recipe."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


@dataclass(frozen=True)
class RowWork:
    """What is left to train of a later row: its epochs and steps per epoch (None: like the current row's)."""

    epochs: int
    steps_per_epoch: int | None


def row_work(row: Any) -> RowWork:
    """A row's epochs over its stages and, where its train subset is fixed, its steps per epoch."""
    epochs = sum(s.epochs or 0 for s in row.resolved_stages())
    n = row.data.train_subset
    spe = math.ceil(n / (row.train.global_batch or row.train.batch_size)) if n else None
    if spe is not None and row.train.max_steps_per_epoch:
        spe = min(spe, row.train.max_steps_per_epoch)
    return RowWork(epochs, spe)


def clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RowProgress:
    """Wraps rich's Progress with the calls the trainer makes (add_task, update, remove_task); `trainer` is set
    once built, its state gives how far the row is."""

    def __init__(self, console: Console, position: tuple[int, int] | None = None,
                 later: list[RowWork] | None = None, disable: bool = False) -> None:
        self.bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}", markup=False), TimeRemainingColumn(),
                            TextColumn("{task.fields[eta]}", markup=False), console=console, transient=True,
                            disable=disable)
        self.label = f"row {position[0]}/{position[1]} " if position else ""
        self.later = later or []
        self.trainer: Any = None
        self._start: tuple[float, int] | None = None  # (time, steps done) at the first step seen

    def __enter__(self) -> RowProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def add_task(self, description: str, total: int, completed: int = 0, **_: Any) -> TaskID:
        return self.bar.add_task(self.label + description, total=total, completed=completed, stats="", eta="")

    def update(self, task: TaskID, advance: int = 1, **f: Any) -> None:
        stats = f"loss {f['loss']:.4f} acc {f['acc']:.3f} {f.get('ips', 0):.0f} img/s" if "loss" in f else ""
        self.bar.update(task, advance=advance, stats=stats, eta=self.eta())

    def remove_task(self, task: TaskID) -> None:
        self.bar.remove_task(task)

    def steps(self) -> tuple[int, int, int]:
        """(steps done in this row, steps of the row, steps per epoch)."""
        t = self.trainer
        spe = t.steps_per_epoch()
        epochs = [s.epochs or 0 for s in t.stages]
        st = t.state
        return (sum(epochs[:st.stage]) + st.epoch) * spe + st.step, sum(epochs) * spe, spe

    def eta(self) -> str:
        """`row 0:01:20 left, recipe ≈0:05:00` from this process's rate so far (empty until it has one)."""
        if self.trainer is None:
            return ""
        done, total, spe = self.steps()
        now = time.monotonic()
        if self._start is None or done <= self._start[1]:
            self._start = self._start or (now, done)
            return ""
        rate = (done - self._start[1]) / max(now - self._start[0], 1e-9)
        row_left = (total - done) / rate
        text = f"row {clock(row_left)} left"
        if self.later:
            later = sum(w.epochs * (w.steps_per_epoch or spe) for w in self.later)
            text += f", recipe ≈{clock(row_left + later / rate)}"
        return text
