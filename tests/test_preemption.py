"""Preemption (issue 16.2), real processes: SIGUSR1 saves at the next step and exits with the requeue status; a
plain rerun continues an unfinished run (no --resume); --restart moves it aside; submitit requeues the job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from bvbench.errors import REQUEUE_EXIT

RUN = ["--device", "cpu", "--set", "train.epochs=4", "--set", "train.batch_size=16", "--set", "data.num_workers=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bvbench", "run", str(recipe), "--out", str(out), *RUN, *extra]


def _wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(path_glob.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"nothing matched {pattern} in {path_glob}")


def test_sigusr1_saves_and_exits_138_then_a_plain_rerun_continues_and_restart_moves_it_aside(
        tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = subprocess.Popen(_cmd(tiny_recipe, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)
    _wait_for(out / "tiny" / "fp", "*/history.csv", proc)  # epoch 1 done: workers up, training in epoch 2
    os.killpg(proc.pid, signal.SIGUSR1)  # as Slurm signals the job's processes (loader workers ignore it)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == REQUEUE_EXIT == 138, err
    assert "SIGUSR1" in err and "Traceback" not in err and "the same command continues it" in err, err
    (run,) = list((out / "tiny" / "fp").iterdir())
    fit = torch.load(run / "checkpoint.pt", weights_only=True)["fit"]
    assert fit["epoch"] >= 1 and not (run / ".done").exists()
    unfinished = tmp_path / "copy"
    shutil.copytree(out, unfinished)  # the same unfinished run, for --restart below

    res = subprocess.run(_cmd(tiny_recipe, out), capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "continuing its unfinished run" in res.stdout and "--restart discards it" in res.stdout
    assert (run / ".done").exists() and list((out / "tiny" / "fp").iterdir()) == [run]  # no -r2 duplicate
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4

    done_before = (run / ".done").read_text()
    res = subprocess.run(_cmd(tiny_recipe, out, "--restart"), capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0 and "finished, kept" in res.stdout, res.stdout + res.stderr[-2000:]
    assert (run / ".done").read_text() == done_before  # a finished run is never discarded

    res = subprocess.run(_cmd(tiny_recipe, unfinished, "--restart"), capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (aside,) = list((unfinished / "tiny" / "fp" / ".discarded").iterdir())
    assert aside.name.startswith(run.name) and (aside / "checkpoint.pt").exists()  # moved, not deleted
    fresh = unfinished / "tiny" / "fp" / run.name
    assert (fresh / ".done").exists() and "moved to" in res.stdout and "continuing" not in res.stdout


def test_the_local_launcher_requeues_a_job_stopped_by_sigusr1_and_the_next_attempt_finishes(
        tiny_recipe: Path, tmp_path: Path) -> None:
    """submitit's local executor restarts a task that asks for requeue, as Slurm does with `scontrol requeue`."""
    from bvbench.runner.lock import Holder, lock_path

    out = tmp_path / "res"
    proc = subprocess.Popen(_cmd(tiny_recipe, out, "--launcher", "local"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    hist = _wait_for(out / "tiny" / "fp", "*/history.csv", proc)
    holder = Holder.read(lock_path(hist.parent))
    pid = int(holder.info["pid"]) if holder is not None else 0
    assert pid and pid != proc.pid  # the job's own process holds the run folder
    os.kill(pid, signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr[-3000:]
    run = hist.parent
    assert (run / ".done").exists() and len((run / "history.csv").read_text().splitlines()) == 1 + 4
    logs = "".join(p.read_text() for p in (out / "tiny" / ".jobs" / "logs").glob("*_log.*"))
    assert "Requeued job" in logs and "continuing its unfinished run" in logs, logs[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
