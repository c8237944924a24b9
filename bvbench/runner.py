"""`bvbench run`: train and evaluate each row of a recipe into its own run folder."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from bvbench import methods
from bvbench.build import build_row_model, methods_version, pick_device
from bvbench.data import build_dataset, data_root
from bvbench.data.loader import eval_loader
from bvbench.errors import BvbenchError, InterruptedRun
from bvbench.evaluate.metrics import classification_metrics, plot_confusion, predict, write_confusion_csv
from bvbench.models import build_model
from bvbench.recipes import Recipe, Row, load_recipe
from bvbench.results import (
    Metrics,
    RunDir,
    adopt_run,
    atomic_torch_save,
    atomic_write_json,
    config_hash,
    environment,
    find_identical_run,
    find_runs,
    link_or_copy,
    now,
    safe_child,
)
from bvbench.train.trainer import Dist, Diverged, Interrupted, Trainer, seed_everything

console = Console(highlight=False, soft_wrap=True)


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


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    import torch.distributed as tdist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=tdist.get_rank(), world=tdist.get_world_size(), local=local, cuda=device.type == "cuda"), device


class DistContext(Dist):
    """Dist plus the DDP wrapper and barriers (no-ops in a single process)."""

    def __init__(self, rank: int = 0, world: int = 1, local: int = 0, cuda: bool = False) -> None:
        super().__init__(rank, world)
        self.local, self.cuda = local, cuda

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world <= 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Quantizers with lazily initialised scales may sit unused in a stage: let DDP tolerate that.
        return DDP(model, device_ids=[self.local] if self.cuda else None, find_unused_parameters=True)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# Fields added to the schema after runs were recorded, with the value that reproduces the older behaviour: at that
# value they are left out of a run's identity, so adding them did not change the id of any existing experiment
# (any other value does). A changed default of an older field still changes every id that depends on it.
ADDED_FIELDS: dict[tuple[str, ...], Any] = {
    ("eval", "count_first_last"): "as_run",
}


def row_identity(recipe: Recipe, row: Row, seed: int) -> dict[str, Any]:
    """What makes two runs the same run: the resolved configuration (not labels or paper values)."""
    ident = row.model_dump(mode="json", exclude={"label", "note", "paper", "status", "table", "name"})
    for (*parents, key), neutral in ADDED_FIELDS.items():
        node: Any = ident
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(key, neutral) == neutral:
            node.pop(key, None)
    ident.update({"profile": recipe.profile, "seed": seed, "methods_version": methods_version()})
    for dep in ("teacher", "init_from"):
        ref = getattr(row, dep)
        if ref:
            ident[dep] = row_identity(recipe, recipe.row(ref), seed)
    return ident


def run_id(recipe: Recipe, row: Row, seed: int) -> str:
    return f"{recipe.profile}-{row.data.name}-seed{seed}-{config_hash(row_identity(recipe, row, seed))}"


class Runner:
    """Runs the rows of one recipe; shared data sets are built once."""

    def __init__(self, recipe: Recipe, opts: RunOptions) -> None:
        self.recipe, self.opts = recipe, opts
        self.seed = recipe.seed if opts.seed is None else opts.seed
        self.device = pick_device(opts.device)
        self.root = data_root(opts.data_dir)
        self.results = Path(opts.out)
        self._data: dict[str, Any] = {}
        self.dist, self.device = init_distributed(self.device)

    # ------------------------------------------------------------- data
    def data(self, row: Row, split: str) -> tuple[Any, Any]:
        augment = row.train.augment if split == "train" else None
        key = yaml.safe_dump([row.data.model_dump(), split, augment.model_dump() if augment else None, self.seed])
        if key not in self._data:
            self._data[key] = build_dataset(row.data, self.root, split, download=self.opts.download,  # type: ignore[arg-type]
                                            augment=augment, seed=self.seed)
        return self._data[key]

    def test_loader(self, row: Row) -> tuple[DataLoader, Any]:
        ds, info = self.data(row, "test")
        return eval_loader(ds, row.eval.batch_size, row.data.num_workers), info

    # ------------------------------------------------------------- model
    def finished_run(self, row: Row) -> RunDir | None:
        rid = run_id(self.recipe, row, self.seed)
        rd = RunDir(safe_child(self.results, self.recipe.name, row.name, rid))
        return rd if rd.done else None

    def load_trained(self, row: Row, num_classes: int) -> nn.Module:
        """The final model of a finished row (its stages' methods applied, weights loaded)."""
        rd = self.finished_run(row)
        if rd is None:
            raise BvbenchError(f"row {row.name!r} has no finished run for profile {self.recipe.profile!r} "
                               f"and seed {self.seed}; run it first (bvbench run {self.recipe.name} --rows {row.name})")
        if not rd.checkpoint_path.exists():
            self.recover_weights(row, rd)
        return build_row_model(row, num_classes, rd.checkpoint())

    def recover_weights(self, row: Row, rd: RunDir) -> None:
        """A finished run whose checkpoint is gone (results are committed without checkpoints) is needed as a
        teacher or initialisation: train the row again, same configuration and seed, in a scratch folder next to
        it and move only the weights over. Its metrics stay as they are; `weights.json` records both results."""
        twin = find_identical_run(self.results, rd.path.name, exclude=rd.path, with_checkpoint=True)
        if twin is not None:  # the same run id elsewhere kept (or already recovered) its weights: share them
            if self.dist.main:
                link_or_copy(twin.checkpoint_path, rd.checkpoint_path)
                atomic_write_json(rd.path / "weights.json", {"linked": now(), "reason": "checkpoint.pt was missing",
                                                             "from": str(twin.path)})
            self.dist.barrier()
            self.say(f"[yellow]  {row.name}: checkpoint.pt was missing; taken from the identical run {twin.path}[/]")
            return
        scratch = RunDir(rd.path.parent / f"{rd.path.name}.weights")
        self.say(f"[yellow]  {row.name}: its finished run {rd.path} has no checkpoint.pt (checkpoints are not kept "
                 f"with committed results); training it again with the same configuration and seed to recover "
                 f"its weights[/]")
        ckpt = None
        if scratch.checkpoint_path.exists() and not scratch.done:
            ckpt = load_training_checkpoint(scratch.checkpoint_path)
        if not scratch.done:
            self.train_row(row, scratch, ckpt)
        if self.dist.main:
            before, after = rd.metrics(), scratch.metrics()
            atomic_write_json(rd.path / "weights.json", {
                "retrained": now(), "reason": "checkpoint.pt was missing",
                "top1_recorded": before.top1, "top1_retrained": after.top1})
            scratch.checkpoint_path.replace(rd.checkpoint_path)
            shutil.rmtree(scratch.path)
            if before.top1 != after.top1:
                self.say(f"[yellow]  {row.name}: the retrained weights score top1 {after.top1} against "
                         f"{before.top1} recorded (see {rd.path / 'weights.json'})[/]")
        self.dist.barrier()

    def build(self, row: Row, num_classes: int) -> tuple[nn.Module, nn.Module | None]:
        seed_everything(self.seed)  # the initial weights depend on the seed only
        model = build_model(row.model, num_classes)
        if row.init_from:
            src = self.recipe.row(row.init_from)
            state = self.load_trained(src, num_classes).state_dict()
            own = model.state_dict()
            if any(k not in own for k in state):
                # A quantized source: convert first so its learned quantizer parameters (scales, offsets,
                # `initialized` flags) carry over; the trainer's own apply of this stage is then a no-op.
                first = row.resolved_stages()[0].method
                assert first is not None
                methods.apply(model, first)
                own = model.state_dict()
            fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            if len(fit) < len(own) // 2:
                raise BvbenchError(f"row {row.name!r}: init_from {src.name!r} does not fit its model "
                                   f"({len(fit)} of {len(own)} tensors match)")
            model.load_state_dict(fit, strict=False)
        teacher = None
        if row.teacher:
            teacher = self.load_trained(self.recipe.row(row.teacher), num_classes).to(self.device).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        return model, teacher

    # ------------------------------------------------------------- rows
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

    def run(self) -> list[RunDir]:
        done: list[RunDir] = []
        for row in self.rows_to_run():
            if row.status == "reference":
                self.say(f"[dim]- {row.name}: reference row (paper value only, not run): {row.note or ''}[/]")
                continue
            if row.status == "pending":
                self.say(f"[yellow]- {row.name}: skipped, method {row.method.name!r} is pending[/]")
                continue
            try:
                rd = self.run_row(row)
            except Diverged as e:
                self.say(f"[red]! {row.name}: diverged: {e}; last good checkpoint kept; going on[/]")
                continue
            if rd is not None:
                done.append(rd)
        return done

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

    def run_row(self, row: Row) -> RunDir | None:
        rd, ckpt = self.run_dir_for(row)
        self.dist.barrier()  # every rank decided on the same folder before rank 0 creates it
        if rd.done:
            src = rd.path / "reused.json"
            where = f"{rd.path}, trained as {json.loads(src.read_text())['from']}" if src.exists() else str(rd.path)
            self.say(f"[green]= {row.name}: finished run reused ({where})[/]")
            return rd
        return self.train_row(row, rd, ckpt)

    def train_row(self, row: Row, rd: RunDir, ckpt: dict[str, Any] | None) -> RunDir:
        """Train and evaluate one row into `rd` (resuming from `ckpt` if given); returns the finished run."""
        train_set, info = self.data(row, "train")
        test_loader, test_info = self.test_loader(row)
        self.say(f"[bold]> {self.recipe.name}/{row.name}[/] ({row.label}) on {info.display}, "
                 f"profile {self.recipe.profile}, {len(train_set)} train / {len(test_loader.dataset)} test, "
                 f"device {self.device}" + (f", {self.dist.world} processes" if self.dist.world > 1 else "")
                 + (", resuming" if ckpt else ""))
        model, teacher = self.build(row, info.num_classes)
        env_path = rd.path / "env.json"
        env = environment(self.device, self.seed)
        if self.dist.main:
            try:
                rd.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BvbenchError(f"cannot create the run folder {rd.path}: {e.strerror}") from None
            if not (rd.path / "config.yaml").exists():
                rd.write_config(self.run_config(row, rd.path.name))
            if env_path.exists():
                env["start_time"] = json.loads(env_path.read_text()).get("start_time", env["start_time"])
            atomic_write_json(env_path, env)
        self.dist.barrier()
        t0 = time.perf_counter()
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} "
                                       "{task.fields[ips]:.0f} img/s"), TimeRemainingColumn(),
                            console=console, transient=True, disable=not self.dist.main)
        trainer = Trainer(row, model, train_set, test_loader, info.num_classes, self.device, rd.path, self.seed,
                          teacher=teacher, dist=self.dist, progress=progress, log=console.print,
                          wrap=self.dist.wrap)
        try:
            with progress:
                model = trainer.fit(resume=ckpt)
        except Diverged as e:
            if self.dist.main:
                atomic_write_json(rd.path / "diverged.json", {"status": "diverged", "message": str(e), "time": now()})
            raise
        except Interrupted as e:
            raise InterruptedRun(f"{row.name}: interrupted ({e}); checkpoint saved in {rd.path}; "
                               f"continue with: bvbench run {self.recipe.name} --resume (same options)") from None
        train_time = time.perf_counter() - t0
        logits, targets = predict(model, test_loader, self.device)
        metrics, cm = classification_metrics(logits, targets, info.num_classes, row.eval.topk)
        if self.dist.main:
            from bvbench.evaluate.profile import complexity_metrics, fp_macs

            metrics.update(complexity_metrics(model, row, fp_macs(row, info.num_classes)))
            self.write_results(rd, row, model, metrics, cm, info, test_info, len(train_set),
                               len(test_loader.dataset), train_time, trainer, env)
        self.dist.barrier()
        return rd

    def say(self, msg: str) -> None:
        if self.dist.main:
            console.print(msg)

    def write_results(self, rd: RunDir, row: Row, model: nn.Module, metrics: dict[str, Any], cm: Any, info: Any,
                      test_info: Any, n_train: int, n_test: int, train_time: float, trainer: Trainer,
                      env: dict[str, Any]) -> None:
        """Everything a finished run leaves behind; `.done` last."""
        classes = list(test_info.classes)
        write_confusion_csv(cm, classes, rd.path / "confusion.csv")
        plot_confusion(cm, classes, rd.path / "confusion.png", f"{self.recipe.name} / {row.label}")
        record = {
            "recipe": self.recipe.name, "row": row.name, "label": row.label, "run_id": rd.path.name,
            "profile": self.recipe.profile, "seed": self.seed, "status": "finished",
            "data": {"name": info.name, "display": info.display, "source": info.source,
                     "train_size": n_train, "test_size": n_test},
            "model": row.model.name, "method": row.method.name,
            "epochs": sum(s.epochs or 0 for s in row.resolved_stages()),
            "device": str(self.device), "world_size": self.dist.world, **metrics,
            "train_time_s": round(train_time, 2),
            "images_per_s": trainer.state.history[-1]["images_per_s"] if trainer.state.history else None,
        }
        rd.write_metrics(Metrics.of(record))
        atomic_torch_save({"model": model.state_dict()}, rd.checkpoint_path)  # final weights only
        env["end_time"] = now()
        atomic_write_json(rd.path / "env.json", env)
        rd.mark_done()
        console.print(f"[green]  {row.name}: top1 {metrics['top1']:.4f}, F1 {metrics['f1']:.4f} "
                      f"({train_time:.1f} s) -> {rd.path}[/]")


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (model, optimizer, RNG and progress), loaded with weights_only=True."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise BvbenchError(f"checkpoint {path} is corrupt or not a PyTorch file ({type(e).__name__}); "
                           "delete it to start the run again") from None
    if not isinstance(ckpt, dict) or "fit" not in ckpt:
        raise BvbenchError(f"checkpoint {path} is not a bvbench training checkpoint")
    return ckpt


def run_recipe(name: str, opts: RunOptions) -> tuple[Recipe, list[RunDir]]:
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
    logits, targets = predict(model, loader, dev)
    metrics, _ = classification_metrics(logits, targets, info.num_classes, row.eval.topk)
    return {"run": str(rd.path), "data": info.display, **metrics}


__all__ = ["RunOptions", "Runner", "run_recipe", "evaluate_run", "find_runs"]
