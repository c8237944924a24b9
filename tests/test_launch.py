"""Launchers: the job plan (teachers first), the local submitit executor end to end, and a real Slurm cluster
(scripts/slurm-local.sh) when one is running here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bvbench.recipes import load_recipe
from bvbench.runner.launch import plan_jobs, waves

SMOKE = ["--profile", "smoke", "--set", "data.name=fake"]


def bvbench(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bvbench", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_gsb_plan_puts_the_teacher_before_its_students() -> None:
    recipe = load_recipe("gsb-cifar100", "paper")
    jobs = plan_jobs(recipe)
    order = [j.row for j in jobs]
    deps = {j.row: j.after for j in jobs}
    assert "teacher" in order
    students = [r.name for r in recipe.rows if r.teacher == "teacher" and r.status == "run"]
    assert students and all(deps[s] == ["teacher"] or "teacher" in deps[s] for s in students)
    for row, after in deps.items():  # every source is planned before the row that needs it
        assert all(order.index(a) < order.index(row) for a in after), row
    level = {j.row: i for i, w in enumerate(waves(jobs)) for j in w}
    assert level["teacher"] == 0 and all(level[s] > 0 for s in students)
    assert all(level[a] < level[r] for r, after in deps.items() for a in after)


def test_plan_of_selected_rows_brings_their_sources() -> None:
    recipe = load_recipe("bitvit-cifar10", "smoke")
    jobs = plan_jobs(recipe, ["bitvit"])
    assert [(j.row, j.after) for j in jobs] == [("vit", []), ("bitvit", ["vit"])]


def test_slurm_launcher_without_sbatch_is_one_line(tmp_path: Path) -> None:
    res = bvbench("run", "bitvit-cifar10", *SMOKE, "--launcher", "slurm", "--out", str(tmp_path / "r"),
                  cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert res.returncode == 2, res.stderr
    assert "sbatch" in res.stderr and "slurm-local.sh" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_local_launcher_runs_the_plan_and_status_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = bvbench("run", "bitvit-cifar10", *SMOKE, "--rows", "bitvit", "--launcher", "local", "--out", str(out),
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    doc = json.loads((out / "bitvit-cifar10" / ".jobs" / "jobs.json").read_text())
    assert [(j["row"], j["after"]) for j in doc["jobs"]] == [("vit", []), ("bitvit", ["vit"])]
    assert all(Path(j["log"]).exists() for j in doc["jobs"])
    st = bvbench("status", "bitvit-cifar10", "--out", str(out), cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    lines = {ln.split()[1]: ln.split()[0] for ln in st.stdout.splitlines() if ln.strip()}
    assert lines == {"vit": "finished", "bitvit": "finished", "resnet18": "unstarted", "vgg16": "unstarted"}
    _assert_teacher_first(out, "vit", "bitvit")


def _assert_teacher_first(out: Path, source: str, student: str) -> None:
    src = next((out / "bitvit-cifar10" / source).glob("*/.done"))
    dst = next((out / "bitvit-cifar10" / student).glob("*/config.yaml"))
    assert src.stat().st_mtime <= dst.stat().st_mtime


def _slurm_up() -> str | None:
    """Why the Slurm test cannot run here, or None when a cluster answers."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (install slurm-wlm; scripts/slurm-local.sh starts a one-node cluster)"
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "sinfo did not answer"
    if res.returncode != 0 or not any(s.strip() in ("idle", "mixed", "allocated") for s in res.stdout.split()):
        return f"no Slurm node up (sinfo: {res.stdout.strip() or res.stderr.strip()}); run scripts/slurm-local.sh"
    return None


@pytest.mark.skipif(_slurm_up() is not None, reason=str(_slurm_up()))
def test_real_slurm_runs_teacher_before_student(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = bvbench("run", "bitvit-cifar10", *SMOKE, "--rows", "bitvit", "--launcher", "slurm", "--time", "0.25",
                  "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    doc = json.loads((out / "bitvit-cifar10" / ".jobs" / "jobs.json").read_text())
    ids = {j["row"]: j["job_id"] for j in doc["jobs"]}
    deadline = time.time() + 240
    states: dict[str, str] = {}
    while time.time() < deadline:
        st = bvbench("status", "bitvit-cifar10", "--out", str(out), cwd=tmp_path)
        states = {ln.split()[1]: ln.split()[0] for ln in st.stdout.splitlines() if ln.strip()}
        if all(states.get(r) in ("finished", "failed") for r in ids):
            break
        time.sleep(3)
    assert {r: states.get(r) for r in ids} == {"vit": "finished", "bitvit": "finished"}, (states, ids)
    _assert_teacher_first(out, "vit", "bitvit")
