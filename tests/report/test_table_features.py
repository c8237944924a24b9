"""`bvbench run --seeds`, mean ± std in the tables, `--paper` / `--measured-only`, `--summary` and the terminal
colours, on a results folder trained here from the tiny recipe (two seeds, seconds on CPU)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from bvbench.recipes import PaperColumn
from bvbench.report.table import Cell, Table, TableRow, build_tables, to_rich, tolerance_style
from bvbench.results import Metrics


def _read_metrics(out: Path) -> dict[int, dict]:
    """metrics.json of the tiny recipe's fp runs by seed."""
    ms = [json.loads((d / "metrics.json").read_text()) for d in (out / "tiny" / "fp").iterdir()]
    return {m["seed"]: m for m in ms}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny recipe run with --seeds 2 into a fresh results folder: (recipe file, results folder)."""
    from bvbench.cli import main
    from tests.conftest import write_recipe

    base = tmp_path_factory.mktemp("seeded")
    recipe, out = write_recipe(base), base / "res"
    try:
        main(["run", str(recipe), "--out", str(out), "--device", "cpu", "--seeds", "2"])
    except SystemExit as e:
        assert not e.code, f"bvbench run exited {e.code}"
    return recipe, out


def _csv(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = {r["row"]: r for r in reader}
    return list(reader.fieldnames or []), rows


def _md_header(md: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith("| Method") or ln.startswith("| Recipe"))
    return [c.strip() for c in line.strip("|").split("|")]


def _md_row(md: str, label: str) -> list[str]:
    """The cells of the Markdown table line whose first cell is `label`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no line for {label!r} in\n{md}")


# ------------------------------------------------------------------------------------------------ seeds


def test_seeds_run_each_seed_and_the_table_shows_mean_std_n(cli, seeded) -> None:
    recipe, out = seeded
    runs = sorted(p.name for p in (out / "tiny" / "fp").iterdir())
    assert len(runs) == 2 and any("-seed0-" in r for r in runs) and any("-seed1-" in r for r in runs)
    ms = _read_metrics(out)
    assert sorted(ms) == [0, 1]
    top1 = [100 * ms[s]["top1"] for s in (0, 1)]
    f1 = [ms[s]["f1"] for s in (0, 1)]

    # Running again with --seeds 2 reuses both runs and prints the aggregated table.
    code, md, err = cli("run", str(recipe), "--out", str(out), "--device", "cpu", "--seeds", "2")
    assert code == 0, err
    assert md.count("finished run reused") == 2
    row = _md_row(md, "Full precision")
    head = _md_header(md)
    mean, std = statistics.mean(top1), statistics.stdev(top1)
    assert row[head.index("Top-1 (%) ours")] == f"{mean:.2f} ± {std:.2f} (n=2)"
    assert row[head.index("F1 ours")] == f"{statistics.mean(f1):.4f} ± {statistics.stdev(f1):.4f} (n=2)"
    assert row[head.index("Δ")] == f"{mean - 70.5:+.2f}"  # Δ of the mean
    assert "seeds 0, 1" in md

    # CSV: existing columns keep their meaning (measured = mean); std, n_seeds and seeds are extra.
    code, text, _ = cli("table", str(recipe), "--results", str(out), "--format", "csv")
    assert code == 0
    fields, rows = _csv(text)
    assert fields[:16] == ["recipe", "table", "row", "label", "status", "model", "method", "w_bits", "a_bits",
                           "img_size", "data", "profile", "epochs", "seeds", "n_seeds", "run_id"]
    assert {"top1", "top1_err", "top5", "top5_err", "param_count", "ops", "size_mb"} <= set(fields)
    assert {"paper_top1", "measured_top1", "delta_top1", "measured_top1_std", "measured_f1_std", "n_seeds",
            "seeds"} <= set(fields)
    fp = rows["fp"]
    assert float(fp["measured_top1"]) == pytest.approx(mean, rel=1e-5)
    assert float(fp["measured_top1_std"]) == pytest.approx(std, rel=1e-5)
    assert float(fp["delta_top1"]) == pytest.approx(mean - 70.5, rel=1e-5)
    assert float(fp["measured_f1_std"]) == pytest.approx(statistics.stdev(f1), rel=1e-4)
    assert fp["n_seeds"] == "2" and fp["seeds"] == "0;1" and fp["status"] == "finished"
    assert float(fp["top1"]) == pytest.approx(mean, rel=1e-5)  # timm's column: %, like the table
    assert float(fp["top1_err"]) == pytest.approx(100 - mean, rel=1e-5)
    assert float(fp["param_count"]) == pytest.approx(ms[1]["params"] / 1e6, rel=1e-5)
    assert (fp["w_bits"], fp["a_bits"], fp["img_size"], fp["model"]) == ("32", "32", "16", "vit_tiny_patch16_224")
    assert rows["other"]["n_seeds"] == "" and rows["other"]["measured_top1_std"] == ""


def test_one_seed_shows_a_plain_value(seeded) -> None:
    """--profile filters runs; a row with one seed shows no ± and n."""
    recipe_path, out = seeded
    from bvbench.recipes import load_recipe
    from bvbench.report.table import latest_runs

    rec = load_recipe(str(recipe_path))
    assert [m.seed for m in latest_runs(out, "tiny", "fp")] == [0, 1]
    assert latest_runs(out, "tiny", "fp", profile="smoke") == []
    (t,) = build_tables(rec, out, "paper")
    cell = t.rows[0].cells["top1"]
    assert cell.n == 2 and cell.std is not None
    one = Cell(70.5, 71.25, None, 1)
    from bvbench.report.table import fmt_measured

    assert fmt_measured(one, "percent", 2) == "71.25"
    assert fmt_measured(Cell(70.5, 71.25, 0.5, 3), "percent", 2) == "71.25 ± 0.50 (n=3)"


def test_seed_and_seeds_exclude_each_other(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    code, out, err = cli("run", str(tiny_recipe), "--out", str(tmp_path), "--seed", "3", "--seeds", "2")
    assert code == 2 and "--seed and --seeds" in err and "Traceback" not in out + err
    assert not (tmp_path / "tiny").exists()  # nothing trained
    code, out, err = cli("run", str(tiny_recipe), "--out", str(tmp_path), "--seeds", "0")
    assert code == 2 and "--seeds" in err and "Traceback" not in out + err


# ------------------------------------------------------------------------------------------------ views


def test_paper_view_shows_only_the_paper_columns(cli, seeded) -> None:
    recipe, out = seeded
    code, md, _ = cli("table", str(recipe), "--results", str(out), "--paper")
    assert code == 0
    assert _md_header(md) == ["Method", "Top-1 (%)", "F1", "W-A"]
    assert _md_row(md, "Full precision") == ["Full precision", "70.50", "0.7000", "32-32"]
    assert _md_row(md, "Reference only") == ["Reference only", "50.00", "—", "1-1"]
    assert "ours" not in md and "Δ" not in md and "±" not in md
    code, text, _ = cli("table", str(recipe), "--results", str(out), "--paper", "--format", "csv")
    fields, rows = _csv(text)
    assert fields == ["recipe", "table", "row", "label", "paper_top1", "paper_f1", "paper_bits"]
    assert rows["fp"]["paper_top1"] == "70.5" and rows["other"]["paper_bits"] == "1-1"


def test_measured_only_view_shows_only_our_columns(cli, seeded) -> None:
    recipe, out = seeded
    ms = _read_metrics(out)
    code, md, _ = cli("table", str(recipe), "--results", str(out), "--measured-only")
    assert code == 0
    assert _md_header(md) == ["Method", "Top-1 (%) ours", "F1 ours", "Data set", "Profile", "Status"]
    row = _md_row(md, "Full precision")
    top1 = [100 * ms[s]["top1"] for s in (0, 1)]
    assert row[1] == f"{statistics.mean(top1):.2f} ± {statistics.stdev(top1):.2f} (n=2)"
    assert row[3:] == [ms[0]["data"]["display"], "paper", "finished"]
    assert "70.50" not in md and "Δ" not in md and "paper values" not in md.lower()
    code, text, _ = cli("table", str(recipe), "--results", str(out), "--measured-only", "--format", "csv")
    fields, rows = _csv(text)
    assert not [f for f in fields if f.startswith(("paper_", "delta_"))]
    assert "measured_bits" not in fields  # descriptive columns are not ours
    assert {"measured_top1", "measured_f1", "measured_top1_std", "n_seeds"} <= set(fields)


def test_paper_and_measured_only_exclude_each_other(cli, seeded) -> None:
    recipe, out = seeded
    code, stdout, err = cli("table", str(recipe), "--results", str(out), "--paper", "--measured-only")
    assert code == 2
    assert "--paper and --measured-only" in err and "Traceback" not in stdout + err
    assert stdout == ""


def test_plain_output_off_a_terminal_and_rich_on_request(cli, seeded) -> None:
    recipe, out = seeded
    _, default, _ = cli("table", str(recipe), "--results", str(out))
    _, md, _ = cli("table", str(recipe), "--results", str(out), "--format", "md")
    assert default == md and md.startswith("### tiny — Table 1")  # not a tty: Markdown, as before
    code, rich_text, _ = cli("table", str(recipe), "--results", str(out), "--format", "rich")
    assert code == 0 and "┃" in rich_text and "± " in rich_text and "| Method" not in rich_text
    code, _, err = cli("table", str(recipe), "--results", str(out), "--format", "rich", "--out", str(out / "x.txt"))
    assert code == 2 and "--format rich" in err


# ------------------------------------------------------------------------------------------------ summary


def test_summary_lists_each_finished_row(cli, seeded) -> None:
    recipe, out = seeded
    ms = _read_metrics(out)
    code, md, err = cli("table", str(recipe), "--results", str(out), "--summary")
    assert code == 0, err
    assert _md_header(md) == ["Recipe", "Row", "Method", "W-A", "Top-1 (%)", "OPs (10^8, trained model)",
                              "Size (MB, trained model)", "Data set", "Profile", "Epochs"]
    lines = [ln for ln in md.splitlines() if ln.startswith("| tiny ")]
    assert len(lines) == 1  # the reference row never ran
    row = [c.strip() for c in lines[0].strip("|").split("|")]
    top1 = [100 * ms[s]["top1"] for s in (0, 1)]
    newest = ms[1]
    assert row == ["tiny", "Full precision", "fp", "32-32",
                   f"{statistics.mean(top1):.2f} ± {statistics.stdev(top1):.2f} (n=2)",
                   f"{newest['ops'] / 1e8:.3f}", f"{newest['size_mb']:.3f}", newest["data"]["display"], "paper", "2"]
    assert (out / "summary.md").read_text() == md
    fields, rows = _csv((out / "summary.csv").read_text())
    assert fields[:6] == ["recipe", "row", "label", "model", "method", "w_a"]
    assert {"top1", "top1_err", "top5", "top5_err", "param_count", "img_size", "w_bits", "a_bits", "ops",
            "size_mb", "data", "profile", "epochs", "seeds", "run_id"} <= set(fields)
    fp = rows["fp"]
    assert float(fp["top1"]) == pytest.approx(statistics.mean(top1), rel=1e-5)
    assert float(fp["top1_err"]) == pytest.approx(100 - statistics.mean(top1), rel=1e-5)
    assert float(fp["param_count"]) == pytest.approx(newest["params"] / 1e6, rel=1e-5)
    assert fp["seeds"] == "0;1" and fp["run_id"] == newest["run_id"] and fp["img_size"] == "16"
    assert float(fp["ops"]) == pytest.approx(newest["ops"], rel=1e-5) and fp["n_seeds"] == "2"
    code, _, err = cli("table", str(recipe), "--results", str(out), "--summary", "--paper")
    assert code == 2 and "--summary" in err


def test_summary_is_sorted_by_recipe_then_row(cli, seeded, tmp_path: Path) -> None:
    """A second recipe (the same runs adopted under another name) sorts after `tiny` whatever the argument order."""
    import shutil

    from tests.conftest import write_recipe

    recipe, shared = seeded
    out = tmp_path / "res"
    shutil.copytree(shared, out)  # leave the module's results folder as it was
    other = write_recipe(tmp_path, "tiny2")
    code, stdout, err = cli("run", str(other), "--out", str(out), "--device", "cpu", "--seeds", "2")
    assert code == 0, err
    assert stdout.count("trained as") == 2  # adopted, not trained again
    code, text, _ = cli("table", str(other), str(recipe), "--results", str(out), "--summary", "--format", "csv")
    assert code == 0
    assert [(r["recipe"], r["row"]) for r in csv.DictReader(io.StringIO(text))] == [("tiny", "fp"), ("tiny2", "fp")]


# ------------------------------------------------------------------------------------------------ colours


def test_tolerance_style() -> None:
    # explicit tolerance
    assert tolerance_style(0.05, 0.05, "x1e8") == "green"
    assert tolerance_style(-0.1, 0.05, "x1e8") == "yellow"
    assert tolerance_style(0.15, 0.05, "x1e8") == "yellow"
    assert tolerance_style(0.16, 0.05, "x1e8") == "red"
    assert tolerance_style(71.5 - 70.5, 1.0, "percent") == "green"  # boundary counts as a match
    # defaults: 1 percentage point, 0.01 of a fraction, 10% of the paper's value otherwise
    assert tolerance_style(-1.0, None, "percent") == "green"
    assert tolerance_style(2.5, None, "percent") == "yellow"
    assert tolerance_style(3.01, None, "percent") == "red"
    assert tolerance_style(0.009, None, "fraction") == "green"
    assert tolerance_style(0.02, None, "fraction") == "yellow"
    assert tolerance_style(0.05, None, "fraction") == "red"
    assert tolerance_style(0.9, None, "MB", paper=10.0) == "green"
    assert tolerance_style(2.5, None, "MB", paper=10.0) == "yellow"
    assert tolerance_style(-3.5, None, "MB", paper=10.0) == "red"
    assert tolerance_style(0.0, 0.0, "count") == "green" and tolerance_style(1.0, 0.0, "count") == "red"


def test_rich_table_colours_delta_and_dims_rows_not_run() -> None:
    cols = [PaperColumn(key="top1", label="Top-1 (%)", unit="percent"),
            PaperColumn(key="ops", label="OPs", unit="x1e8", tolerance=0.05),
            PaperColumn(key="w_a", label="W-A", unit="text", measured=False)]

    def row(name: str, status: str, top1: float | None, ops: float | None) -> TableRow:
        run = (Metrics.of({"profile": "cpu", "data": {"display": "CIFAR-10"}, "seed": 0}) if status == "finished"
               else Metrics())
        return TableRow(name, name, status, {"top1": Cell(70.0, top1, None, 1 if top1 is not None else 0),
                                             "ops": Cell(1.0, ops), "w_a": Cell("1-1")}, run,
                        [run] if status == "finished" else [])

    t = Table("r", "Table 1", None, cols,
              [row("a", "finished", 70.5, 1.2), row("b", "finished", 68.0, 1.0), row("c", "finished", 74.0, 0.9),
               row("d", "not run", None, None), row("e", "diverged", None, None)])
    (rt,) = to_rich([t])
    header = [c.header for c in rt.columns]
    assert header[:7] == ["Method", "Top-1 (%) paper", "Top-1 (%) ours", "Δ", "OPs paper", "OPs ours", "Δ"]
    cells = [list(c.cells) for c in rt.columns]

    def style(col: int, r: int) -> str | None:
        spans = cells[col][r].spans
        return str(spans[-1].style) if spans else None

    assert [str(cells[3][r]) for r in range(3)] == ["+0.50", "-2.00", "+4.00"]
    assert [style(3, r) for r in range(3)] == ["green", "yellow", "red"]  # top-1: default 1 point
    assert [style(6, r) for r in range(3)] == ["red", "green", "yellow"]  # OPs: tolerance 0.05
    assert style(3, 3) is None  # no Δ, no colour
    assert [r.style for r in rt.rows] == [None, None, None, "dim", "dim"]
    assert style(len(cells) - 1, 4) == "red"  # "diverged" in red


def test_summary_leaves_out_untrained_complexity_rows(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    """A row that trains nothing from nothing (GSB Table IX counts OPs of an untrained model) has no accuracy
    worth a line; a 0-epoch row that re-evaluates another row's weights does."""
    text = tiny_recipe.read_text().replace("  - name: other", """  - name: count
    label: Counted only
    train: {epochs: 0}
  - name: again
    label: Printed again
    init_from: fp
    train: {epochs: 0}
  - name: other""")
    tiny_recipe.write_text(text)
    out = tmp_path / "res"
    assert cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu")[0] == 0
    code, csv_text, err = cli("table", str(tiny_recipe), "--results", str(out), "--summary", "--format", "csv")
    assert code == 0, err
    assert {r["row"] for r in csv.DictReader(io.StringIO(csv_text))} == {"fp", "again"}
