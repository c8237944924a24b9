"""Run planning: which rows run and in which order, and for each its run folder: finished (reused), adopted
from an identical run elsewhere, resumed from its checkpoint, or fresh."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bvbench import methods
from bvbench.errors import BvbenchError
from bvbench.models import safe_load
from bvbench.recipes.schema import Recipe, Row, batch_split
from bvbench.results import (
    RunDir,
    adopt_run,
    atomic_write_json,
    find_identical_run,
    pause_for_tests,
    safe_child,
)
from bvbench.runner.distributed import DistContext
from bvbench.runner.identity import RunContext, identity_record, run_id
from bvbench.runner.lock import Holder, RunBusy, RunLock, clean_orphans, lock_path
from bvbench.train.loggers import check_loggers


@dataclass
class RunOptions:
    profile: str = "paper"
    rows: list[str] | None = None
    sets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    download: bool = False
    out: str = "results"
    seed: int | None = None
    device: str = "auto"
    resume: bool = False  # kept for old scripts: an unfinished run is always continued (unless `restart`)
    steal_stale: bool = False
    threads: int | None = None  # --threads (None: $BVBENCH_THREADS or the machine default per row)
    restart: bool = False  # --restart: discard an unfinished run (moved aside) and train the row afresh
    loggers: list[str] = field(default_factory=list)  # experiment loggers (bvbench.train.loggers); not in run ids

    def __post_init__(self) -> None:
        self.loggers = check_loggers(self.loggers)  # fails before any training on a missing package


class RunPlan:
    """The rows of one recipe to run and their run folders (the same decision on every rank)."""

    def __init__(self, recipe: Recipe, opts: RunOptions, dist: DistContext, root: Path,
                 say: Callable[[str], None], device: torch.device | None = None) -> None:
        self.recipe, self.opts, self.dist, self.root, self.say = recipe, opts, dist, root, say
        self.seed = recipe.seed if opts.seed is None else opts.seed
        self.results = Path(opts.out)
        self.locks: dict[Path, RunLock] = {}
        self.ctx = RunContext(device=(device or torch.device("cpu")).type, world=dist.world, threads=opts.threads,
                              root=root, download=opts.download)

    def run_id(self, row: Row) -> str:
        """The row's run id in this plan's context (device, processes, threads, data copy)."""
        return run_id(self.recipe, row, self.seed, self.ctx)

    def rows_to_run(self) -> list[Row]:
        names = self.opts.rows or [r.name for r in self.recipe.rows]
        for n in names:
            self.recipe.row(n)  # unknown row -> error with suggestion
        rows = [self.recipe.row(n) for n in self.recipe.dependencies(names)]
        for r in rows:  # fail before any training on a name that does not exist
            if r.status == "run":
                batch_split(r.train, self.dist.world)  # a global batch that does not split: before any training
                for stage in r.resolved_stages():
                    assert stage.method is not None
                    methods.METHODS.get(stage.method.name)
        return rows

    def finished_run(self, row: Row) -> RunDir | None:
        rid = self.run_id(row)
        rd = RunDir(safe_child(self.results, self.recipe.name, row.name, rid))
        return rd if rd.done else None

    def busy(self, row: Row) -> str | None:
        """Who holds the lock of the row's run folder, when a live process does."""
        base = safe_child(self.results, self.recipe.name, row.name, self.run_id(row))
        holder = Holder.read(lock_path(base))
        return holder.describe() if holder is not None and not holder.gone() else None

    def run_dir_for(self, row: Row) -> tuple[RunDir, dict[str, Any] | None]:
        """The row's run folder and the checkpoint to resume from. Unless the run is finished, the folder is
        claimed (`claim`; RunBusy when another process holds it) until `release`."""
        rid = self.run_id(row)
        base = safe_child(self.results, self.recipe.name, row.name, rid)
        rd = RunDir(base)
        if rd.done:
            if self.opts.restart:
                self.say(f"[dim]  {row.name}: finished, kept (--restart discards only unfinished runs)[/]")
            return rd, None
        self.claim(row, base)
        if rd.done:  # finished by the process whose lock we waited behind
            self.release(base)
            return rd, None
        if not base.exists() and (same := find_identical_run(self.results, rid, exclude=base)) is not None:
            # The same experiment finished under another recipe or row (a shared teacher, a row printed in two
            # tables): adopt it instead of training again.
            if self.dist.main:
                adopt_run(same, base, {"recipe": self.recipe.name, "row": row.name, "label": row.label},
                          self.run_config(row, rid))
            self.dist.barrier()
            self.release(base)
            return RunDir(base), None
        if rd.path.exists() and self.opts.restart:
            self.discard(row, rd)
        elif rd.checkpoint_path.exists():
            ckpt = self.resume_state(row, rd)
            if ckpt is not None:
                self.say(f"[yellow]  {row.name}: continuing its unfinished run in {rd.path} (--restart discards "
                         f"it)[/]")
            return rd, ckpt
        return rd, None

    def discard(self, row: Row, rd: RunDir) -> None:
        """`--restart`: move an unfinished run folder aside (into `.discarded/` beside it, never deleted)."""
        if self.dist.main:
            aside = rd.path.parent / ".discarded" / f"{rd.path.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            rd.path.rename(aside)
            self.say(f"[yellow]  {row.name}: --restart: its unfinished run was moved to {aside}; starting afresh[/]")
        self.dist.barrier()

    def claim(self, row: Row, path: Path) -> None:
        """Lock the run folder `path` for this process (rank 0 decides for all ranks) and remove the temporary
        files a killed writer left in it; RunBusy when another process holds it."""
        busy: str | None = None
        if self.dist.main:
            lock = RunLock(path)
            try:
                for note in lock.acquire(self.opts.steal_stale):
                    self.say(f"[yellow]  {row.name}: {note}[/]")
                self.locks[path] = lock
                for name in clean_orphans(path):
                    self.say(f"[dim]  {row.name}: removed {name}, left by an interrupted writer[/]")
            except RunBusy as e:
                busy = str(e)
        busy = _share(self.dist, busy)
        if busy is not None:
            raise RunBusy(busy)
        pause_for_tests("claimed")

    def release(self, path: Path) -> None:
        """Give up the claim on `path` (no-op when not held)."""
        lock = self.locks.pop(path, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for path in list(self.locks):
            self.release(path)

    def resume_state(self, row: Row, rd: RunDir) -> dict[str, Any] | None:
        """The training checkpoint to resume `rd` from; None when the run was killed after its results and
        final weights were written but before `.done`: then only `.done` is missing, and it is written."""
        ckpt = load_checkpoint_file(rd.checkpoint_path)
        if is_training_checkpoint(ckpt):
            return ckpt
        if isinstance(ckpt, dict) and set(ckpt) == {"model"} and (rd.path / "metrics.json").is_file():
            rd.metrics()  # a BvbenchError when it is not a complete record
            if self.dist.main:
                env_path = rd.path / "env.json"
                env = json.loads(env_path.read_text()) if env_path.is_file() else {}
                if "end_time" not in env:
                    stamp = rd.checkpoint_path.stat().st_mtime
                    env["end_time"] = datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
                    atomic_write_json(env_path, env)
                rd.mark_done()
            self.dist.barrier()
            self.say(f"[green]  {row.name}: {rd.path} was stopped after writing its results and final weights, "
                     f"before .done: marked finished[/]")
            return None
        raise BvbenchError(f"checkpoint {rd.checkpoint_path} is not a bvbench training checkpoint")

    def run_config(self, row: Row, rid: str) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "profile": self.recipe.profile, "seed": self.seed, "run_id": rid,
                "data_dir": str(self.root), "row": row.model_dump(mode="json"),
                "identity": identity_record(self.recipe, row, self.seed, self.ctx)}


def load_checkpoint_file(path: Path) -> Any:
    """torch.load(weights_only=True) with one error message for a truncated, foreign or pickling file."""
    return safe_load(path, "; delete it to start the run again")


def is_training_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and "fit" in ckpt


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (model, optimizer, RNG and progress), loaded with weights_only=True."""
    ckpt = load_checkpoint_file(path)
    if not is_training_checkpoint(ckpt):
        raise BvbenchError(f"checkpoint {path} is not a bvbench training checkpoint")
    return ckpt


def _share(dist: DistContext, value: str | None) -> str | None:
    """Rank 0's `value` on every rank (itself alone)."""
    if dist.world <= 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
