"""One writer per run folder (lock files), and runs stopped at any moment stay resumable (issue 12, items 2-3).
The process-handling cases run real `python -m bvbench` processes, stopped at exact points with
BVBENCH_TEST_PAUSE_AT (the process SIGSTOPs itself there)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import bvbench.runner.lock as lock_mod
from bvbench.results import RunDir, adopt_run, atomic_write_json
from bvbench.runner.lock import RunBusy, RunLock, clean_orphans, lock_path


def _cmd(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bvbench", "run", str(recipe), "--device", "cpu", "--out", str(out),
            "--set", "train.epochs=1", *extra]


def _env(pause: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BVBENCH_TEST_PAUSE_AT", None)
    if pause:
        env["BVBENCH_TEST_PAUSE_AT"] = pause
    return env


def _start_paused(cmd: list[str], point: str) -> subprocess.Popen:
    """Start `cmd` and wait until it has stopped itself at `point`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(point))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {point}: {proc.communicate()}")
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"never reached {point}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _run_folder(out: Path) -> Path:
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]
    return run


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_second_run_on_a_held_folder_skips_it_and_leaves_the_finished_files_alone(tiny_recipe: Path,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "res"
    a = _start_paused(_cmd(tiny_recipe, out), "before-done")  # results and final weights written, no .done
    run = _run_folder(out)
    assert lock_path(run).exists()
    before = _snapshot(run)
    b = _run(_cmd(tiny_recipe, out, "--resume"))
    assert b.returncode == 0, b.stderr
    skipped = [line for line in b.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "being written by another process" in skipped[0] and f"pid {a.pid}" in skipped[0]
    assert "Traceback" not in b.stderr
    assert _snapshot(run) == before  # B wrote nothing into A's folder
    a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert (run / ".done").exists() and not lock_path(run).exists()
    finished = _snapshot(run)
    b = _run(_cmd(tiny_recipe, out, "--resume"))
    assert b.returncode == 0 and "finished run reused" in b.stdout, b.stderr
    assert _snapshot(run) == finished  # a finished run's files are never rewritten
    assert [p.name for p in (out / "tiny" / "fp").iterdir() if p.is_dir()] == [run.name]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_gone_holder_released_stale_lock_taken_only_with_steal_stale(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    a = _start_paused(_cmd(tiny_recipe, out), "claimed")
    a.kill()
    a.communicate()
    (lock,) = list((out / "tiny" / "fp").glob(".*.lock"))
    run = lock.parent / lock.name[1:-len(".lock")]
    held = json.loads(lock.read_text())
    assert held["pid"] == a.pid and held["host"] == platform.node() and "heartbeat" in held and "start" in held
    # A live process (this one) whose heartbeat stopped an hour ago: stale, not gone.
    me = {**held, "pid": os.getpid(), "proc_start": lock_mod._proc_start(os.getpid()),
          "heartbeat_unix": time.time() - 3600}
    lock.write_text(json.dumps(me))
    b = _run(_cmd(tiny_recipe, out))
    assert b.returncode == 0, b.stderr
    assert "stale lock" in b.stdout and "--steal-stale" in b.stdout and not run.exists()
    assert json.loads(lock.read_text()) == me  # left as it was
    b = _run(_cmd(tiny_recipe, out, "--steal-stale"))
    assert b.returncode == 0 and "stale lock taken over" in b.stdout, b.stderr
    assert (run / ".done").exists() and not lock.exists()
    # The killed holder's lock (pid gone, same host) needs no flag: it is released with a note.
    lock.write_text(json.dumps(held))
    (out / "tiny" / "fp" / run.name).rename(tmp_path / "moved")
    b = _run(_cmd(tiny_recipe, out))
    assert b.returncode == 0 and "lock of a process that is gone released" in b.stdout, b.stderr
    assert (run / ".done").exists() and not lock.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_between_final_weights_and_done_then_resume_finishes(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    a = _start_paused(_cmd(tiny_recipe, out), "before-done")
    run = _run_folder(out)
    a.kill()
    a.communicate()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"model"} and not (run / ".done").exists()  # the state issue 12 found unresumable
    metrics = (run / "metrics.json").read_bytes()
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"")  # what a writer killed mid-write leaves
    b = _run(_cmd(tiny_recipe, out, "--resume"))
    assert b.returncode == 0, b.stderr
    assert "marked finished" in b.stdout and "removed .checkpoint.pt.k1ll3d.tmp" in b.stdout
    assert (run / ".done").exists() and (run / "metrics.json").read_bytes() == metrics
    assert not list(run.glob(".*.tmp")) and not lock_path(run).exists()
    assert "end_time" in json.loads((run / "env.json").read_text())
    b = _run([sys.executable, "-m", "bvbench", "eval", str(run), "--device", "cpu"])
    assert b.returncode == 0, b.stderr


def _finished_run(path: Path) -> RunDir:
    path.mkdir(parents=True)
    atomic_write_json(path / "metrics.json", {"recipe": "a", "row": "fp", "top1": 0.5})
    torch.save({"model": {}}, path / "checkpoint.pt")
    (path / "config.yaml").write_text(yaml.safe_dump({"recipe": "a"}))
    (path / ".done").write_text("x\n")
    return RunDir(path)


def test_adoption_copies_no_temporary_file(tmp_path: Path) -> None:
    src = _finished_run(tmp_path / "a" / "fp" / "rid")
    (src.path / ".checkpoint.pt.abc123.tmp").write_bytes(b"")
    (src.path / ".metrics.json.x.tmp").write_text("{")
    dst = adopt_run(src, tmp_path / "b" / "fp" / "rid", {"recipe": "b"}, {"recipe": "b"})
    names = {p.name for p in dst.path.iterdir()}
    assert {"metrics.json", "checkpoint.pt", "config.yaml", "reused.json", ".done"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_clean_orphans_removes_temporary_files_of_the_folder_only(tmp_path: Path) -> None:
    run = tmp_path / "rid"
    run.mkdir()
    (run / ".checkpoint.pt.abc.tmp").write_bytes(b"")
    (run / "history.csv").write_text("x")
    (tmp_path / ".rid.q1w2.tmp").mkdir()  # an interrupted adoption
    (tmp_path / ".other.q1w2.tmp").mkdir()  # another run's
    assert sorted(clean_orphans(run)) == [".checkpoint.pt.abc.tmp", ".rid.q1w2.tmp"]
    assert (run / "history.csv").exists() and (tmp_path / ".other.q1w2.tmp").exists()


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    run = tmp_path / "rid"
    first = RunLock(run)
    assert first.acquire() == [] and first.held()
    with pytest.raises(RunBusy, match="being written by another process"):
        RunLock(run).acquire(steal_stale=True)  # live: not even --steal-stale takes it
    first.release()
    assert not lock_path(run).exists()
    with RunLock(run) as again:
        assert again.acquire() == [] and again.held()
    assert not lock_path(run).exists()


def test_heartbeat_renews_the_lock_and_stops_once_taken_over(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_mod, "HEARTBEAT_S", 0.05)
    run = tmp_path / "rid"
    lock = RunLock(run)
    lock.acquire()
    first = json.loads(lock_path(run).read_text())["heartbeat_unix"]
    time.sleep(0.3)
    assert json.loads(lock_path(run).read_text())["heartbeat_unix"] > first
    thief = RunLock(run)
    assert "stale lock taken over" in thief.acquire(steal_stale=True, stale_s=0.0)[0]
    time.sleep(0.3)
    assert thief.held() and not lock.held()  # the old holder's heartbeat never wrote over the new lock
    lock.release()
    assert thief.held()
    thief.release()
