"""`bvbench run`: plan the rows of a recipe (`plan`), train each into its own run folder (`rows`); run ids in
`identity`, torchrun support in `distributed`. Launchers (local, cluster) sit beside them in this package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bvbench.build import build_row_model, pick_device
from bvbench.data import build_dataset, data_root
from bvbench.data.loader import eval_loader
from bvbench.errors import BvbenchError, InterruptedRun, Stopped, signal_name
from bvbench.evaluate.metrics import classification_metrics, predict
from bvbench.models import check_input_size
from bvbench.recipes import Recipe, Row, load_recipe
from bvbench.recipes.schema import MAX_SEED
from bvbench.results import RunDir, find_runs
from bvbench.runner.distributed import DistContext, init_distributed
from bvbench.runner.identity import ADDED_FIELDS, REFERENCE, RunContext, row_identity, run_id
from bvbench.runner.lock import RunBusy
from bvbench.runner.plan import RunOptions, RunPlan, load_training_checkpoint
from bvbench.runner.rows import RowTrainer, console
from bvbench.train.trainer import Diverged


class RowsFailed(BvbenchError):
    """Some rows have no finished run (diverged, or blocked by one that diverged); the others ran. Exit code 1."""

    exit_code = 1

    def __init__(self, msg: str = "", recipe: Recipe | None = None, failed: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.recipe, self.failed = recipe, failed or {}

    @classmethod
    def of(cls, recipe: Recipe, failed: dict[str, str], done: list[RunDir]) -> RowsFailed:
        parts = ", ".join(f"{n} ({why})" for n, why in failed.items())
        return cls(f"{recipe.name}: {len(failed)} row(s) without a finished run: {parts}; {len(done)} finished "
                   "or reused (see the table)", recipe, failed)


def blocked_by(row: Row, failed: dict[str, str]) -> str | None:
    """'blocked by fp (diverged)' when the row's teacher or init row has no finished run, else None."""
    for dep in (row.init_from, row.teacher):
        if dep and dep in failed:
            root = failed[dep]
            return f"blocked by {dep} ({root})" if root == "diverged" else root
    return None


class Runner:
    """Runs the rows of one recipe: the plan decides each row's folder, the row trainer fills it."""

    def __init__(self, recipe: Recipe, opts: RunOptions) -> None:
        self.recipe, self.opts = recipe, opts
        self.dist, self.device = init_distributed(pick_device(opts.device))
        self.plan = RunPlan(recipe, opts, self.dist, data_root(opts.data_dir), self.say, self.device)
        self.rows = RowTrainer(self.plan, self.device)

    def say(self, msg: str) -> None:
        if self.dist.main:
            console.print(msg)

    def run(self) -> list[RunDir]:
        """Every row in order. A signal stops the run (InterruptedRun, after saving what it can); a diverged row
        blocks only the rows that need it, and RowsFailed at the end names them (the others ran)."""
        done: list[RunDir] = []
        failed: dict[str, str] = {}  # row -> why it has no finished run
        with self.rows.stop.installed():
            for row in self.plan.rows_to_run():
                if row.status == "reference":
                    self.say(f"[dim]- {row.name}: reference row (paper value only, not run): {row.note or ''}[/]")
                    continue
                if row.status == "pending":
                    self.say(f"[yellow]- {row.name}: skipped, method {row.method.name!r} is pending[/]")
                    continue
                if (why := blocked_by(row, failed)) is not None:
                    failed[row.name] = why
                    self.say(f"[red]- {row.name}: not run, {why}[/]")
                    continue
                try:
                    rd = self.run_row(row)
                except Diverged as e:
                    failed[row.name] = "diverged"
                    self.say(f"[red]! {row.name}: diverged: {e}; rows that need it will not run; going on[/]")
                    continue
                except Stopped as e:  # between rows: nothing of this row written yet
                    raise InterruptedRun(f"interrupted by {signal_name(e.signum)} before row {row.name} started; "
                                         f"finished rows are kept; {self.rows.resume_hint()}", e.signum) from None
                if rd is not None:
                    done.append(rd)
        if failed:
            raise RowsFailed.of(self.recipe, failed, done)
        return done

    def run_row(self, row: Row) -> RunDir | None:
        try:
            rd, ckpt = self.plan.run_dir_for(row)
        except RunBusy as e:  # another process trains this row into the same folder: leave it alone
            self.say(f"[yellow]- {row.name}: skipped: {e}[/]")
            return None
        except BaseException:  # a refused checkpoint, a signal while claiming: leave no lock file behind
            self.plan.release_all()
            raise
        try:
            self.dist.barrier()  # every rank decided on the same folder before rank 0 creates it
            if rd.done:
                src = rd.path / "reused.json"
                where = f"{rd.path}, trained as {json.loads(src.read_text())['from']}" if src.exists() else str(rd.path)
                self.say(f"[green]= {row.name}: finished run reused ({where})[/]")
                return rd
            return self.rows.train_row(row, rd, ckpt)
        finally:
            self.plan.release_all()


def run_recipe(name: str, opts: RunOptions) -> tuple[Recipe, list[RunDir]]:
    if opts.seed is not None and not 0 <= opts.seed <= MAX_SEED:
        raise BvbenchError(f"--seed {opts.seed}: a seed is an integer from 0 to {MAX_SEED} (2**32 - 1)")
    recipe = load_recipe(name, opts.profile, opts.sets)
    return recipe, Runner(recipe, opts).run()


def evaluate_run(run_dir: str, data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a finished run from its checkpoint on its test split."""
    rd = RunDir(Path(run_dir))
    cfg = rd.config()
    ckpt = rd.checkpoint()
    row = cfg.row
    dev = pick_device(device)
    root = data_root(data_dir or cfg.data_dir)
    ds, info = build_dataset(row.data, root, "test")
    loader = eval_loader(ds, row.eval.batch_size, row.data.num_workers)
    model = build_row_model(row, info.num_classes, ckpt).to(dev)
    check_input_size(model, row.data.img_size or info.img_size, str(rd.path))
    logits, targets = predict(model, loader, dev)
    metrics, _ = classification_metrics(logits, targets, info.num_classes, row.eval.topk)
    return {"run": str(rd.path), "data": info.display, **metrics}


__all__ = ["ADDED_FIELDS", "REFERENCE", "DistContext", "RunContext", "RowsFailed", "RunOptions", "RunPlan", "RowTrainer", "Runner", "build_row_model",
           "evaluate_run", "find_runs", "load_training_checkpoint", "row_identity", "run_id", "run_recipe"]
