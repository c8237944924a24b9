"""The one exception type for mistakes a user can fix: the CLI prints it in one line and exits 2."""

from __future__ import annotations


class BvbenchError(Exception):
    """A user-facing error (bad recipe, unknown name, missing data, corrupt checkpoint...)."""

    exit_code = 2


class DataMissingError(BvbenchError):
    """A data set is not where bvbench looks for it; the message says what to do."""


class InterruptedRun(BvbenchError):
    """Training stopped on Ctrl-C/SIGTERM after saving a checkpoint; `--resume` continues it."""

    exit_code = 130
