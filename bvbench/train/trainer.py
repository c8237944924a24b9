"""The training loop: stages, distillation, mixed precision, per-epoch checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bvbench import methods
from bvbench.data.loader import seed_worker, shutdown_workers
from bvbench.errors import BvbenchError, Stopped, signal_name
from bvbench.evaluate.metrics import predict, topk_accuracy
from bvbench.models import is_distilled
from bvbench.quant.qattention import attention_maps, capturable
from bvbench.recipes.schema import Row, StageConfig, batch_split, checkpoint_interval
from bvbench.results import atomic_torch_save, atomic_write_text, pause_for_tests
from bvbench.train.loggers import RunLogger
from bvbench.train.losses import ClassificationLoss
from bvbench.train.schedule import build_optimizer, effective_lr, lr_at, set_lr

HISTORY_FIELDS = ["stage", "epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1",
                  "images_per_s", "epoch_time_s"]


class Interrupted(Exception):
    """Ctrl-C / SIGTERM arrived; a checkpoint was saved at the step boundary."""


class Diverged(Exception):
    """The loss became NaN or Inf."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    st = np.random.get_state()
    out = {"torch": torch.get_rng_state(), "numpy": [st[0], torch.from_numpy(st[1].astype(np.int64)), *st[2:]],
           "python": _listify(random.getstate())}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, tuple | list) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    name, keys, *rest = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuplify(st["python"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded by rank, that can start part-way (exact mid-epoch resume)."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        idx = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        per = math.ceil(n / world)
        idx = (idx + idx[: per * world - n])[rank::world]  # pad so every rank gets as many samples
        self.indices = idx[start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PositionedSampler(Sampler[tuple[int, int]]):
    """One sampler for a persistent loader, placed at an epoch and a batch before each pass; yields
    (epoch key, index) so that `SeededSamples` seeds every sample's transform from (seed, epoch, index)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.key, self.inner = 0, EpochSampler(n, seed, 0, rank=rank, world=world)

    def place(self, key: int, start: int) -> None:
        self.key = key
        self.inner = EpochSampler(self.n, self.seed, key, start=start, rank=self.rank, world=self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.key, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class SeededSamples(Dataset):
    """Item (key, i) is `base[i]` with torch, numpy and `random` seeded from (seed, key, i): the augmentation of a
    sample depends on neither the worker count nor where a run was interrupted. In the main process
    (num_workers=0) the global random states are put back afterwards (dropout and mixup draw from them)."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        key, i = item
        s = (self.seed * 1_000_003 + key) * 10_000_019 + i
        if torch.utils.data.get_worker_info() is not None:
            return self._seeded(s, i)
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            return self._seeded(s, i)
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])

    def _seeded(self, s: int, i: int) -> Any:
        # The CPU generator only, which the transforms draw from: torch.manual_seed would also queue a lazy seed
        # call with a formatted stack for every accelerator backend not yet initialised (~10 ms and a few KiB that
        # are never freed, per sample).
        torch.default_generator.manual_seed(s % 2**63)
        np.random.seed(s % 2**32)
        random.seed(s)
        return self.base[i]


@dataclass
class Dist:
    """Distributed context (a single process when world == 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def max_over_ranks(self, value: int, device: torch.device) -> int:
        """The largest `value` of all ranks (an all-reduce of one integer; itself alone)."""
        if self.world <= 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())


@dataclass
class EpochSums:
    """Running totals of the epoch in progress. Step checkpoints keep them, so the history row of an epoch
    resumed mid-way covers the whole epoch, not only the steps after the resume."""

    seen: int = 0
    correct: int = 0
    loss_sum: float = 0.0
    n_batches: int = 0
    time_s: float = 0.0  # training seconds of this epoch so far


@dataclass
class FitState:
    """Where training stands; saved in every checkpoint."""

    stage: int = 0
    epoch: int = 0  # epoch within the stage
    step: int = 0  # batch within the epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
"""Ctrl-C, SIGTERM and SIGUSR1 (Slurm's signal before the time limit or on preemption) stop a run the same way."""


class StopFlag:
    """SIGINT/SIGTERM/SIGUSR1 during a run. Inside `deferred()` (the training loop, writing a finished run) a signal is a
    flag read at the next safe point (a step boundary, the end of an epoch or of the block); elsewhere (building
    data and models, the final evaluation: nothing is half-written) it stops at once with `Stopped`. A second
    signal always stops at once. Installed once per run; nested `installed()` calls reuse it."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._deferred = 0
        self._active = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        import threading

        if self._active or threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in STOP_SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None:
                raise Stopped(self.signal, f"a second signal ({signal_name(signum)})")
            self.signal = signum
            if not self._deferred:
                raise Stopped(signum)

        for s in old:
            signal.signal(s, handler)
        self._active = True
        try:
            yield self
        finally:
            self._active = False
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a signal until the block ends (or the block reads `signal` itself), then stop."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if self.signal is not None and not self._deferred:
            raise Stopped(self.signal)


class Trainer:
    """Trains one recipe row through its stages; the runner builds data, model and teacher."""

    def __init__(
        self,
        row: Row,
        model: nn.Module,
        train_set: Dataset,
        test_loader: DataLoader | None,
        num_classes: int,
        device: torch.device,
        out_dir: Path,
        seed: int,
        teacher: nn.Module | None = None,
        dist: Dist | None = None,
        progress: Any = None,
        log: Callable[[str], None] = print,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        stop: StopFlag | None = None,
        logger: RunLogger | None = None,
    ) -> None:
        self.row, self.cfg = row, row.train
        self.model = model
        self.train_set, self.test_loader = train_set, test_loader
        self.num_classes = num_classes
        self.device, self.out_dir, self.seed = device, out_dir, seed
        self.teacher = teacher.eval() if teacher is not None else None
        self.loss_fn = ClassificationLoss(row.train.label_smoothing, row.distill)
        if self.loss_fn.needs_attention and self.teacher is not None:
            capturable(self.teacher)  # ranking-aware distillation reads the teacher's attention maps
        self.dist = dist or Dist()
        self.micro, self.accum = batch_split(self.cfg, self.dist.world)  # per forward pass, per optimizer step
        self.progress = progress
        self.log = log
        self.wrap = wrap or (lambda m: m)
        self.stages: list[StageConfig] = row.resolved_stages()
        self.state = FitState()
        self.stop = stop or StopFlag()
        self.logger = logger or RunLogger()  # experiment loggers (main process only); the base logs nothing
        self.amp = self.cfg.amp and device.type == "cuda"
        self.mixup = self._mixup()
        self.time_before = 0.0  # training seconds of the earlier parts of a resumed run (from the checkpoint)
        self._t0 = time.perf_counter()
        self._train_loader: DataLoader | None = None
        self.final_eval: tuple[torch.Tensor, torch.Tensor] | None = None  # the last epoch's test logits, targets
        self.ckpt_steps, self.ckpt_seconds = checkpoint_interval(self.cfg.checkpoint_every)
        self._since_save, self._saved_t = 0, time.monotonic()  # steps and time since the last save

    # ------------------------------------------------------------------ helpers
    def _mixup(self) -> Any:
        a = self.cfg.augment
        if a.mixup <= 0 and a.cutmix <= 0:
            return None
        from timm.data import Mixup

        return Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, label_smoothing=self.cfg.label_smoothing,
                     num_classes=self.num_classes)

    def _loader(self, epoch: int, start_step: int) -> DataLoader:
        """The training loader of micro-batches (built once; its workers persist across epochs), placed at this
        epoch and optimizer step."""
        if self._train_loader is None:
            nw = self.row.data.num_workers
            sampler = PositionedSampler(len(self.train_set), self.seed,  # type: ignore[arg-type]
                                        rank=self.dist.rank, world=self.dist.world)
            self._train_loader = DataLoader(
                SeededSamples(self.train_set, self.seed), batch_size=self.micro, sampler=sampler,
                num_workers=nw, drop_last=self.mixup is not None, pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(self.seed * 7919),
                worker_init_fn=seed_worker if nw else None, persistent_workers=nw > 0)
        self._train_loader.sampler.place(self.state.stage * 10_000 + epoch,  # type: ignore[attr-defined]
                                         start_step * self.micro * self.accum)
        return self._train_loader

    def close_loader(self) -> None:
        """Stop the persistent training workers."""
        shutdown_workers(getattr(self._train_loader, "_iterator", None))
        self._train_loader = None

    def micro_batches_per_epoch(self) -> int:
        """Forward passes of a whole epoch on this process (a partial last one dropped with mixup)."""
        n = math.ceil(len(self.train_set) / self.dist.world)  # type: ignore[arg-type]
        return n // self.micro if self.mixup is not None else math.ceil(n / self.micro)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (`accum` micro-batches each; the last may have fewer without mixup)."""
        m = self.micro_batches_per_epoch()
        steps = m // self.accum if self.mixup is not None else math.ceil(m / self.accum)
        if self.cfg.max_steps_per_epoch:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        return max(steps, 1)

    def global_step(self) -> int:
        """Optimizer steps done so far, over every stage (the loggers' x axis)."""
        epochs = sum(s.epochs or 0 for s in self.stages[: self.state.stage]) + self.state.epoch
        return epochs * self.steps_per_epoch() + self.state.step

    def _enter_stage(self, i: int) -> None:
        stage = self.stages[i]
        assert stage.method is not None
        methods.apply(self.model, stage.method)
        self.model.to(self.device)
        if is_distilled(self.model):
            self.model.set_distilled_training(self.row.distill.kind != "none" and self.teacher is not None)
        self.net = self.wrap(self.model)
        self._no_sync = getattr(self.net, "no_sync", None)  # DDP: no gradient all-reduce on a step's first passes
        if self.cfg.compile:  # the state dict, hooks and evaluation keep using the plain module
            self.net = torch.compile(self.net)
        self.final_eval = None
        self.opt = build_optimizer(self.model, self.cfg, effective_lr(self.cfg, stage.lr or self.cfg.lr))

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "fit": {"stage": self.state.stage, "epoch": self.state.epoch, "step": self.state.step,
                    "history": self.state.history, "sums": asdict(self.state.sums)},
            "rng": rng_state(),
            "row": self.row.name,
            "train_time_s": self.train_time(),
        }

    def train_time(self) -> float:
        """Seconds spent training this run so far, every resumed part included."""
        return self.time_before + time.perf_counter() - self._t0

    def save(self) -> None:
        self._since_save, self._saved_t = 0, time.monotonic()
        if self.dist.main:
            self.logger.flush()  # every step up to this checkpoint is on disk before it
            atomic_torch_save(self.checkpoint_state(), self.out_dir / "checkpoint.pt")

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Resume from a training checkpoint: re-enter its stage, then load every state."""
        fit = ckpt["fit"]
        for i in range(fit["stage"] + 1):
            self.state.stage = i
            self._enter_stage(i)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise BvbenchError(f"checkpoint in {self.out_dir} does not match this row's model: {e}") from None
        self.state = FitState(fit["stage"], fit["epoch"], fit["step"], list(fit["history"]),
                              EpochSums(**fit.get("sums", {})))  # checkpoints before the sums: none
        set_rng_state(ckpt["rng"])
        self.time_before = float(ckpt.get("train_time_s", 0.0))

    def _checkpoint_due(self) -> bool:
        """`train.checkpoint_every`: N steps or M minutes since the last save."""
        if self.ckpt_steps is not None and self._since_save >= self.ckpt_steps:
            return True
        return self.ckpt_seconds is not None and time.monotonic() - self._saved_t >= self.ckpt_seconds

    def write_history(self) -> None:
        if not self.dist.main:
            return
        lines = [",".join(HISTORY_FIELDS)]
        for h in self.state.history:
            lines.append(",".join(_fmt(h.get(k)) for k in HISTORY_FIELDS))
        atomic_write_text(self.out_dir / "history.csv", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ loop
    def fit(self, resume: dict[str, Any] | None = None) -> nn.Module:
        """Train every stage; returns the trained (unwrapped) model."""
        self._t0 = time.perf_counter()
        if resume is not None:
            self.restore(resume)
        else:
            seed_everything(self.seed)
            self._enter_stage(0)
        with self.stop.installed(), self.stop.deferred(), self._workers_stopped():
            self.logger.start(self.global_step())
            self._stages()
        return self.model

    def _stages(self) -> None:
        """Every remaining epoch of every remaining stage, saving after each."""
        while self.state.stage < len(self.stages):
            stage = self.stages[self.state.stage]
            while self.state.epoch < (stage.epochs or 0):
                self._epoch(stage)
                self.state.epoch += 1
                self.state.step = 0
                self.state.sums = EpochSums()
                self.save()
                self._stop_if_signalled(f"after epoch {self.state.epoch} of stage {stage.name}")
            self.state.stage += 1
            self.state.epoch = 0
            if self.state.stage < len(self.stages):
                self._enter_stage(self.state.stage)
                self.save()

    def _stop_if_signalled(self, where: str) -> None:
        """A signal that arrived during an epoch's evaluation stops the run once its checkpoint is saved."""
        if self._agreed_signal() is not None:
            pause_for_tests("stopping")
            raise Interrupted(where)

    @contextlib.contextmanager
    def _workers_stopped(self) -> Iterator[None]:
        """However training ends, the training loader's (persistent) worker processes are shut down."""
        try:
            yield
        finally:
            self.close_loader()

    def _epoch(self, stage: StageConfig) -> None:
        st = self.state
        spe = self.steps_per_epoch()
        desc = f"{self.row.name} [{stage.name}] epoch {st.epoch + 1}/{stage.epochs}"
        self.net.train()
        batches = iter(self._loader(st.epoch, st.step))  # persistent workers: they live until training ends
        task = None
        if self.progress is not None and self.dist.main:
            task = self.progress.add_task(desc, total=spe, completed=st.step, loss=float("nan"), acc=float("nan"), ips=0.0)
        if st.step == 0:
            st.sums = EpochSums()
        sums = st.sums  # a resumed epoch goes on from the totals of its first part
        t0 = time.perf_counter() - sums.time_s
        t_last = time.perf_counter()
        while st.step < spe:
            step = self._optimizer_step(stage, batches, spe)
            if step is None:
                break
            loss, seen, lr = step
            sums.time_s = time.perf_counter() - t0
            st.step += 1
            t_last = self._log_step(stage, loss, lr, seen, t_last)
            if task is not None:
                self.progress.update(task, advance=1, loss=sums.loss_sum / sums.n_batches,
                                     acc=sums.correct / sums.seen, ips=sums.seen / max(sums.time_s, 1e-9))
            self._after_step(stage)
        self._end_epoch(stage, desc, time.perf_counter() - t0, task)

    def _optimizer_step(self, stage: StageConfig, batches: Iterator[Any], spe: int) -> tuple[float, int, float] | None:
        """One optimizer step over its micro-batches (gradients accumulated, DDP synchronising on the last one
        only); returns (mean loss, images, lr), or None when the loader has nothing left."""
        st, sums = self.state, self.state.sums
        n_micro = min(self.accum, self.micro_batches_per_epoch() - st.step * self.accum)
        lr = lr_at(st.epoch * spe + st.step, spe * (stage.epochs or 0), spe, self.cfg,
                   effective_lr(self.cfg, stage.lr or self.cfg.lr))
        set_lr(self.opt, lr)
        self.opt.zero_grad(set_to_none=True)
        losses, seen = [], 0
        for k in range(max(n_micro, 0)):
            batch = next(batches, None)
            if batch is None:
                break
            x, y = (t.to(self.device, non_blocking=True) for t in batch)
            last = k == n_micro - 1
            with contextlib.nullcontext() if last or self._no_sync is None else self._no_sync():
                logits, loss = self._forward(stage, x, y)
                (loss / n_micro if n_micro > 1 else loss).backward()  # the mean over the step's images
            losses.append(loss.item())
            sums.correct += int((logits.argmax(1) == y).sum().item())
            sums.seen += x.shape[0]
            sums.loss_sum += losses[-1]
            sums.n_batches += 1
            seen += x.shape[0]
        if not losses:
            return None
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return sum(losses) / len(losses), seen, lr

    def _forward(self, stage: StageConfig, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and loss of one micro-batch (mixup, distillation and attention maps applied)."""
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            maps = self.loss_fn.needs_attention and self.teacher is not None
            with attention_maps(self.model, enabled=maps) as s_maps:
                out = self.net(x)
            t_logits = None
            if self.teacher is not None and self.row.distill.kind != "none":
                with torch.no_grad(), attention_maps(self.teacher, enabled=maps) as t_maps:
                    t_logits = self.teacher(x).float()
            loss = self.loss_fn(out, target, t_logits, (t_maps, s_maps) if maps else None)
        if not torch.isfinite(loss):
            st = self.state
            raise Diverged(f"loss is {loss.item()} at stage {stage.name}, epoch {st.epoch + 1}, step {st.step + 1}")
        return (out[0] if isinstance(out, tuple) else out), loss

    def _after_step(self, stage: StageConfig) -> None:
        """A step checkpoint when due; a signal (on any rank: they agree) saves and stops at this same step."""
        self._since_save += 1
        if self._agreed_signal() is not None:
            pause_for_tests("stopping")
            self.save()
            st = self.state
            raise Interrupted(f"stopped at stage {stage.name}, epoch {st.epoch + 1}, step {st.step}")
        if self._checkpoint_due():
            self.save()

    def _agreed_signal(self) -> int | None:
        """The stop signal as every rank sees it: the largest signal number any rank received (0: none), so all
        stop at the same step and exit with the same status."""
        sig = self.dist.max_over_ranks(self.stop.signal or 0, self.device)
        if sig:
            self.stop.signal = sig
        return sig or None

    def _end_epoch(self, stage: StageConfig, desc: str, elapsed: float, task: Any) -> None:
        """Evaluate, append the epoch's history row, tell the loggers and print it (main process)."""
        st, sums = self.state, self.state.sums
        rec: dict[str, Any] = {"stage": stage.name, "epoch": st.epoch + 1, "lr": self.opt.param_groups[0]["lr"],
                               "train_loss": sums.loss_sum / max(sums.n_batches, 1),
                               "train_top1": sums.correct / max(sums.seen, 1),
                               "images_per_s": sums.seen * self.dist.world / max(elapsed, 1e-9), "epoch_time_s": elapsed}
        if self.test_loader is not None:
            logits, targets = predict(self.model, self.test_loader, self.device, self.amp)
            rec["test_loss"] = nn.functional.cross_entropy(logits, targets).item()
            rec["test_top1"] = topk_accuracy(logits, targets, (1,))["top1"]
            self.final_eval = (logits, targets) if not self.amp else None
            self.net.train()
        if task is not None:
            self.progress.remove_task(task)
        st.history.append(rec)
        self.write_history()
        self.logger.log_epoch(self.global_step(), rec)
        if self.dist.main:
            test = f" test_top1 {rec['test_top1']:.4f}" if "test_top1" in rec else ""
            self.log(f"  {desc}: loss {rec['train_loss']:.4f} train_top1 {rec['train_top1']:.4f}{test} "
                     f"({rec['images_per_s']:.0f} img/s, {elapsed:.1f} s)")

    def _log_step(self, stage: StageConfig, loss: float, lr: float, batch: int, since: float) -> float:
        """One step to the loggers (throughput: this step's images over the time since the last one)."""
        t = time.perf_counter()
        self.logger.log_step(self.global_step(), {
            "stage": stage.name, "epoch": self.state.epoch + 1, "batch": self.state.step, "loss": loss, "lr": lr,
            "images_per_s": batch * self.dist.world / max(t - since, 1e-9)})
        return t


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
