"""User errors from adversarial input (issue 12, item 7): each is exit code 2 and one line on stderr, no
traceback, and whatever was already written stays as it was. Real processes, so the exit code is the one a
shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def bvbench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m bvbench ARGS` in a fresh process (this checkout first on the path)."""
    full = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bvbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert exit code 2, a single `error:` line on stderr naming every needle, and no traceback."""
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---------------------------------------------------------------- absurd recipe values, caught at load


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("train.lr=.inf", ["train.lr", "finite"]),
        ("train.lr=.nan", ["train.lr", "finite"]),
        ("train.lr=50", ["train.lr", "less than or equal to 10"]),
        ("train.weight_decay=.inf", ["train.weight_decay", "finite"]),
        ("train.epochs=1e9", ["train.epochs", "less than or equal to 100000"]),
        ("seed=18446744073709551617", ["seed", "4294967295"]),
        ("seed=4294967296", ["seed", "4294967295"]),
        ("eval.topk=[0]", ["eval.topk", "at least 1"]),
        ("eval.topk=[5]", ["eval.topk", "include 1"]),
        ("model.num_heads=3", ["model.num_heads 3 does not divide model.embed_dim 32"]),
        ("model.img_size=32", ["model.img_size 32 differs from data.img_size 16"]),
    ],
)
def test_absurd_values_rejected_at_load(tiny_recipe: Path, setting: str, needles: list[str]) -> None:
    one_line_error(bvbench("show", str(tiny_recipe), "--set", setting), "tiny.yaml", *needles)


def test_bad_topk_fails_before_anything_is_written(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    one_line_error(bvbench("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--set", "eval.topk=[0]"),
                   "eval.topk")
    assert not out.exists()  # before: a KeyError after .done was written


def test_seed_option_out_of_range(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    one_line_error(bvbench("run", str(tiny_recipe), "--out", str(out), "--seed", str(2**64 + 1)),
                   "--seed", "4294967295")
    assert not out.exists()


def test_shapes_known_only_when_built(tiny_recipe: Path, tmp_path: Path) -> None:
    """A head count against timm's default width, and a data size against the model's default size."""
    out = tmp_path / "res"
    base = ["run", str(tiny_recipe), "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    one_line_error(bvbench(*base, "--set", "model.embed_dim=null", "--set", "model.num_heads=5"),
                   "divisible by num_heads")
    one_line_error(bvbench(*base, "--set", "model.img_size=null"), "row 'fp'", "16x16", "224x224", "img_size")
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing written (rglob of a missing folder is empty)
