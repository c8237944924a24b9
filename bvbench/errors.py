"""The one exception type for mistakes a user can fix: the CLI prints it in one line and exits 2."""

from __future__ import annotations

WORKER_PREFIX = "Caught "  # how torch's DataLoader re-raises a worker's exception: a message holding a traceback


class BvbenchError(Exception):
    """A user-facing error (bad recipe, unknown name, missing data, corrupt checkpoint...). Raised in a DataLoader
    worker, it arrives in the main process as the same type with the worker's traceback as its message: that is
    reduced to the original one line again."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(WORKER_PREFIX) \
                and "Original Traceback" in args[0]:
            last = [line for line in args[0].splitlines() if line.strip()][-1]
            name, sep, msg = last.partition(": ")
            args = (msg if sep and name.split(".")[-1] == type(self).__name__ else last,)
        super().__init__(*args)


class DataMissingError(BvbenchError):
    """A data set is not where bvbench looks for it; the message says what to do."""


class CorruptDataError(BvbenchError):
    """An image (or other data file) that cannot be decoded; the message names the file."""


class InterruptedRun(BvbenchError):
    """Training stopped on Ctrl-C/SIGTERM after saving a checkpoint; `--resume` continues it."""

    exit_code = 130
