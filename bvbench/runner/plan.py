"""Run planning: which rows run and in which order, and for each its run folder: finished (reused), adopted
from an identical run elsewhere, resumed from its checkpoint, or fresh."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvbench import methods
from bvbench.errors import BvbenchError
from bvbench.models import safe_load
from bvbench.recipes.schema import Recipe, Row
from bvbench.results import RunDir, adopt_run, find_identical_run, safe_child
from bvbench.runner.distributed import DistContext
from bvbench.runner.identity import run_id


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
    resume: bool = False


class RunPlan:
    """The rows of one recipe to run and their run folders (the same decision on every rank)."""

    def __init__(self, recipe: Recipe, opts: RunOptions, dist: DistContext, root: Path,
                 say: Callable[[str], None]) -> None:
        self.recipe, self.opts, self.dist, self.root, self.say = recipe, opts, dist, root, say
        self.seed = recipe.seed if opts.seed is None else opts.seed
        self.results = Path(opts.out)

    def rows_to_run(self) -> list[Row]:
        names = self.opts.rows or [r.name for r in self.recipe.rows]
        for n in names:
            self.recipe.row(n)  # unknown row -> error with suggestion
        rows = [self.recipe.row(n) for n in self.recipe.dependencies(names)]
        for r in rows:  # fail before any training on a name that does not exist
            if r.status == "run":
                for stage in r.resolved_stages():
                    assert stage.method is not None
                    methods.METHODS.get(stage.method.name)
        return rows

    def finished_run(self, row: Row) -> RunDir | None:
        rid = run_id(self.recipe, row, self.seed)
        rd = RunDir(safe_child(self.results, self.recipe.name, row.name, rid))
        return rd if rd.done else None

    def run_dir_for(self, row: Row) -> tuple[RunDir, dict[str, Any] | None]:
        rid = run_id(self.recipe, row, self.seed)
        base = safe_child(self.results, self.recipe.name, row.name, rid)
        rd = RunDir(base)
        if rd.done:
            return rd, None
        if not base.exists() and (same := find_identical_run(self.results, rid, exclude=base)) is not None:
            # The same experiment finished under another recipe or row (a shared teacher, a row printed in two
            # tables): adopt it instead of training again.
            if self.dist.main:
                adopt_run(same, base, {"recipe": self.recipe.name, "row": row.name, "label": row.label},
                          self.run_config(row, rid))
            self.dist.barrier()
            return RunDir(base), None
        if rd.path.exists() and rd.checkpoint_path.exists():
            if self.opts.resume:
                return rd, load_training_checkpoint(rd.checkpoint_path)
            n = 2
            while (base.parent / f"{rid}-r{n}").exists():
                n += 1
            self.say(f"[yellow]  {row.name}: an unfinished run exists in {rd.path} (pass --resume to continue "
                          f"it); starting a fresh one in {rid}-r{n}[/]")
            rd = RunDir(base.parent / f"{rid}-r{n}")
        return rd, None

    def run_config(self, row: Row, rid: str) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "profile": self.recipe.profile, "seed": self.seed, "run_id": rid,
                "data_dir": str(self.root), "row": row.model_dump(mode="json")}


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (model, optimizer, RNG and progress), loaded with weights_only=True."""
    ckpt = safe_load(path, "; delete it to start the run again")
    if not isinstance(ckpt, dict) or "fit" not in ckpt:
        raise BvbenchError(f"checkpoint {path} is not a bvbench training checkpoint")
    return ckpt
