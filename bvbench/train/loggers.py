"""Experiment loggers (`bvbench run --logger csv|tensorboard|wandb`, several allowed): per-step loss, lr and
throughput, per-epoch metrics, the final metrics, the resolved config and the environment, under the run
folder's `logs/`. `history.csv` is written whatever the loggers.

Steps are global: counted over the epochs of every stage, so that a resumed run continues its curves (the steps a
run repeats after resuming from a mid-epoch checkpoint replace the ones logged before it stopped).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from bvbench.errors import BvbenchError
from bvbench.results import atomic_write_text

LOGGERS = ("csv", "tensorboard", "wandb")
NEEDS = {"tensorboard": ("tensorboard", "pip install 'bvbench[tensorboard]'"),
         "wandb": ("wandb", "pip install 'bvbench[wandb]'")}
STEP_FIELDS = ["step", "stage", "epoch", "batch", "loss", "lr", "images_per_s"]


def check_loggers(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names without repeats; a BvbenchError for an unknown one or one whose package is not installed."""
    out: list[str] = []
    for name in names:
        if name not in LOGGERS:
            raise BvbenchError(f"unknown logger {name!r}: choose {', '.join(LOGGERS)}")
        if name in NEEDS:
            try:
                importlib.import_module(NEEDS[name][0])
            except ImportError:
                raise BvbenchError(f"--logger {name} needs the {NEEDS[name][0]} package: {NEEDS[name][1]}") from None
        if name not in out:
            out.append(name)
    return out


class RunLogger:
    """One backend; this base class logs nothing. `start` is called once training is placed (its global step),
    `finish` with the run's final metrics, `close` however the run ends."""

    def start(self, step: int) -> None:
        """Training starts (or resumes) at global step `step`."""

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        """One optimizer step: `STEP_FIELDS` (stage, epoch, batch, loss, lr, images_per_s)."""

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        """One finished epoch: the `history.csv` record."""

    def flush(self) -> None:
        """Write out what is buffered (with every checkpoint: a resumed run then misses no logged step)."""

    def finish(self, metrics: dict[str, Any]) -> None:
        """The finished run's metrics (metrics.json)."""

    def close(self) -> None:
        """Flush and release files and processes."""


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of `values` (no bools, no nested records)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class CsvLogger(RunLogger):
    """logs/steps.csv (one line per step) and logs/epochs.csv; config and environment are the run folder's
    config.yaml and env.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, Any] = {}

    def start(self, step: int) -> None:
        from bvbench.train.trainer import HISTORY_FIELDS  # the trainer imports this module

        self.folder.mkdir(parents=True, exist_ok=True)
        for name, fields in (("steps", STEP_FIELDS), ("epochs", ["step", *HISTORY_FIELDS])):
            path = self.folder / f"{name}.csv"
            kept = _rows_upto(path, step)
            atomic_write_text(path, _csv_text(fields, kept))
            self._files[name] = (path.open("a", newline=""), fields)

    def _write(self, name: str, row: dict[str, Any]) -> None:
        f, fields = self._files[name]
        csv.DictWriter(f, fields, extrasaction="ignore").writerow({k: _cell(row.get(k)) for k in fields})

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        self._write("steps", {"step": step, **values})

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        self._write("epochs", {"step": step, **record})
        self.flush()

    def flush(self) -> None:
        for f, _ in self._files.values():
            f.flush()

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files = {}


def _rows_upto(path: Path, step: int) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]


def _csv_text(fields: list[str], rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class TensorBoardLogger(RunLogger):
    """logs/tensorboard/: scalars train/* (per step), epoch/* (per epoch), final/*; texts config, environment."""

    def __init__(self, folder: Path, config: dict[str, Any], env: dict[str, Any]) -> None:
        self.folder, self.config, self.env = folder, config, env
        self.writer: Any = None

    def start(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.folder), purge_step=step + 1 if step else None)
        self.step = step
        self.writer.add_text("config", _code(yaml.safe_dump(self.config, sort_keys=False)), step)
        self.writer.add_text("environment", _code(json.dumps(self.env, indent=1, default=str)), step)

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        self.step = step
        for k, v in scalars({k: values[k] for k in ("loss", "lr", "images_per_s") if k in values}).items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        for k, v in scalars(record).items():
            self.writer.add_scalar(f"epoch/{k}", v, step)
        self.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def finish(self, metrics: dict[str, Any]) -> None:
        for k, v in scalars(metrics).items():
            self.writer.add_scalar(f"final/{k}", v, self.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _code(text: str) -> str:
    """Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


class WandbLogger(RunLogger):
    """Weights & Biases, files under logs/wandb/ (WANDB_MODE=offline: no account or network; `wandb sync` later).
    Project $WANDB_PROJECT (default bvbench); a resumed run continues the same W&B run (logs/wandb_id)."""

    def __init__(self, folder: Path, name: str, group: str, config: dict[str, Any], env: dict[str, Any]) -> None:
        self.folder, self.name, self.group, self.config, self.env = folder, name, group, config, env
        self.run: Any = None

    def start(self, step: int) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        id_file = self.folder / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)
        atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bvbench"), dir=str(self.folder),
                              name=self.name, group=self.group, id=run_id, resume="allow",
                              config={**self.config, "environment": self.env})

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        self.run.log({f"train/{k}": v for k, v in scalars(values).items() if k in ("loss", "lr", "images_per_s")},
                     step=step)

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        self.run.log({f"epoch/{k}": v for k, v in scalars(record).items()}, step=step)

    def finish(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in scalars(metrics).items()})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Loggers(RunLogger):
    """Several backends as one."""

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = loggers

    def start(self, step: int) -> None:
        for lg in self.loggers:
            lg.start(step)

    def log_step(self, step: int, values: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_step(step, values)

    def log_epoch(self, step: int, record: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_epoch(step, record)

    def flush(self) -> None:
        for lg in self.loggers:
            lg.flush()

    def finish(self, metrics: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.finish(metrics)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def open_loggers(names: list[str], run_dir: Path, config: dict[str, Any], env: dict[str, Any]) -> Loggers:
    """The loggers `names` for the run folder `run_dir` (nothing is written before `start`)."""
    logs = run_dir / "logs"
    made: list[RunLogger] = []
    for name in check_loggers(names):
        if name == "csv":
            made.append(CsvLogger(logs))
        elif name == "tensorboard":
            made.append(TensorBoardLogger(logs / "tensorboard", config, env))
        else:
            made.append(WandbLogger(logs, f"{config.get('recipe')}/{config.get('row', {}).get('name')}/"
                                          f"{run_dir.name}", str(config.get("recipe")), config, env))
    return Loggers(made)
