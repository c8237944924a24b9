"""Real multi-process runs (gloo, CPU): a 2-process run with `train.global_batch` is the 1-process run with
gradient accumulation (same id, same numbers within float tolerance); a signal that reaches one rank stops every
rank at the same step, with one checkpoint and one exit status, and the same command continues it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bvbench.errors import REQUEUE_EXIT

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = Path(sys.executable).with_name("torchrun")
GLOBAL = ["--device", "cpu", "--threads", "1", "--set", "train.global_batch=32", "--set", "train.batch_size=16",
          "--set", "train.max_steps_per_epoch=8"]


def _finished(out: Path) -> Path:
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if (p / ".done").exists()]
    return run


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_two_processes_with_global_batch_are_the_one_process_run_with_accumulation(tiny_recipe: Path,
                                                                                   tmp_path: Path) -> None:
    base = ["run", str(tiny_recipe), *GLOBAL]
    one = subprocess.run([sys.executable, "-m", "bvbench", *base, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "bvbench", *base,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _finished(tmp_path / "one"), _finished(tmp_path / "two")
    assert a.name == b.name  # the same run id
    ia = yaml.safe_load((a / "config.yaml").read_text())["identity"]
    ib = yaml.safe_load((b / "config.yaml").read_text())["identity"]
    assert (ia["world_size"], ia["batch_per_process"], ia["accum_steps"]) == (1, 16, 2)
    assert (ib["world_size"], ib["batch_per_process"], ib["accum_steps"]) == (2, 16, 1)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert abs(ma["top1"] - mb["top1"]) <= 0.02, (ma["top1"], mb["top1"])
    ha, hb = ((r / "history.csv").read_text().splitlines() for r in (a, b))
    col = ha[0].split(",").index("test_loss")
    la, lb = (float(h[-1].split(",")[col]) for h in (ha, hb))
    assert abs(la - lb) <= 1e-3, (la, lb)  # the same weights up to float rounding: the same test loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ranks(cmd: list[str], world: int = 2) -> list[subprocess.Popen]:
    """`world` processes of one gloo group, started as torchrun would (each one's exit status is ours to see)."""
    port = _free_port()
    procs = []
    for r in range(world):
        env = {**ENV, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      start_new_session=True))
    return procs


def test_a_signal_to_one_rank_stops_both_at_the_same_step_and_the_same_command_continues(tiny_recipe: Path,
                                                                                         tmp_path: Path) -> None:
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "bvbench", "run", str(tiny_recipe), "--out", str(out), "--device", "cpu",
           "--threads", "1", "--set", "train.epochs=4", "--set", "train.batch_size=8"]
    procs = _ranks(cmd)
    deadline = time.monotonic() + 300
    while not list((out / "tiny" / "fp").glob("*/history.csv")):  # epoch 1 done: training in epoch 2
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    os.kill(procs[1].pid, signal.SIGUSR1)  # rank 1 only (not the one that writes)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [REQUEUE_EXIT] * 2, errs
    where = [re.search(r"interrupted by SIGUSR1 \((.*?)\)", " ".join(e.split())) for e in errs]
    assert all(where) and where[0].group(1) == where[1].group(1), errs  # type: ignore[union-attr]
    (run,) = list((out / "tiny" / "fp").iterdir())
    fit = torch.load(run / "checkpoint.pt", weights_only=True)["fit"]
    said = where[0].group(1)  # type: ignore[union-attr]
    m = re.search(r"epoch (\d+), step (\d+)", said)
    if m:  # stopped inside an epoch: the checkpoint is at that step
        assert (fit["epoch"] + 1, fit["step"]) == (int(m.group(1)), int(m.group(2))), (said, fit)
    else:  # during an epoch's evaluation: at its end
        assert said.startswith(f"after epoch {fit['epoch']}") and fit["step"] == 0, (said, fit)
    assert not (run / ".done").exists() and "Traceback" not in "".join(errs)

    procs = _ranks(cmd)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "continuing its unfinished run" in outs[0][0]
    assert (run / ".done").exists() and list((out / "tiny" / "fp").iterdir()) == [run]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 4
