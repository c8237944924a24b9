"""Every user error: one clear message naming the file/field, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _check(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err  # one line, as the README says
    for n in needles:
        assert n in err, (n, err)


def test_yaml_syntax_error(cli, tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("name: broken\nrows:\n  - name: [unclosed\n")
    _check(cli("run", str(f)), "broken.yaml", "line", "invalid YAML")


def test_unknown_key(cli, tiny_recipe: Path) -> None:
    tiny_recipe.write_text(tiny_recipe.read_text().replace("eval: {batch_size: 128}", "eval: {batch_size: 128, tpok: [1]}"))
    _check(cli("show", str(tiny_recipe)), "tiny.yaml: eval.tpok: unknown key 'tpok'")
    code, out, err = cli("validate", str(tiny_recipe))
    assert code == 2 and "[paper]: " in err and "eval.tpok" in err and "✓" not in out


def test_wrong_type_and_range(cli, tiny_recipe: Path) -> None:
    _check(cli("show", str(tiny_recipe), "--set", "train.epochs=many"), "train.epochs", "integer")
    _check(cli("show", str(tiny_recipe), "--set", "train.label_smoothing=1.5"), "label_smoothing", "less than 1")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "quickstrt"], ["unknown recipe", "quickstart"]),
        (["run", "quickstart", "--set", "data.name=cifar11"], ["unknown dataset", "cifar10"]),
        (["run", "quickstart", "--set", "model.name=vit_tiny_patch16_22"], ["unknown timm model", "vit_tiny_patch16_224"]),
        (["run", "quickstart", "--set", "rows.fp.method=fpp"], ["unknown method", "fp"]),
        (["run", "quickstart", "--set", "train.epoch=3"], ["no field 'epoch'", "epochs"]),
        (["run", "quickstart", "--profile", "fast"], ["unknown profile"]),
        (["run", "quickstart", "--rows", "fq"], ["no row 'fq'", "fp"]),
        (["run", "quickstart", "--device", "tpu"], ["--device"]),
        (["table", "quickstart", "--format", "xls"], ["--format"]),
    ],
)
def test_unknown_names_suggest_the_closest(cli, args: list[str], needles: list[str], tmp_path: Path) -> None:
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path)]
    _check(cli(*args), *needles)


def test_missing_data(cli, tmp_path: Path) -> None:
    _check(cli("run", "quickstart", "--set", "data.name=cifar100", "--data-dir", str(tmp_path), "--out", str(tmp_path)),
           "CIFAR-100", str(tmp_path), "--download")


def test_missing_and_corrupt_checkpoint(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    _check(cli("run", str(tiny_recipe), "--set", "model.checkpoint=/nope.pt", "--out", str(tmp_path)),
           "/nope.pt", "does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    _check(cli("run", str(tiny_recipe), "--set", f"model.checkpoint={bad}", "--out", str(tmp_path / "o")),
           "bad.pt", "corrupt")
    assert cli("run", str(tiny_recipe), "--out", str(tmp_path / "r"), "--device", "cpu")[0] == 0
    (run,) = list((tmp_path / "r" / "tiny" / "fp").iterdir())
    (run / "checkpoint.pt").write_bytes(b"\x80garbage")
    _check(cli("eval", str(run), "--device", "cpu"), "checkpoint.pt", "corrupt")
    _check(cli("eval", str(tmp_path)), "not a bvbench run folder")


def test_unwritable_output_folder(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    _check(cli("run", str(tiny_recipe), "--out", str(blocker / "results"), "--device", "cpu"), "cannot create")


def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "bvbench", "run", "no-such-recipe"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown recipe" in r.stderr and "Traceback" not in r.stderr


def test_validate_all_shipped_recipes(cli) -> None:
    code, out, err = cli("validate", "--all")
    assert code == 0, err
    assert "quickstart" in out


def test_usage_errors_are_short(cli) -> None:
    code, out, err = cli("show")
    assert code == 2 and "Missing argument" in err and "Traceback" not in out + err
    code, out, err = cli("table", "--format")
    assert code == 2 and "requires an argument" in err


def test_names_cannot_escape_the_results_folder(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    from bvbench.errors import BvbenchError
    from bvbench.results import safe_child

    text = tiny_recipe.read_text()
    row = tmp_path / "row.yaml"
    row.write_text(text.replace("  - name: fp\n", "  - name: ../../evil\n"))
    _check(cli("run", str(row), "--out", str(tmp_path / "res"), "--device", "cpu"), "row.yaml", "name")
    rec = tmp_path / "rec.yaml"
    rec.write_text(text.replace("name: tiny\n", "name: ../tiny\n", 1))
    _check(cli("run", str(rec), "--out", str(tmp_path / "res"), "--device", "cpu"), "rec.yaml", "name")
    assert not (tmp_path / "res").exists() and not (tmp_path / "evil").exists()
    for bad in ("..", "../x", "/etc", "a/b", ".hidden"):
        with pytest.raises(BvbenchError, match="unsafe name"):
            safe_child(tmp_path, "recipe", bad)
    assert safe_child(tmp_path, "recipe", "row-1.5") == (tmp_path / "recipe" / "row-1.5").resolve()
