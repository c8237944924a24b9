"""Row training: build a row's data, model and teacher, train it into its run folder, evaluate it and write
everything a finished run leaves behind."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from bvbench import methods
from bvbench.build import build_row_model
from bvbench.data import build_dataset
from bvbench.data.loader import eval_loader
from bvbench.errors import BvbenchError, InterruptedRun, Stopped, signal_name
from bvbench.evaluate.metrics import classification_metrics, plot_confusion, predict, write_confusion_csv
from bvbench.evaluate.predictions import FILENAME as PREDICTIONS
from bvbench.evaluate.predictions import Predictions, from_logits, split_indices, write_predictions
from bvbench.evaluate.profile import complexity_metrics, fp_macs
from bvbench.models import build_model, check_input_size
from bvbench.recipes.schema import Row
from bvbench.results import (
    Metrics,
    RunDir,
    atomic_torch_save,
    atomic_write_json,
    environment,
    find_identical_run,
    link_or_copy,
    now,
    pause_for_tests,
)
from bvbench.runner.lock import RunBusy
from bvbench.runner.plan import RunPlan
from bvbench.runner.progress import RowProgress, RowWork
from bvbench.train.loggers import RunLogger, open_loggers
from bvbench.train.trainer import Diverged, Interrupted, StopFlag, Trainer, seed_everything

console = Console(highlight=False, soft_wrap=True)


class RowTrainer:
    """Trains the rows a `RunPlan` hands it; shared data sets are built once."""

    def __init__(self, plan: RunPlan, device: Any) -> None:
        self.plan, self.device = plan, device
        self.recipe, self.opts, self.seed, self.dist = plan.recipe, plan.opts, plan.seed, plan.dist
        self.results, self.root, self.say = plan.results, plan.root, plan.say
        self._data: dict[str, Any] = {}
        self.stop = StopFlag()  # installed by the Runner for the whole run
        self.position: tuple[int, int] | None = None  # (this row's number, rows to train), set by the Runner
        self.later: list[RowWork] = []  # what the rows after it will train (the recipe's time estimate)

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
    def load_trained(self, row: Row, num_classes: int) -> nn.Module:
        """The final model of a finished row (its stages' methods applied, weights loaded)."""
        rd = self.plan.finished_run(row)
        if rd is None:
            if (busy := self.plan.busy(row)) is not None:
                raise BvbenchError(f"row {row.name!r} is not finished: it is being trained by another process "
                                   f"({busy}); run this row again when it has finished")
            raise BvbenchError(f"row {row.name!r} has no finished run for profile {self.recipe.profile!r} "
                               f"and seed {self.seed}; run it first (bvbench run {self.recipe.name} --rows {row.name})")
        if not rd.checkpoint_path.exists():
            self.recover_weights(row, rd)
        return build_row_model(row, num_classes, rd.checkpoint())

    def recover_weights(self, row: Row, rd: RunDir) -> None:
        """A finished run whose checkpoint is gone (results are committed without checkpoints) is needed as a
        teacher or initialisation: train the row again, same configuration and seed, in a scratch folder next to
        it and move only the weights over. Its metrics stay as they are; `weights.json` records both results."""
        scratch = RunDir(rd.path.parent / f"{rd.path.name}.weights")
        try:  # the scratch folder's lock also guards the finished run while its weights are put back
            self.plan.claim(row, scratch.path)
        except RunBusy as e:
            raise BvbenchError(f"row {row.name!r}: its weights are being recovered by another process: {e}") from None
        try:
            if not rd.checkpoint_path.exists():
                self._recover_weights(row, rd, scratch)
        finally:
            self.plan.release(scratch.path)

    def _recover_weights(self, row: Row, rd: RunDir, scratch: RunDir) -> None:
        twin = find_identical_run(self.results, rd.path.name, exclude=rd.path, with_checkpoint=True)
        if twin is not None:  # the same run id elsewhere kept (or already recovered) its weights: share them
            if self.dist.main:
                link_or_copy(twin.checkpoint_path, rd.checkpoint_path)
                atomic_write_json(rd.path / "weights.json", {"linked": now(), "reason": "checkpoint.pt was missing",
                                                             "from": str(twin.path)})
            self.dist.barrier()
            self.say(f"[yellow]  {row.name}: checkpoint.pt was missing; taken from the identical run {twin.path}[/]")
            return
        self.say(f"[yellow]  {row.name}: its finished run {rd.path} has no checkpoint.pt (checkpoints are not kept "
                 f"with committed results); training it again with the same configuration and seed to recover "
                 f"its weights[/]")
        ckpt = None
        if scratch.checkpoint_path.exists() and not scratch.done:
            ckpt = self.plan.resume_state(row, scratch)  # None and marked done if only `.done` was missing
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

    def train_row(self, row: Row, rd: RunDir, ckpt: dict[str, Any] | None) -> RunDir:
        """Train and evaluate one row into `rd` (resuming from `ckpt` if given); returns the finished run. A
        signal ends it with InterruptedRun (exit 128 + signal) that says what was saved."""
        try:
            return self._train_row(row, rd, ckpt)
        except Interrupted as e:  # the trainer saved a checkpoint at a step or epoch boundary
            raise InterruptedRun(f"{row.name}: interrupted by {signal_name(self.stop.signal or 2)} ({e}); "
                                 f"checkpoint saved in {rd.path}; {self.resume_hint()}", self.stop.signal or 2) from None
        except Stopped as e:
            raise InterruptedRun(self.stopped_message(row, rd, e), e.signum) from None

    def resume_hint(self) -> str:
        return f"the same command continues it (bvbench run {self.recipe.name}, same options)"

    def stopped_message(self, row: Row, rd: RunDir, e: Stopped) -> str:
        """What a signal that stopped a row at once left behind, in one line."""
        how = f"interrupted by {signal_name(e.signum)}" + (f" and {e.where}" if e.where else "")
        if rd.done:
            return f"{row.name}: finished ({rd.path}), then {how}; later rows did not start; {self.resume_hint()}"
        if rd.checkpoint_path.exists():
            return f"{row.name}: {how}; its last checkpoint is kept in {rd.path}; {self.resume_hint()}"
        return f"{row.name}: {how} before its first checkpoint, nothing to save; {self.resume_hint()}"

    def _train_row(self, row: Row, rd: RunDir, ckpt: dict[str, Any] | None) -> RunDir:
        train_set, info = self.data(row, "train")
        test_loader, test_info = self.test_loader(row)
        self.say(f"[bold]> {self.recipe.name}/{row.name}[/] ({row.label}) on {info.display}, "
                 f"profile {self.recipe.profile}, {len(train_set)} train / {len(test_loader.dataset)} test, "
                 f"device {self.device}" + (f", {self.dist.world} processes" if self.dist.world > 1 else "")
                 + (", resuming" if ckpt else ""))
        torch.set_num_threads(self.plan.ctx.threads_for(row))  # the count in its run id (CPU)
        model, teacher = self.build(row, info.num_classes)
        check_input_size(model, row.data.img_size or info.img_size, f"row {row.name!r}")
        env_path = rd.path / "env.json"
        env = environment(self.device, self.seed, row.data.num_workers)
        logger = RunLogger()
        if self.dist.main:
            try:
                rd.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BvbenchError(f"cannot create the run folder {rd.path}: {e.strerror}") from None
            if not (rd.path / "config.yaml").exists():
                rd.write_config(self.plan.run_config(row, rd.path.name))
            logger = open_loggers(self.opts.loggers, rd.path, self.plan.run_config(row, rd.path.name), env)
            if env_path.exists():
                env["start_time"] = json.loads(env_path.read_text()).get("start_time", env["start_time"])
            atomic_write_json(env_path, env)
        pause_for_tests("setup")  # data and model built, nothing trained yet
        self.dist.barrier()
        t0 = time.perf_counter()
        progress = RowProgress(console, self.position, self.later, disable=not self.dist.main)
        trainer = Trainer(row, model, train_set, test_loader, info.num_classes, self.device, rd.path, self.seed,
                          teacher=teacher, dist=self.dist, progress=progress, log=console.print,
                          wrap=self.dist.wrap, stop=self.stop, logger=logger)
        progress.trainer = trainer
        try:
            with progress:
                model = trainer.fit(resume=ckpt)
            return self._finish_row(row, rd, model, trainer, t0, test_loader, info, test_info, len(train_set), env)
        except Diverged as e:
            if self.dist.main:
                atomic_write_json(rd.path / "diverged.json", {"status": "diverged", "message": str(e), "time": now()})
            kept = ("its last checkpoint (before the divergence) is kept" if rd.checkpoint_path.exists()
                    else "nothing was saved before it")
            raise Diverged(f"{e}; {kept} in {rd.path}") from None
        finally:
            logger.close()

    def _finish_row(self, row: Row, rd: RunDir, model: nn.Module, trainer: Trainer, t0: float,
                    test_loader: DataLoader, info: Any, test_info: Any, n_train: int, env: dict[str, Any]) -> RunDir:
        """Evaluate the trained model, write the finished run (main process) and tell the loggers."""
        train_time = time.perf_counter() - t0 + trainer.time_before  # the earlier parts of a resumed run too
        # the last epoch already evaluated this model on this test set: reuse it (bit-identical)
        logits, targets = trainer.final_eval or predict(model, test_loader, self.device)
        metrics, cm = classification_metrics(logits, targets, info.num_classes, row.eval.topk)
        if self.dist.main:
            metrics.update(complexity_metrics(model, row, fp_macs(row, info.num_classes)))
            metrics["complexity_of"] = "trained model"  # its own size and input; paper tables count the paper's
            with self.stop.deferred():  # a signal now waits for `.done`: the run is finished, then it stops
                self.write_results(rd, row, model, metrics, cm, info, test_info, n_train,
                                   len(test_loader.dataset), train_time, trainer, env,
                                   from_logits(logits, targets, split_indices(test_loader.dataset)))
            trainer.logger.finish(metrics)
        self.dist.barrier()
        return rd

    def write_results(self, rd: RunDir, row: Row, model: nn.Module, metrics: dict[str, Any], cm: Any, info: Any,
                      test_info: Any, n_train: int, n_test: int, train_time: float, trainer: Trainer,
                      env: dict[str, Any], preds: Predictions) -> None:
        """Everything a finished run leaves behind; `.done` last."""
        if rd.done:  # never rewrite a finished run (the folder lock makes this unreachable)
            raise BvbenchError(f"{rd.path} was finished by another process meanwhile; its files are kept")
        write_predictions(rd.path / PREDICTIONS, preds)  # per-image, for paired claims (report.claims)
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
