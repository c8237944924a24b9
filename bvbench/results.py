"""Run folders: results/<recipe>/<row>/<run-id>/ with atomic writes and a `.done` marker written last."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from bvbench.errors import BvbenchError
from bvbench.recipes.schema import Row
from bvbench.threads import thread_info

DONE = ".done"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _storage_bytes(obj: Any) -> int:
    """Bytes of the distinct tensor storages in `obj` (dicts, lists, tuples): about what torch.save writes."""
    seen: dict[int, int] = {}
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            st = x.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        elif isinstance(x, dict):
            stack += list(x.values())
        elif isinstance(x, list | tuple):
            stack += list(x)
    return sum(seen.values())


def _write_failure(e: BaseException, path: Path, need: int) -> BvbenchError | None:
    """The user error for a failed write of `path` (about `need` bytes): a full disk says so, another OS error
    names its reason (a file where a folder should be, no permission); None for other exceptions."""
    import errno
    import shutil

    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    torch_write = isinstance(e, RuntimeError) and any(
        m in str(e) for m in ("inline_container", "PytorchStreamWriter", "file write failed"))
    if not (full or torch_write):
        if not isinstance(e, OSError):
            return None
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else e.strerror or type(e).__name__
        return BvbenchError(f"cannot write {path}: {why}")
    kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    if full or free < need + 2**20:
        return BvbenchError(f"no space left on {path.parent} ({free / 2**20:.1f} MiB free, {path.name} needs about "
                            f"{need / 2**20:.1f} MiB); {kept}; free some space and run again (--resume continues)")
    return BvbenchError(f"cannot write {path}: {str(e).splitlines()[0][:120]}; {kept}")


def _user_error_when_disk_full(write: Callable[..., None]) -> Callable[..., None]:
    """Wrap an atomic writer: a full disk (ENOSPC, or torch's C++ write failure) becomes a one-line BvbenchError."""

    @functools.wraps(write)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        raw = kwargs.get("path") or next(a for a in args if isinstance(a, str | Path))
        try:
            write(*args, **kwargs)
        except (OSError, RuntimeError) as e:
            path = Path(raw)
            obj = next((a for a in [*args, *kwargs.values()] if a is not raw), b"")
            need = len(obj) if isinstance(obj, bytes | str) else _storage_bytes(obj)
            user = _write_failure(e, path, need)
            if user is None:
                raise
            raise user from None

    return wrapper


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@_user_error_when_disk_full
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename, fsync the folder: readers see old or new,
    never half, and a crash right after leaves the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@_user_error_when_disk_full
def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save with the guarantees of `atomic_write_bytes` (temporary file, fsync, rename, fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def pause_for_tests(point: str) -> None:
    """Tests only: with BVBENCH_TEST_PAUSE_AT=<point>[,<point>...] the process stops itself (SIGSTOP) at those
    points, so a test can signal it at an exact moment."""
    if point in os.environ.get("BVBENCH_TEST_PAUSE_AT", "").split(","):
        import signal

        os.kill(os.getpid(), signal.SIGSTOP)


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def safe_child(root: Path, *parts: str) -> Path:
    """root/parts..., refusing names that could escape root (`..`, slashes, absolute paths)."""
    for p in parts:
        if not SAFE_ID.match(p) or ".." in p:
            raise BvbenchError(f"refusing unsafe name {p!r} in a results path")
    out = root.joinpath(*parts).resolve()
    if not out.is_relative_to(root.resolve()):
        raise BvbenchError(f"path {out} escapes the results folder {root}")
    return out


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(device: torch.device, seed: int, workers: int | None = None) -> dict[str, Any]:
    """Everything needed to repeat a run (lm-evaluation-harness style)."""
    import numpy
    import timm
    import torchvision

    import bvbench

    env: dict[str, Any] = {
        "git_sha": git_sha(),
        "bvbench": bvbench.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "numpy": numpy.__version__},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "thread_settings": thread_info(workers),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "seed": seed,
        "argv": sys.argv,
        "hostname": platform.node(),
        "start_time": now(),
    }
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        env["world_size"] = torch.distributed.get_world_size()
    return env


class DataRecord(BaseModel):
    """What a run was trained and tested on (metrics.json `data`)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    display: str | None = None
    source: str | None = None
    train_size: int | None = None
    test_size: int | None = None


class Metrics(BaseModel):
    """metrics.json of a finished run: written and read only through this record. Extra keys (per-block
    complexity, later metrics) are kept; `value(key)` reads any of them by name (a paper column's key)."""

    model_config = ConfigDict(extra="allow")
    recipe: str | None = None
    row: str | None = None
    label: str | None = None
    run_id: str | None = None
    profile: str | None = None
    seed: int | str | None = None
    status: str = "finished"
    data: DataRecord = DataRecord()
    model: str | None = None
    method: str | None = None
    epochs: int | None = None
    device: str | None = None
    world_size: int | None = None
    top1: float | None = None
    top5: float | None = None
    f1: float | None = None
    ops: float | None = None
    size_mb: float | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    reused_from: str | None = None
    git_sha: str | None = None
    _order: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def of(cls, record: dict[str, Any]) -> Metrics:
        """The record of a metrics.json object; `dump` writes its keys back in the same order."""
        m = cls.model_validate(record)
        m._order = list(record)
        return m

    def value(self, key: str) -> Any:
        """The metric named `key` (dotted for nested records: `data.display`), or None."""
        node: Any = self
        for part in key.split("."):
            if isinstance(node, BaseModel):
                node = getattr(node, part, None) if part in type(node).model_fields else (node.model_extra or {}).get(part)
            elif isinstance(node, dict):
                node = node.get(part)
            else:
                return None
        return node

    def dump(self) -> dict[str, Any]:
        """The JSON object to write: the keys that were given, in their order."""
        out = self.model_dump(mode="json", exclude_unset=True)
        return {k: out[k] for k in [*(k for k in self._order if k in out), *(k for k in out if k not in self._order)]}


class RunConfig(BaseModel):
    """config.yaml of a run: which recipe, profile and seed, and the resolved row it ran."""

    model_config = ConfigDict(extra="allow")
    recipe: str | None = None
    profile: str | None = None
    seed: int = 0
    run_id: str | None = None
    data_dir: str | None = None
    row: Row
    reused_from: str | None = None
    identity: dict[str, Any] | None = None  # the run's context (bvbench.runner.identity.identity_record)


@dataclass
class RunDir:
    """One run's folder: written atomically, read through typed records with one error message per failure."""

    path: Path

    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def checkpoint(self) -> Path:
        """The final weights; a BvbenchError when the run kept none."""
        if not self.checkpoint_path.is_file():
            raise BvbenchError(f"{self.path} has no checkpoint.pt (was the run finished?)")
        return self.checkpoint_path

    def config(self) -> RunConfig:
        """config.yaml as a `RunConfig`; a BvbenchError when the folder is not a bvbench run."""
        path = self.path / "config.yaml"
        if not path.is_file():
            raise BvbenchError(f"{self.path} is not a bvbench run folder (no config.yaml)")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.constructor.ConstructorError as e:
            tag = f" {e.problem.split()[-1]}" if e.problem and "tag" in e.problem else ""
            raise BvbenchError(f"{path} cannot be read: it holds a YAML tag{tag} that bvbench does not load (plain "
                               "YAML only)") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise BvbenchError(f"{path} cannot be read ({type(e).__name__})") from None
        if not isinstance(raw, dict):
            raise BvbenchError(f"{path} is a YAML {type(raw).__name__}, not a mapping: it has no `row:` (not a bvbench "
                               "run configuration)")
        if "row" not in raw:
            raise BvbenchError(f"{path} has no `row:` (not a bvbench run configuration)")
        try:
            return RunConfig.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BvbenchError(f"{path} is not a valid bvbench run configuration: {where}: {first['msg']}") from None

    def row(self) -> Row:
        """The resolved row the run trained."""
        return self.config().row

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    def mark_done(self) -> None:
        pause_for_tests("before-done")
        atomic_write_text(self.path / DONE, now() + "\n")

    def metrics(self) -> Metrics:
        """metrics.json as a `Metrics` record; a BvbenchError when it is missing or not a metrics record."""
        path = self.path / "metrics.json"
        try:
            return Metrics.of(json.loads(path.read_text()))
        except FileNotFoundError:
            raise BvbenchError(f"{self.path} has no metrics.json (was the run finished?)") from None
        except (OSError, ValueError, ValidationError) as e:
            raise BvbenchError(f"{path} is not a bvbench metrics record ({type(e).__name__})") from None

    def write_metrics(self, metrics: Metrics) -> None:
        atomic_write_json(self.path / "metrics.json", metrics.dump())


def find_runs(results: Path, recipe: str, row: str | None = None, finished: bool = True) -> list[RunDir]:
    """Run folders of a recipe (optionally one row), oldest first by modification time."""
    base = results / recipe
    if not base.is_dir():
        return []
    rows = [base / row] if row else [p for p in base.iterdir() if p.is_dir()]
    runs = [RunDir(p) for r in rows if r.is_dir() for p in r.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    if finished:
        runs = [r for r in runs if r.done]
    return sorted(runs, key=lambda r: (r.path / "config.yaml").stat().st_mtime)


def find_identical_run(results: Path, run_id: str, exclude: Path | None = None,
                       with_checkpoint: bool = False) -> RunDir | None:
    """A finished run with this run id anywhere under `results` (any recipe, any row): run ids hash the whole
    resolved configuration, so such a run is the same experiment. `with_checkpoint`: only one that kept its
    weights."""
    skip = exclude.resolve() if exclude is not None else None
    for p in sorted(results.glob(f"*/*/{run_id}")):
        rd = RunDir(p)
        if p.resolve() != skip and rd.done and (not with_checkpoint or rd.checkpoint_path.exists()):
            return rd
    return None


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes `src`'s content: a hard link where the file system allows, else an atomic copy."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a killed process with our pid
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def is_temporary(f: Path) -> bool:
    """A writer's temporary file or marker (`.name`, `*.tmp`): never part of what a run folder holds."""
    return f.name.startswith(".") or f.name.endswith(".tmp")


def adopt_run(src: RunDir, dst: Path, record: dict[str, Any], config: dict[str, Any]) -> RunDir:
    """Make `dst` a finished copy of `src` (the checkpoint hard-linked where the file system allows), with
    `record` (recipe, row, label) written over the source's in metrics.json, `config` as its config.yaml and the
    source named in reused.json. Built in a temporary folder and renamed into place: never a half-adopted run."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent if dst.parent.exists()
                                else _mkdir(dst.parent)))
    try:
        for f in src.path.iterdir():
            if f.is_file() and not is_temporary(f):  # `.done` is written last below
                if f.name.startswith("checkpoint"):
                    link_or_copy(f, tmp / f.name)
                else:
                    shutil.copy2(f, tmp / f.name)
        metrics = RunDir(tmp).metrics().model_copy(update={**record, "run_id": dst.name,
                                                           "reused_from": str(src.path)})
        RunDir(tmp).write_metrics(metrics)
        atomic_write_text(tmp / "config.yaml", yaml.safe_dump({**config, "reused_from": str(src.path)},
                                                              sort_keys=False))
        atomic_write_json(tmp / "reused.json", {"from": str(src.path), "time": now()})
        atomic_write_text(tmp / DONE, now() + "\n")
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RunDir(dst)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
