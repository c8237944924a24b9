"""Reliability: interruption and exact resume, atomic writes, determinism, divergence, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bvbench.train.trainer as trainer_mod
from bvbench.results import atomic_write_bytes


def _metrics(out: Path, recipe: str = "tiny", row: str = "fp") -> dict:
    (run,) = [p for p in (out / recipe / row).iterdir() if (p / ".done").exists()]
    return json.loads((run / "metrics.json").read_text())


def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(cli, tiny_recipe: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", str(tiny_recipe), "--device", "cpu", "--set", "train.epochs=2", "--set", "train.batch_size=64"]
    code, _, err = cli(*args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    reference = _metrics(tmp_path / "a")

    real_lr_at, calls = trainer_mod.lr_at, {"n": 0}

    def lr_at_then_signal(*a, **k):  # a real SIGTERM in the middle of epoch 2 (8 steps per epoch)
        calls["n"] += 1
        if calls["n"] == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(*a, **k)

    monkeypatch.setattr(trainer_mod, "lr_at", lr_at_then_signal)
    code, _, err = cli(*args, "--out", str(tmp_path / "b"))
    assert code == 143 and "interrupted by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    (run,) = list((tmp_path / "b" / "tiny" / "fp").iterdir())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 1 and ckpt["fit"]["step"] == 3  # saved at the step boundary
    assert not (run / ".done").exists() and not (run / "metrics.json").exists()

    monkeypatch.setattr(trainer_mod, "lr_at", real_lr_at)
    code, out, err = cli(*args, "--out", str(tmp_path / "b"), "--resume")
    assert code == 0 and "resuming" in out, err
    resumed = _metrics(tmp_path / "b")
    for k in ("top1", "top5", "precision", "recall", "f1", "test_loss"):
        assert resumed[k] == reference[k], k


def test_same_seed_same_metrics(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    for d in ("x", "y"):
        assert cli("run", str(tiny_recipe), "--device", "cpu", "--out", str(tmp_path / d))[0] == 0
    a, b = _metrics(tmp_path / "x"), _metrics(tmp_path / "y")
    assert {k: a[k] for k in ("top1", "f1", "test_loss")} == {k: b[k] for k in ("top1", "f1", "test_loss")}
    ha = (next((tmp_path / "x/tiny/fp").iterdir()) / "history.csv").read_text().splitlines()
    hb = (next((tmp_path / "y/tiny/fp").iterdir()) / "history.csv").read_text().splitlines()

    def strip(line: str) -> str:  # drop the timing columns
        return ",".join(line.split(",")[:7])

    assert [strip(x) for x in ha] == [strip(x) for x in hb]


def test_nan_loss_marks_row_diverged_and_recipe_goes_on(cli, tiny_recipe: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = tiny_recipe.read_text().replace("  - name: other", "  - name: second\n    label: Second\n  - name: other")
    tiny_recipe.write_text(text)
    real = trainer_mod.ClassificationLoss.forward

    def nan_after_three(self, *a, **k):
        self.calls = getattr(self, "calls", 0) + 1
        loss = real(self, *a, **k)
        return loss * float("nan") if self.calls > 3 else loss

    monkeypatch.setattr(trainer_mod.ClassificationLoss, "forward", nan_after_three)
    code, out, err = cli("run", str(tiny_recipe), "--device", "cpu", "--out", str(tmp_path))
    assert code == 1 and "2 row(s) without a finished run: fp (diverged), second (diverged)" in err, err
    assert out.count("diverged") >= 2 and "step 4" in out  # both rows tried, the message says where
    for row in ("fp", "second"):
        (run,) = list((tmp_path / "tiny" / row).iterdir())
        assert (run / "diverged.json").exists() and not (run / ".done").exists()
    code, csv_text, _ = cli("table", str(tiny_recipe), "--results", str(tmp_path), "--format", "csv")
    assert ",fp,Full precision,diverged," in csv_text


WRITER = """
import sys
from pathlib import Path
from bvbench.results import atomic_write_bytes
target = Path(sys.argv[1])
i = 0
while True:
    i += 1
    atomic_write_bytes(target, bytes([i % 251]) * 4_000_000)
"""


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_bytes(target, b"\x00" * 4_000_000)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        try:
            proc.wait(timeout=0.4)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        data = target.read_bytes()
        assert len(data) == 4_000_000 and len(set(data)) == 1  # one whole version, never a mix or a stub


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_gloo_matches_single_process(tiny_recipe: Path, tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["run", str(tiny_recipe), "--device", "cpu", "--set", "train.epochs=6", "--set", "train.batch_size=16"]
    single = subprocess.run([sys.executable, "-m", "bvbench", *base, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "bvbench", *base,
                            "--set", "train.batch_size=8", "--out", str(tmp_path / "two")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert abs(a["top1"] - b["top1"]) <= 0.1, (a["top1"], b["top1"])
    runs = list((tmp_path / "two" / "tiny" / "fp").iterdir())
    assert len(runs) == 1  # rank 1 wrote nothing of its own


def test_sigterm_to_the_process_group_with_loader_workers_saves_and_exits_cleanly(tiny_recipe: Path,
                                                                                  tmp_path: Path) -> None:
    """Slurm preemption and Ctrl-C signal every process of the group, DataLoader workers included."""
    import time

    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "bvbench", "run", str(tiny_recipe), "--device", "cpu", "--out", str(out),
           "--set", "data.num_workers=2", "--set", "train.epochs=200", "--set", "train.batch_size=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "tiny" / "fp").glob("*/history.csv")):
        time.sleep(0.2)  # wait until an epoch has finished: workers are up and training runs
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "interrupted by SIGTERM" in err and "Traceback" not in err and "DataLoader worker" not in err
    (run,) = list((out / "tiny" / "fp").iterdir())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] >= 1 and not (run / ".done").exists()
