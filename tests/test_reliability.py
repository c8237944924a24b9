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


def _metrics(out: Path, recipe: str = "tiny", row: str = "fp") -> dict:
    (run,) = [p for p in (out / recipe / row).iterdir() if (p / ".done").exists()]
    return json.loads((run / "metrics.json").read_text())


RANDOM_RUN = ["--device", "cpu", "--set", "data.num_workers=2", "--set", "train.epochs=2",
              "--set", "train.batch_size=16", "--set", "train.augment.hflip=true",
              "--set", "train.augment.random_crop=true", "--set", "model.drop_path_rate=0.2"]


def _bvbench(*args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bvbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True, **popen)  # type: ignore[call-overload]


def _finished(recipe: Path, out: Path, *extra: str) -> dict:
    proc = _bvbench("run", str(recipe), "--out", str(out), *RANDOM_RUN, *extra)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if (p / ".done").exists()]
    return torch.load(run / "checkpoint.pt", weights_only=True)


def _tensors(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint, by path (model, optimizer moments, RNG states)."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    return {k: v for key, o in items for k, v in _tensors(o, f"{prefix}/{key}").items()}


def _assert_same_tensors(a: dict, b: dict) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and any("/model/" in k for k in ta)
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, differ[:5]


def _wait_mid_epoch_2(out: Path, proc: subprocess.Popen) -> None:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((out / "tiny" / "fp").glob("*/history.csv")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)  # epoch 1 done: the signal lands in epoch 2, workers running
    time.sleep(0.5)


def test_sigterm_mid_epoch_with_workers_augmentation_and_drop_path_resumes_bit_exact(
        tiny_recipe: Path, tmp_path: Path) -> None:
    reference = _finished(tiny_recipe, tmp_path / "a")
    out = tmp_path / "b"
    proc = _bvbench("run", str(tiny_recipe), "--out", str(out), *RANDOM_RUN)
    _wait_mid_epoch_2(out, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err and "Traceback" not in err, err
    (run,) = list((out / "tiny" / "fp").iterdir())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 1 and 0 < ckpt["fit"]["step"] and not (run / ".done").exists()
    resumed = _finished(tiny_recipe, out, "--resume")
    _assert_same_tensors(reference, resumed)
    assert _metrics(out)["test_loss"] == _metrics(tmp_path / "a")["test_loss"]


def test_sigkill_loses_at_most_checkpoint_every_steps_and_resumes_bit_exact(tiny_recipe: Path,
                                                                            tmp_path: Path) -> None:
    reference = _finished(tiny_recipe, tmp_path / "a")  # checkpoint_every changes neither results nor run id
    out = tmp_path / "b"
    proc = _bvbench("run", str(tiny_recipe), "--out", str(out), *RANDOM_RUN, "--set", "train.checkpoint_every=3")
    _wait_mid_epoch_2(out, proc)
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a step checkpoint inside epoch 2, written by checkpoint_every alone
        fit = torch.load(next((out / "tiny" / "fp").glob("*/checkpoint.pt")), weights_only=True)["fit"]
        if fit["epoch"] == 1 and fit["step"] > 0:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]
    assert run.name == next((tmp_path / "a" / "tiny" / "fp").iterdir()).name
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 1 and ckpt["fit"]["step"] % 3 == 0 and ckpt["fit"]["step"] > 0
    resumed = _finished(tiny_recipe, out, "--resume", "--set", "train.checkpoint_every=3")
    _assert_same_tensors(reference, resumed)


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
import torch
from bvbench.results import atomic_torch_save, atomic_write_json
kind, target = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
i = int(sys.argv[3])
while True:
    i += 1
    if kind == "json":
        atomic_write_json(target, {"version": i, "data": [i] * 400_000})
    else:
        atomic_torch_save({"version": i, "data": torch.full((1_000_000,), i)}, target)
"""


def _version(kind: str, target: Path) -> int:
    """The version a complete file holds; fails on a partial or mixed one."""
    if kind == "json":
        obj = json.loads(target.read_text())
        assert set(obj["data"]) == {obj["version"]} and len(obj["data"]) == 400_000
        return obj["version"]
    obj = torch.load(target, weights_only=True)
    assert obj["data"].shape == (1_000_000,) and bool((obj["data"] == obj["version"]).all())
    return obj["version"]


def _kill_while_writing(kind: str, target: Path, start: int) -> bool:
    """Run the writer, SIGKILL it while a temporary file of `target` is being written; True if one was seen."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), str(start)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    import time

    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline, seen = time.monotonic() + 20, False
        while time.monotonic() < deadline and proc.poll() is None:
            for tmp in target.parent.glob(f".{target.name}.*.tmp"):
                try:
                    started = tmp.stat().st_size > 0
                except FileNotFoundError:
                    continue
                seen = True
                if started or time.monotonic() > deadline - 15:
                    return True
            time.sleep(0.0005)
        return seen
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("kind", ["json", "torch"])
def test_killed_writer_leaves_old_or_new_file(tmp_path: Path, kind: str) -> None:
    """SIGKILL in the middle of atomic_write_json / atomic_torch_save: the target is one whole version."""
    from bvbench.results import atomic_torch_save, atomic_write_json

    target = tmp_path / ("metrics.json" if kind == "json" else "checkpoint.pt")
    if kind == "json":
        atomic_write_json(target, {"version": 0, "data": [0] * 400_000})
    else:
        atomic_torch_save({"version": 0, "data": torch.full((1_000_000,), 0)}, target)
    last = 0
    for _ in range(3):
        assert _kill_while_writing(kind, target, last * 1000), "the writer never started a temporary file"
        version = _version(kind, target)  # old or new, never a mix or a stub
        assert version >= last
        last = version


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
    import yaml

    (one,) = list((tmp_path / "one" / "tiny" / "fp").iterdir())
    ident = yaml.safe_load((runs[0] / "config.yaml").read_text())["identity"]
    assert (ident["world_size"], ident["global_batch"]) == (2, 16)  # the single run's global batch, 1 x 16
    assert b["run_id"] != a["run_id"] and runs[0].name != one.name  # same global batch, still another run


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
