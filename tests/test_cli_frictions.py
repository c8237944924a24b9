"""The CLI frictions of issue 17.4: version, lists, show --rows, --set hints, one-line usage errors, progress,
eval of a committed run without weights, the umask, --out for table and plot."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "quickstart"


def bvbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BVBENCH_DATA": "/nonexistent-bvbench-data"}
    return subprocess.run([sys.executable, "-m", "bvbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def wide(monkeypatch) -> None:
    """The CLI's console as wide as a big terminal, so that table cells are not wrapped."""
    from bvbench import cli as cli_module

    monkeypatch.setattr(cli_module.console, "_width", 250)  # restored as it was (None: follow $COLUMNS)


def test_version_is_the_package_version(cli) -> None:
    code, out, _ = cli("--version")
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert code == 0 and out.strip() == f"bvbench {version}"


def test_list_models_shows_the_families_not_every_timm_name(cli, wide) -> None:
    code, out, _ = cli("list", "models")
    assert code == 0 and "ViT / DeiT" in out and "Swin" in out and "NesT" in out
    assert "swin_tiny_patch4_window7_224" in out  # a model the recipes use, in its family's row
    assert len(out.splitlines()) < 60 and "convnext" not in out
    code, out, _ = cli("list", "models", "--pattern", "deit_tiny*")
    assert code == 0 and "deit_tiny_patch16_224" in out and "Swin" not in out


def test_list_datasets_names_each_path_under_the_data_root_and_whether_it_is_there(cli, wide, tmp_path: Path) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    code, out, _ = cli("list", "datasets", "--data-dir", str(tmp_path))
    assert code == 0 and str(tmp_path) in out
    rows = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith("│ ") and ln.split()[1] != "│"}
    assert "yes" in rows["cifar100"] and "no" in rows["flowers102"].split("│")[-2]
    assert "no" in rows["cifar10"].split("│")[-2]


def test_list_methods_has_no_python_reprs(cli, wide) -> None:
    code, out, _ = cli("list", "methods")
    assert code == 0 and "gsb" in out and "k_att" in out
    assert "[" not in out and "'" not in out


def test_show_rows_prints_only_those_rows(cli) -> None:
    code, out, _ = cli("show", "quickstart", "--profile", "smoke", "--rows", "fp,gsb")
    assert code == 0 and [r["name"] for r in yaml.safe_load(out)["rows"]] == ["fp", "gsb"]
    code, _, err = cli("show", "quickstart", "--rows", "fp,gbs")
    assert code == 2 and "no row 'gbs'" in err and "gsb" in err


def test_comma_joined_sets_are_rejected_with_the_split_spelled_out(cli) -> None:
    code, _, err = cli("show", "quickstart", "--set", "train.epochs=1,train.lr=0.1")
    assert code == 2 and "--set train.epochs=1 --set train.lr=0.1" in one_line(err)
    code, out, _ = cli("show", "quickstart", "--set", "train.epochs=1", "--set", "eval.topk=[1,5]")
    assert code == 0 and yaml.safe_load(out)["eval"]["topk"] == [1, 5]
    code, out, _ = cli("run", "--help")
    assert "--set a=1 --set b=2" in " ".join(out.split())


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    p = bvbench("run", "quickstart", "--bogus", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = one_line(p.stderr)
    assert "No such option: --bogus" in line and "bvbench run --help" in line
    p = bvbench("list", "modles", cwd=tmp_path)
    assert p.returncode == 2 and "'modles' is not one of" in one_line(p.stderr)


def test_progress_bar_names_row_stage_and_time_left(monkeypatch) -> None:
    from bvbench.runner import progress as pg

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=240, color_system=None)
    bar = pg.RowProgress(console, (2, 4), [pg.RowWork(epochs=2, steps_per_epoch=None)])
    bar.trainer = SimpleNamespace(steps_per_epoch=lambda: 10, state=SimpleNamespace(stage=1, epoch=0, step=0),
                                  stages=[SimpleNamespace(epochs=1), SimpleNamespace(epochs=1)])
    clock = iter([100.0, 105.0])
    monkeypatch.setattr(pg.time, "monotonic", lambda: next(clock))
    task = bar.add_task("gsb [main] epoch 1/1", total=10, completed=0, loss=float("nan"))
    console.print(bar.bar.make_tasks_table(bar.bar.tasks))
    first = buf.getvalue()
    assert "row 2/4 gsb [main] epoch 1/1" in first and "nan" not in first and "loss" not in first
    bar.update(task, loss=2.5, acc=0.1, ips=64)  # first step seen at t=100: no rate yet
    bar.trainer.state.step = 5
    bar.update(task, advance=4, loss=2.0, acc=0.2, ips=64)  # 5 steps in 5 s: 5 of the row's 20 left
    buf.truncate(0)
    console.print(bar.bar.make_tasks_table(bar.bar.tasks))
    text = buf.getvalue()
    assert "loss 2.0000 acc 0.200" in text
    assert "row 0:00:05 left, recipe ≈0:00:25" in text  # later row: 2 epochs x 10 steps at 1 step/s


def test_profile_prints_a_line_per_row_while_it_builds(cli) -> None:
    code, out, err = cli("profile", "quickstart", "--profile", "smoke", "--rows", "fp", "--json", "--threads", "1")
    assert code == 0 and '"rows"' in out
    assert "profile 1/1: fp: building the model" in err


def _committed_copy(tmp_path: Path) -> Path:
    if not COMMITTED.is_dir():
        pytest.skip("results/quickstart is not in this checkout")
    res = tmp_path / "results"
    shutil.copytree(COMMITTED, res / "quickstart")
    return res


def test_eval_of_a_committed_run_says_it_has_no_weights_and_how_to_retrain(cli, tmp_path: Path) -> None:
    res = _committed_copy(tmp_path)
    runs = sorted(p for p in (res / "quickstart" / "fp").iterdir() if (p / "config.yaml").is_file())
    assert runs
    for run in runs:  # the nightly keeps several seeds of a headline row: each names its own seed
        assert not (run / "checkpoint.pt").exists()
        seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
        code, _, err = cli("eval", str(run))
        line = one_line(err)
        assert code == 2 and "committed results carry no weights" in line
        assert f"bvbench run quickstart --profile cpu --rows fp --seed {seed} --out retrained" in line


def test_table_and_plot_write_to_out_with_the_users_umask(cli, tmp_path: Path) -> None:
    res = _committed_copy(tmp_path)
    kept = (res / "quickstart" / "curves.png").stat().st_mtime_ns
    old = os.umask(0o002)
    try:
        code, _, err = cli("table", "quickstart", "--results", str(res), "--out", str(tmp_path / "t.md"))
        assert code == 0, err
        code, _, err = cli("plot", "quickstart", "--results", str(res), "--out", str(tmp_path / "figs"))
        assert code == 0, err
    finally:
        os.umask(old)
    assert "| " in (tmp_path / "t.md").read_text()
    assert stat.S_IMODE((tmp_path / "t.md").stat().st_mode) == 0o664  # not tempfile's 0600
    figs = sorted(f.name for f in (tmp_path / "figs").iterdir())
    assert "accuracy_vs_ops.png" in figs and "curves.png" in figs
    assert {stat.S_IMODE((tmp_path / "figs" / f).stat().st_mode) for f in figs} == {0o664}
    assert (res / "quickstart" / "curves.png").stat().st_mtime_ns == kept  # --out: the results folder untouched


def test_atomic_writes_and_adopted_folders_follow_the_umask(tmp_path: Path) -> None:
    import torch

    from bvbench.results import atomic_torch_save, atomic_write_text, umask_mode

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "c.pt")
        assert umask_mode(0o777) == 0o750
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o640
