"""Process handling under attack, as real subprocesses: a corrupt image with loader workers (no hang, one line,
exit 2), a diverged row (blocks only its dependants, table written, exit 1), signals at chosen moments (one
line, exit 130/143, `--resume` then finishes). Each case asserts the exit code, no traceback and the run
folder afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_recipe

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def bvbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bvbench", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def test_corrupt_image_with_workers_is_one_line_exit_2_and_no_hang(tmp_path: Path) -> None:
    from PIL import Image

    from bvbench.data.datasets import CIFAR10_CLASSES

    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            d = tmp_path / "data" / "cifar10-jpeg" / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (i * 90, 20, 200)).save(d / f"{i}.jpg")
    bad = tmp_path / "data" / "cifar10-jpeg" / "test" / "dog" / "zzz.jpg"
    bad.write_text("not an image")
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("name: fake, img_size: 16", "name: cifar10, img_size: 16"))
    r = bvbench("run", str(recipe), "--profile", "smoke", "--device", "cpu", "--data-dir", str(tmp_path / "data"),
                "--out", str(tmp_path / "res"), "--set", "data.num_workers=2", timeout=90)  # hung forever before
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr


DIVERGE = """
  - name: dep
    label: Fine-tuned from fp
    init_from: fp
  - name: indep
    label: Independent
    train: {lr: 1.0e-3}
"""


def test_diverged_row_blocks_only_its_dependants(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("  - name: other", DIVERGE.strip("\n") + "\n  - name: other"))
    out = tmp_path / "res"
    r = bvbench("run", str(recipe), "--profile", "smoke", "--device", "cpu", "--out", str(out),
                "--set", "rows.fp.train.lr=10", "--set", "rows.fp.train.lr_base_batch=1",
                "--set", "rows.fp.train.weight_decay=10", "--set", "rows.fp.train.max_steps_per_epoch=30")
    # lr 320 with decoupled weight decay 10: the weights grow 3200x per step and overflow (bounds allow each value)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "fp (diverged)" in r.stderr and "dep (blocked by fp (diverged))" in r.stderr
    assert "last good checkpoint" not in r.stdout
    assert list((out / "tiny" / "indep").glob("*/.done")) and not (out / "tiny" / "dep").exists()
    table = (out / "tiny" / "table.csv").read_text()
    assert "blocked by fp (diverged)" in table and ",indep," in table


def _wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen[str], limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not list(path_glob.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_last_epoch_evaluation_stops_the_run(tmp_path: Path, sig: signal.Signals) -> None:
    """history.csv appears when the first epoch's evaluation has run; a signal then (the run's last epoch of
    its first row, or anywhere after) used to be swallowed: the run went on to the next rows and exited 0."""
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("  - name: other", "  - name: second\n    label: Second\n"
                                                 "  - name: other"))
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "bvbench", "run", str(recipe), "--profile", "smoke", "--device", "cpu",
           "--out", str(out), "--set", "eval.batch_size=4"]  # a slow evaluation: many batches
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(out / "tiny" / "fp", "*/history.csv", proc)  # the last epoch's evaluation has just run
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 128 + sig, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and signal.Signals(sig).name in err
    assert not list((out / "tiny" / "second").glob("*/.done"))  # later rows did not run
    r = bvbench("run", str(recipe), "--profile", "smoke", "--device", "cpu", "--out", str(out), "--resume",
                "--set", "eval.batch_size=4")
    assert r.returncode == 0, r.stderr
    assert list((out / "tiny" / "fp").glob("*/.done")) and list((out / "tiny" / "second").glob("*/.done"))
