"""One writer per run folder: a lock file beside the folder (`.<run-id>.lock`), created atomically with
O_CREAT|O_EXCL, holding host, pid, start time and a heartbeat that a timer thread renews every HEARTBEAT_S.

A lock whose holder is provably gone (same host, pid dead or reused) is released on the spot; one whose
heartbeat is older than STALE_S (a frozen process, or one on another host) is stale and only `--steal-stale`
takes it over; any other lock is live and its run folder is left alone."""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bvbench.errors import BvbenchError
from bvbench.results import atomic_write_text, now

HEARTBEAT_S = 30.0
STALE_S = 600.0  # ten minutes without a heartbeat
GUARD_STALE_S = 60.0


class RunBusy(BvbenchError):
    """Another process holds (or held, and may still hold) the lock of a run folder."""


def lock_path(run: Path) -> Path:
    return run.parent / f".{run.name}.lock"


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid from the holder), None off Linux."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _proc_start(pid) in (None, start)


@dataclass
class Holder:
    """What a lock file says about its holder."""

    info: dict[str, Any]
    age_s: float  # seconds since the last heartbeat

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        try:
            text, mtime = path.read_text(), path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
            beat = float(info["heartbeat_unix"])
        except (ValueError, KeyError, TypeError):  # being created right now, or damaged: judged by its mtime
            info, beat = {}, mtime
        return cls(info if isinstance(info, dict) else {}, time.time() - beat)

    def gone(self) -> bool:
        """Same host and the holder's process no longer exists, or the holder was an earlier attempt of this
        very Slurm job (a requeued job restarts only after every process of its last attempt was killed)."""
        pid = self.info.get("pid")
        job = os.environ.get("SLURM_JOB_ID")
        if job and self.info.get("slurm_job") == job and (self.info.get("host"), pid) != (platform.node(), os.getpid()):
            return True
        return (self.info.get("host") == platform.node() and isinstance(pid, int)
                and not _pid_alive(pid, self.info.get("proc_start")))

    def describe(self) -> str:
        i = self.info
        who = f"pid {i.get('pid', '?')} on {i.get('host', '?')}, started {i.get('start', '?')}"
        return f"{who}, last heartbeat {self.age_s:.0f} s ago"


class RunLock:
    """The claim of one run folder by this process; `release()` (or leaving the `with`) gives it up."""

    def __init__(self, run: Path) -> None:
        self.run, self.path = run, lock_path(run)
        self.token = secrets.token_hex(8)
        self.info = {"host": platform.node(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                     "start": now(), "run": str(run), "token": self.token,
                     "slurm_job": os.environ.get("SLURM_JOB_ID")}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- acquire
    def acquire(self, steal_stale: bool = False, stale_s: float = STALE_S) -> list[str]:
        """Claim the folder; returns notes on a lock taken over. RunBusy when another holder keeps it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BvbenchError(f"cannot create the run folder {self.run}: {e.strerror}") from None
        notes: list[str] = []
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return notes
            holder = Holder.read(self.path)
            if holder is None:
                continue  # released between our create and our read: try again
            if holder.gone():
                notes.append(f"lock of a process that is gone released ({holder.describe()})")
            elif holder.age_s > stale_s and steal_stale:
                notes.append(f"stale lock taken over ({holder.describe()})")
            elif holder.age_s > stale_s:
                raise RunBusy(f"{self.run} has a stale lock ({holder.describe()}); if that process is gone, "
                              f"pass --steal-stale to take it over")
            else:
                raise RunBusy(f"{self.run} is being written by another process ({holder.describe()})")
            self._remove_if_same(holder)
        raise RunBusy(f"{self.run}: its lock {self.path} keeps changing hands; try again")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise BvbenchError(f"cannot create the run folder's lock {self.path}: {e.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(self._content())
            f.flush()
            os.fsync(f.fileno())
        return True

    def _content(self) -> str:
        t = time.time()
        return json.dumps({**self.info, "heartbeat": now(), "heartbeat_unix": t}, indent=1) + "\n"

    def _remove_if_same(self, holder: Holder) -> None:
        """Delete the judged lock, under a guard file so that two takers never delete each other's new lock."""
        guard = self.path.with_name(self.path.name + ".steal")
        try:
            if time.time() - guard.stat().st_mtime > GUARD_STALE_S:
                guard.unlink(missing_ok=True)  # a taker died in the few lines below
        except FileNotFoundError:
            pass
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise RunBusy(f"{self.run}: another process is taking over its lock right now") from None
        try:
            again = Holder.read(self.path)
            if again is not None and again.info.get("token") == holder.info.get("token"):
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    # ------------------------------------------------------------- heartbeat
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"bvbench-lock-{self.run.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.held():
                return  # taken over (we were frozen past STALE_S): never write over the new holder
            try:
                atomic_write_text(self.path, self._content())
            except OSError:
                pass  # a full disk must not kill training; a missed beat only ages the lock

    def held(self) -> bool:
        h = Holder.read(self.path)
        return h is not None and h.info.get("token") == self.token

    # ------------------------------------------------------------- release
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clean_orphans(run: Path) -> list[str]:
    """Remove temporary files a killed writer left: `.*.tmp` in the run folder, `.<run-id>.*.tmp` (an
    interrupted adoption) beside it and old heartbeat files of its lock. Call only while holding the lock."""
    keep = lock_path(run).name
    found = [*run.glob(".*.tmp")] if run.is_dir() else []
    found += [p for p in run.parent.glob(f".{run.name}.*.tmp") if not p.name.startswith(keep)]
    found += [p for p in run.parent.glob(f".{keep}.*.tmp") if _age(p) > GUARD_STALE_S]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return [p.name for p in found]


def _age(p: Path) -> float:
    try:
        return time.time() - p.stat().st_mtime
    except FileNotFoundError:
        return 0.0
