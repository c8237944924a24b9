"""User errors on a real process: exit 2, one line on stderr, no traceback, nothing written lost (issue 12.7)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_recipe


def bvbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BVBENCH_DATA": "/nonexistent-bvbench-data"}
    return subprocess.run([sys.executable, "-m", "bvbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(("setting", "needle"), [
    ("train.lr=inf", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.weight_decay=inf", "train.weight_decay"),
    ("train.epochs=1000000000", "train.epochs"),
    ("eval.topk=[0]", "eval.topk"),
    ("eval.topk=[5]", "including 1"),
    ("seed=99999999999999999999", "seed"),
])
def test_absurd_values_are_rejected_at_load(tmp_path: Path, setting: str, needle: str) -> None:
    recipe = write_recipe(tmp_path)
    res = bvbench("run", str(recipe), "--profile", "smoke", "--set", setting, "--out", str(tmp_path / "r"),
                  cwd=tmp_path)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "r").exists()  # rejected before anything was built or written


def test_cli_seed_out_of_range(tmp_path: Path) -> None:
    res = bvbench("run", str(write_recipe(tmp_path)), "--seed", str(2**64 + 1), "--out", str(tmp_path / "r"),
                  cwd=tmp_path)
    assert_one_line_error(res, "--seed", "out of range")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run")
    res = bvbench("run", str(write_recipe(base)), "--profile", "smoke", "--out", str(base / "r"), cwd=base)
    assert res.returncode == 0, res.stderr
    return next((base / "r" / "tiny" / "fp").glob("smoke-*"))


@pytest.mark.parametrize(("config", "needle"), [
    ("- a\n- b\n", "no `row:`"),
    ("recipe: tiny\nprofile: smoke\n", "no `row:`"),
    ("row: !!python/object/apply:os.system ['touch PWNED']\n", "cannot be read"),
    ("row: {name: fp, train: {lr: fast}}\n", "not a valid bvbench run configuration"),
])
def test_eval_of_a_run_with_a_bad_config(tmp_path: Path, finished_run: Path, config: str, needle: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for f in finished_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    (run / "config.yaml").write_text(config)
    res = bvbench("eval", str(run), cwd=tmp_path)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "PWNED").exists()


class _Evil:
    def __reduce__(self):  # unpickling would create a file
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = "/tmp/bvbench-evil-pickle-was-loaded"


def test_hostile_pickle_checkpoint_is_refused_everywhere(tmp_path: Path, finished_run: Path) -> None:
    mark = Path(EVIL_MARK)
    mark.unlink(missing_ok=True)
    run = tmp_path / "run"
    run.mkdir()
    for f in finished_run.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    torch.save({"model": _Evil(), "fit": {}}, run / "checkpoint.pt", pickle_module=pickle)
    for args in (["eval", str(run)], ["export", str(run), "--out", str(tmp_path / "m.bvb")]):
        res = bvbench(*args, cwd=tmp_path)
        assert_one_line_error(res, "checkpoint")
        assert not mark.exists(), args
    assert not (tmp_path / "m.bvb").exists()
