"""Signals at the moments the attack matrix did not cover, as real subprocesses: Ctrl-C during setup (data and
model built, before the first step) and during an evaluation (a training epoch's, and `bvbench eval`), a second
Ctrl-C while the run shuts down, SIGKILL of the parent with loader workers, and `python -m bvbench.nightly`.
Each case asserts the exit code, one line on stderr and the run folder afterwards (resumable, or untouched).

The exact moment comes from BVBENCH_TEST_PAUSE_AT (bvbench.results.pause_for_tests): the process stops itself
there (SIGSTOP); the test signals it while it is stopped, then continues it (SIGCONT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_recipe

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def start(*args: str, pause: str | None = None, module: str = "bvbench") -> subprocess.Popen[str]:
    env = {**ENV, **({"BVBENCH_TEST_PAUSE_AT": pause} if pause else {})}
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    """Wait for the process; its stderr. The whole session is killed if it hangs."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def wait_paused(proc: subprocess.Popen[str], limit: float = 300) -> None:
    """Until the process has stopped itself at its pause point."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        s = stat(proc.pid)
        if s is not None and s[0] == "T":
            return
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the process never reached its pause point")


def signal_paused(proc: subprocess.Popen[str], sig: int) -> None:
    """Deliver `sig` to the stopped process, then let it go on: the signal lands exactly at the pause point."""
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    while (s := stat(proc.pid)) is not None and s[0] == "T":  # running again before the next wait_paused
        time.sleep(0.01)


def one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def run_folder(out: Path) -> Path:
    (run,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]
    return run


def leftovers(out: Path) -> list[Path]:
    """Lock files and temporary files anywhere under `out`: what a clean stop must not leave."""
    return [p for p in out.rglob("*") if p.name.endswith((".lock", ".tmp"))]


def file_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def run_args(recipe: Path, out: Path, *sets: str) -> list[str]:
    args = ["run", str(recipe), "--profile", "smoke", "--device", "cpu", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return args


def test_sigint_during_setup_before_the_first_step(tmp_path: Path) -> None:
    """Data loaded, model built, config.yaml and env.json written, no step yet: exit 130 at once, no
    checkpoint, no lock left; --resume trains in the same folder."""
    recipe, out = write_recipe(tmp_path), tmp_path / "res"
    proc = start(*run_args(recipe, out), pause="setup")
    wait_paused(proc)
    signal_paused(proc, signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    one_line(err, "SIGINT", "before its first checkpoint")
    run = run_folder(out)
    assert (run / "config.yaml").is_file() and not (run / "checkpoint.pt").exists() and not (run / ".done").exists()
    assert not leftovers(out)
    r = subprocess.run([sys.executable, "-m", "bvbench", *run_args(recipe, out), "--resume"], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert run_folder(out) == run and (run / ".done").exists()


def test_sigint_during_evaluation_then_during_bvbench_eval(tmp_path: Path) -> None:
    """A signal during epoch 1's evaluation of 2: the evaluation and the epoch end, its checkpoint is saved,
    exit 130; --resume finishes epoch 2. Then Ctrl-C during `bvbench eval` of the finished run: exit 130, every
    file of the run untouched."""
    recipe, out = write_recipe(tmp_path), tmp_path / "res"
    args = run_args(recipe, out, "train.epochs=2")
    proc = start(*args, pause="eval")
    wait_paused(proc)
    signal_paused(proc, signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    one_line(err, "interrupted by SIGINT", "after epoch 1", "the same command continues it")
    run = run_folder(out)
    fit = torch.load(run / "checkpoint.pt", weights_only=True)["fit"]
    assert (fit["epoch"], fit["step"]) == (1, 0) and not (run / ".done").exists() and not leftovers(out)
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + epoch 1, its test_top1 included
    r = subprocess.run([sys.executable, "-m", "bvbench", *args, "--resume"], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / ".done").exists() and len((run / "history.csv").read_text().splitlines()) == 3

    before = file_tree(out)
    proc = start("eval", str(run), "--device", "cpu", pause="eval")
    wait_paused(proc)
    signal_paused(proc, signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    one_line(err, "interrupted by SIGINT")
    assert file_tree(out) == before


def test_second_sigint_while_shutting_down(tmp_path: Path) -> None:
    """Ctrl-C during epoch 1's evaluation, then Ctrl-C again while the run stops (its checkpoint saved, the
    loader workers not yet shut down): still exit 130 and one line, no temporary or lock file, the checkpoint
    loads, no worker survives, and --resume finishes."""
    recipe, out = write_recipe(tmp_path), tmp_path / "res"
    args = run_args(recipe, out, "train.epochs=2", "data.num_workers=2")
    proc = start(*args, pause="eval,stopping")
    wait_paused(proc)  # epoch 1's evaluation
    signal_paused(proc, signal.SIGINT)
    wait_paused(proc)  # shutting down
    workers = children(proc.pid)
    assert len(workers) >= 2, workers  # the persistent training and evaluation workers
    signal_paused(proc, signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    one_line(err, "interrupted by SIGINT and a second signal (SIGINT)", "last checkpoint is kept")
    assert not alive(workers, limit=10)
    run = run_folder(out)
    fit = torch.load(run / "checkpoint.pt", weights_only=True)["fit"]
    assert (fit["epoch"], fit["step"]) == (1, 0) and not (run / ".done").exists() and not leftovers(out)
    r = subprocess.run([sys.executable, "-m", "bvbench", *args, "--resume"], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / ".done").exists()


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`: {pid: start time}, the start time telling a reused pid apart."""
    found = {}
    for tid in Path(f"/proc/{pid}/task").iterdir():
        for c in (tid / "children").read_text().split():
            s = stat(int(c))
            if s is not None:
                found[int(c)] = s[19]
    return found


def alive(procs: dict[int, str], limit: float) -> dict[int, str]:
    """Those of `procs` still running (not gone, not a zombie) after up to `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        left = {p: t for p, t in procs.items() if (s := stat(p)) is not None and s[19] == t and s[0] != "Z"}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_sigkill_of_the_parent_kills_its_loader_workers(tmp_path: Path) -> None:
    """SIGKILL of `bvbench run` itself (not its group), mid-epoch with 2 persistent loader workers: the kernel
    kills the workers (PR_SET_PDEATHSIG) within seconds; --resume continues from the step checkpoint."""
    recipe, out = write_recipe(tmp_path), tmp_path / "res"
    args = run_args(recipe, out, "data.num_workers=2", "train.checkpoint_every=1")
    proc = start(*args, pause="eval")
    try:
        wait_paused(proc)  # the training workers are up; a step checkpoint was written
        workers = children(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not alive(workers, limit=5), "loader workers outlived their killed parent"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run = run_folder(out)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["fit"]["step"] == 2  # smoke: 2 steps an epoch
    r = subprocess.run([sys.executable, "-m", "bvbench", *args, "--resume"], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / ".done").exists() and not leftovers(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_nightly_exits_like_bvbench_run(tmp_path: Path, sig: signal.Signals) -> None:
    """`python -m bvbench.nightly`, signalled while its first row starts: 130 for SIGINT, 143 for SIGTERM
    (it returned 130 for both, and a signal outside the runner was a traceback or a plain kill)."""
    out = tmp_path / "res"
    proc = start("--only", "quickstart", "--out", str(out), "--device", "cpu", pause="claimed",
                 module="bvbench.nightly")
    wait_paused(proc)
    signal_paused(proc, sig)
    err = finish(proc)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and signal.Signals(sig).name in err, err
    assert not leftovers(out)
    assert not [p for p in out.rglob("*") if p.is_file()]  # stopped before anything was written
