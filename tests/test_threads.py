"""Thread defaults never oversubscribe; the CLI sets OMP_WAIT_POLICY before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bvbench.errors import BvbenchError
from bvbench.threads import resolve_threads, usable_cores


def test_default_fits_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BVBENCH_THREADS", raising=False)
    assert resolve_threads(None) == usable_cores()
    assert resolve_threads(None, workers=usable_cores() + 3) == 1
    assert resolve_threads(None, workers=1) == max(1, usable_cores() - 1)


def test_env_and_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BVBENCH_THREADS", "3")
    assert resolve_threads(None) == 3
    assert resolve_threads(2) == 2
    monkeypatch.setenv("BVBENCH_THREADS", "many")
    with pytest.raises(BvbenchError, match="whole number"):
        resolve_threads(None)
    with pytest.raises(BvbenchError, match="at least 1"):
        resolve_threads(0)


def test_cli_sets_wait_policy_before_torch() -> None:
    code = ("import sys, os; import bvbench.cli; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
