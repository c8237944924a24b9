"""`bvbench run`, `table` and `eval` end to end on fake data: the run folder and its guarantees."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
import yaml


def test_run_writes_a_complete_run_folder(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    code, stdout, stderr = cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu")
    assert code == 0, stderr
    assert "reference row" in stdout and "Full precision" in stdout
    runs = list((out / "tiny" / "fp").iterdir())
    assert len(runs) == 1
    rd = runs[0]
    names = {p.name for p in rd.iterdir()}
    assert {"config.yaml", "env.json", "metrics.json", "history.csv", "confusion.csv", "confusion.png",
            "checkpoint.pt", ".done"} <= names
    cfg = yaml.safe_load((rd / "config.yaml").read_text())
    assert cfg["recipe"] == "tiny" and cfg["row"]["model"]["embed_dim"] == 32
    env = json.loads((rd / "env.json").read_text())
    assert {"git_sha", "packages", "device", "threads", "seed", "start_time", "end_time"} <= set(env)
    m = json.loads((rd / "metrics.json").read_text())
    assert 0.0 <= m["top1"] <= 1.0 and {"top5", "precision", "recall", "f1", "params"} <= set(m)
    assert m["data"]["display"] and m["profile"] == "paper"
    assert len((rd / "history.csv").read_text().strip().splitlines()) == 1 + 2  # header + 2 epochs
    cm = list(csv.reader(io.StringIO((rd / "confusion.csv").read_text())))
    assert len(cm) == 11 and sum(int(v) for line in cm[1:] for v in line[1:]) == m["data"]["test_size"]
    state = torch.load(rd / "checkpoint.pt", weights_only=True)
    assert "model" in state

    # A second run reuses the finished run and overwrites nothing.
    before = {p.name: p.stat().st_mtime_ns for p in rd.iterdir()}
    code, stdout, _ = cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu")
    assert code == 0 and "finished run reused" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in rd.iterdir()} == before

    # The table puts the paper's numbers next to ours; reference rows show no measurement.
    code, text, _ = cli("table", str(tiny_recipe), "--results", str(out), "--format", "csv")
    assert code == 0
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["fp"]["paper_top1"] == "70.5"
    assert float(rows["fp"]["measured_top1"]) == __import__("pytest").approx(100 * m["top1"], abs=1e-3)
    assert rows["other"]["measured_top1"] == "" and rows["other"]["status"] == "reference"
    code, md, _ = cli("table", str(tiny_recipe), "--results", str(out))
    assert "Top-1 (%) paper" in md and "| Reference only" in md and "—" in md
    assert (out / "tiny" / "table.md").exists() and (out / "tiny" / "table.csv").exists()

    # eval reproduces the run's metrics from its checkpoint.
    code, text, _ = cli("eval", str(rd), "--device", "cpu")
    assert code == 0
    again = json.loads(text)
    assert again["top1"] == m["top1"] and again["f1"] == m["f1"]


def test_missing_data_is_one_line_exit_2(cli) -> None:
    code, out, err = cli("run", "quickstart", "--set", "data.name=cifar100", "--data-dir", "/nonexistent")
    assert code == 2
    assert "CIFAR-100" in err and "--download" in err and "Traceback" not in err + out


def test_init_from_a_binarized_row_keeps_its_quantizer_parameters(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    """A row re-evaluated from another (init_from, 0 epochs) reproduces it: learned scales carry over."""
    text = tiny_recipe.read_text().replace("  - name: other", """  - name: binary
    label: Binary
    method: {name: gsb}
  - name: again
    label: Binary, printed again
    method: {name: gsb}
    init_from: binary
    train: {epochs: 0}
  - name: other""")
    tiny_recipe.write_text(text)
    out = tmp_path / "res"
    code, _, err = cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--rows", "again")
    assert code == 0, err
    a = json.loads(next((out / "tiny" / "binary").iterdir()).joinpath("metrics.json").read_text())
    b = json.loads(next((out / "tiny" / "again").iterdir()).joinpath("metrics.json").read_text())
    assert b["epochs"] == 0
    assert (a["top1"], a["test_loss"]) == (b["top1"], b["test_loss"])


def test_a_teacher_whose_checkpoint_was_not_kept_is_trained_again_for_its_weights(cli, tiny_recipe: Path,
                                                                                  tmp_path: Path) -> None:
    """Committed results carry no checkpoints: a student that needs such a teacher retrains it (same seed, so
    the same weights on the CPU) without touching the teacher's recorded metrics."""
    text = tiny_recipe.read_text().replace("  - name: other", """  - name: student
    label: Student
    method: {name: gsb}
    init_from: fp
    teacher: fp
    train: {epochs: 1}
  - name: other""")
    tiny_recipe.write_text(text)
    out = tmp_path / "res"
    assert cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--rows", "fp")[0] == 0
    (teacher,) = (out / "tiny" / "fp").iterdir()
    weights = (teacher / "checkpoint.pt").read_bytes()
    (teacher / "checkpoint.pt").unlink()
    metrics = (teacher / "metrics.json").read_bytes()
    code, stdout, err = cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--rows", "student")
    assert code == 0, err
    assert "no checkpoint.pt" in stdout and "training it again" in stdout
    assert (teacher / "metrics.json").read_bytes() == metrics  # nothing recorded is overwritten
    record = json.loads((teacher / "weights.json").read_text())
    assert record["top1_recorded"] == record["top1_retrained"]
    retrained = torch.load(teacher / "checkpoint.pt", weights_only=True)["model"]
    original = torch.load(io.BytesIO(weights), weights_only=True)["model"]
    assert retrained.keys() == original.keys() and all(torch.equal(retrained[k], original[k]) for k in original)
    assert sorted(p.name for p in (out / "tiny" / "fp").iterdir()) == [teacher.name]  # scratch folder removed
    assert len(list((out / "tiny" / "student").iterdir())) == 1

    # Where the same run id kept its weights elsewhere (another recipe's adopted copy), they are shared, not
    # trained a third time.
    import shutil

    twin = out / "other" / "fp" / teacher.name
    shutil.copytree(teacher, twin)
    (teacher / "checkpoint.pt").unlink()
    code, stdout, err = cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--rows", "student",
                            "--set", "rows.student.train.lr=0.001")
    assert code == 0, err
    assert "taken from the identical run" in stdout and "training it again" not in stdout
    assert (teacher / "checkpoint.pt").read_bytes() == (twin / "checkpoint.pt").read_bytes()
    assert json.loads((teacher / "weights.json").read_text())["from"].endswith(str(Path("other", "fp", teacher.name)))


def test_identical_run_under_another_recipe_is_adopted_not_retrained(cli, tmp_path: Path) -> None:
    from tests.conftest import write_recipe

    out = tmp_path / "res"
    a, b = write_recipe(tmp_path, "tiny"), write_recipe(tmp_path, "tiny2")
    assert cli("run", str(a), "--out", str(out), "--device", "cpu")[0] == 0
    code, stdout, _ = cli("run", str(b), "--out", str(out), "--device", "cpu")
    assert code == 0 and "finished run reused" in stdout and "trained as" in stdout
    (src,) = (out / "tiny" / "fp").iterdir()
    (dst,) = (out / "tiny2" / "fp").iterdir()
    assert src.name == dst.name  # the run id hashes the configuration, not the recipe's name
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (src, dst))
    assert mb["top1"] == ma["top1"] and mb["recipe"] == "tiny2" and mb["reused_from"] == str(src)
    assert json.loads((dst / "reused.json").read_text())["from"] == str(src)
    assert yaml.safe_load((dst / "config.yaml").read_text())["recipe"] == "tiny2"
    assert (dst / "checkpoint.pt").read_bytes() == (src / "checkpoint.pt").read_bytes()
    assert not list((out / "tiny2" / "fp").glob(".*.tmp"))
    code, text, _ = cli("table", str(b), "--results", str(out), "--format", "csv")
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO(text))}
    assert float(rows["fp"]["measured_top1"]) == __import__("pytest").approx(100 * ma["top1"], abs=1e-3)

    # A different configuration is a different experiment: trained, not adopted.
    code, stdout, _ = cli("run", str(b), "--out", str(out), "--device", "cpu", "--set", "train.lr=0.001")
    assert code == 0 and "reused" not in stdout
    assert len(list((out / "tiny2" / "fp").iterdir())) == 2


def test_a_field_added_later_at_its_neutral_value_keeps_run_ids(tiny_recipe: Path) -> None:
    from bvbench.recipes import load_recipe
    from bvbench.runner import ADDED_FIELDS, REFERENCE, row_identity, run_id

    base = load_recipe(str(tiny_recipe))
    row = base.row("fp")
    assert ("eval", "count_first_last") in ADDED_FIELDS
    assert "count_first_last" not in row_identity(base, row, 0, REFERENCE)["eval"]  # as_run: as before the field existed
    assert "batch_size" in row_identity(base, row, 0, REFERENCE)["eval"]  # other fields stay, default or not
    other = load_recipe(str(tiny_recipe), "paper", ["eval.count_first_last=like_body"])
    assert run_id(other, other.row("fp"), 0, REFERENCE) != run_id(base, row, 0, REFERENCE)
    assert run_id(base, row, 0, REFERENCE) != run_id(base, row, 1, REFERENCE)


def test_random_augmentation_enters_the_run_id_and_plain_rows_keep_theirs(tiny_recipe: Path) -> None:
    """Per-sample augmentation draws changed the numbers of rows with random per-image transforms only."""
    from bvbench.recipes import load_recipe
    from bvbench.runner.identity import REFERENCE, row_identity, run_id

    plain = load_recipe(str(tiny_recipe), "paper")
    noisy = load_recipe(str(tiny_recipe), "paper", ["train.augment.hflip=true"])
    assert "augment_draws" not in row_identity(plain, plain.row("fp"), 0, REFERENCE)
    assert row_identity(noisy, noisy.row("fp"), 0, REFERENCE)["augment_draws"] == "per-sample"
    assert run_id(plain, plain.row("fp"), 0, REFERENCE) == "paper-fake-seed0-6c572a01"  # the id this row had before
