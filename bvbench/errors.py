"""The one exception type for mistakes a user can fix: the CLI prints it in one line and exits 2."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator

_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class BvbenchError(Exception):
    """A user-facing error (bad recipe, unknown name, missing data, corrupt checkpoint...). Raised in a DataLoader
    worker, it arrives in the main process as the same type with the worker's traceback as its message: that is
    reduced to the original one line again."""

    exit_code = 2

    def __init__(self, msg: object = "", *args: object) -> None:
        # Raised in a DataLoader worker, the error comes back as the same class built from "Caught ... Original
        # Traceback ..." (torch's ExceptionWrapper.reraise): keep only the original one-line message.
        if isinstance(msg, str) and _WORKER.match(msg):
            last = msg.rstrip().splitlines()[-1]
            msg = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(msg, *args)


class DataMissingError(BvbenchError):
    """A data set is not where bvbench looks for it; the message says what to do."""


class CorruptDataError(BvbenchError):
    """An image (or other data file) that cannot be decoded; the message names the file."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"


REQUEUE_EXIT = 128 + signal.SIGUSR1
"""The exit status of a run stopped by SIGUSR1 (Slurm's signal before the time limit or on preemption) once its
checkpoint is saved: requeue the job (`scontrol requeue`, or `RequeueExit=138` in slurm.conf) and the same
command continues the run. The submitit launcher requeues it itself."""


class InterruptedRun(BvbenchError):
    """Training stopped on Ctrl-C/SIGTERM/SIGUSR1 after saving what it could; the same command continues it. Exit
    code 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 138 (`REQUEUE_EXIT`) for SIGUSR1."""

    exit_code = 130

    def __init__(self, msg: object = "", signum: int = signal.SIGINT) -> None:
        super().__init__(msg)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class Stopped(BaseException):  # noqa: N818 - a signal, not an error
    """A signal stops the process at once (not at a step boundary): a BaseException, so that no `except
    Exception` on the way takes it for a failure of what it interrupted (a torch.load, a download)."""

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(signum, where)
        self.signum, self.where = int(signum), where
        self.exit_code = 128 + self.signum


def _stop_now(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` in the main thread while the block runs (a run installs its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, _stop_now)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stop_children() -> None:
    """Kill the worker processes a stopped or failed command leaves behind (DataLoader workers: they hold no
    state). Python's exit handler would otherwise wait for them for ever: the SIGTERM it sends can land on a
    thread torch started in the worker, where it is dropped (bvbench.data.loader)."""
    import multiprocessing

    children = multiprocessing.active_children()
    if not children:
        return
    if threading.current_thread() is threading.main_thread():  # torch's SIGCHLD handler would report the
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # kill as a failed worker
    for child in children:
        child.kill()
    for child in children:
        child.join(5)
