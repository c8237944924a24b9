"""Issue 14, tables that tell the truth: Δ only between comparable setups, accuracies in %, timm's CSV
columns, escaped Markdown, LaTeX, the `cpu*` profile cell and paper-scale complexity columns. Run folders are
written by hand (config.yaml, metrics.json, .done), so nothing trains."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from bvbench.recipes import load_recipe
from bvbench.report import table as tb
from bvbench.report.compare import half_width_pct, wilson
from bvbench.report.paper_scale import CACHE_FILE, count_key
from bvbench.results import Metrics, RunDir

RECIPE = """
name: truth
title: truth test recipe
paper:
  citation: test
  file: none.txt
  tables:
    - name: Table 1
      columns:
        - {key: w_a, label: W-A, unit: text, measured: false}
        - {key: top1, label: Accuracy, unit: fraction}
        - {key: f1, label: F1, unit: fraction}
    - name: Table 2
      columns:
        - {key: params, label: Params (M), unit: M}
data: {name: fake, img_size: 16, num_workers: 0}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
train: {epochs: 4, batch_size: 32}
rows:
  - name: fp
    label: "Full | precision"
    paper: {w_a: 32-32, top1: 0.986, f1: 0.9}
  - name: count
    label: Counted
    table: Table 2
    train: {epochs: 0}
    paper: {params: 0.1}
profiles:
  smoke:
    model: {embed_dim: 16}
    train: {epochs: 1}
"""


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    f = tmp_path / "truth.yaml"
    f.write_text(RECIPE)
    return f


def fake_run(results: Path, recipe: Path, row: str, *, profile: str = "paper", sets: list[str] | None = None,
             top1: float = 0.9, run_id: str | None = None, test_size: int = 500) -> Path:
    """A finished run folder of `row` as the runner leaves it, for the recipe at `profile` with `sets`."""
    resolved = load_recipe(str(recipe), profile, sets or []).row(row)
    run_id = run_id or f"{profile}-{resolved.data.name}-{len(sets or [])}"
    d = results / "truth" / row / run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"recipe": "truth", "profile": profile, "seed": 0,
                                                   "run_id": run_id, "row": resolved.model_dump(mode="json")}))
    RunDir(d).write_metrics(Metrics.of({
        "recipe": "truth", "row": row, "label": resolved.label, "run_id": run_id, "profile": profile, "seed": 0,
        "data": {"name": resolved.data.name, "display": resolved.data.name, "test_size": test_size},
        "model": resolved.model.name, "method": "fp", "epochs": resolved.train.epochs, "device": "cpu",
        "top1": top1, "top5": 0.99, "f1": top1 - 0.01, "params": 12345, "ops": 6.0e5, "size_mb": 0.05}))
    (d / ".done").write_text("done\n")
    return d


def _tables(recipe: Path, results: Path, profile: str | None = None) -> list[tb.Table]:
    return tb.recipe_tables(str(recipe), results, profile)


def _fp(tables: list[tb.Table]) -> tb.TableRow:
    return next(r for r in tables[0].rows if r.name == "fp")


# ------------------------------------------------------------------------------------------- item 1: Δ


def test_delta_is_shown_when_the_setup_matches_the_paper(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", top1=0.9)
    tables = _tables(recipe_file, res)
    row = _fp(tables)
    assert row.differs == {} and row.cells["top1"].delta == pytest.approx(90.0 - 98.6)
    line = tb.body(tables[0])[0]
    assert line[tb.header(tables[0]).index("Δ")] == "-8.60"
    assert "n/c" not in tables[0].footnote()


def test_delta_is_suppressed_on_a_data_set_mismatch(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", sets=["data.name=digits"], top1=0.9)
    tables = _tables(recipe_file, res)
    row = _fp(tables)
    cell = row.cells["top1"]
    assert cell.delta is None and cell.not_comparable and cell.measured == pytest.approx(90.0)
    head, line = tb.header(tables[0]), tb.body(tables[0])[0]
    assert [line[i] for i, h in enumerate(head) if h == "Δ"] == ["n/c", "n/c"]  # accuracy and F1
    note = tables[0].footnote()
    assert "**Δ n/c**" in note and "data set" in note and "(paper: Fake (synthetic))" in note
    fields = list(csv.DictReader(io.StringIO(tb.to_csv(tables))))
    fp = next(r for r in fields if r["row"] == "fp")
    assert fp["delta_top1"] == "" and fp["comparable"] == "no" and "data set" in fp["differs"]


def test_delta_is_suppressed_when_the_model_or_input_size_differs(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", sets=["model.embed_dim=64"])
    row = _fp(_tables(recipe_file, res))
    assert row.cells["top1"].not_comparable and set(row.differs) == {"model"}
    assert row.differs["model"][0].endswith("(patch 4, dim 64, depth 2, heads 2)")
    res2 = tmp_path / "res2"
    fake_run(res2, recipe_file, "fp", sets=["data.img_size=32", "model.img_size=32"])
    row = _fp(_tables(recipe_file, res2))
    assert row.cells["top1"].not_comparable and row.differs["image size"] == ("32 px", "16 px")


def test_architecture_kwargs_are_part_of_the_model(recipe_file: Path) -> None:
    from bvbench.report.compare import Setup, comparable, differences

    row = load_recipe(str(recipe_file)).row("fp")
    other = row.model_copy(update={"model": row.model.model_copy(update={"kwargs": {"window_size": 4}})})
    diff = differences(Setup.of(other), Setup.of(row))
    assert set(diff) == {"model"} and "window_size 4" in diff["model"][0] and not comparable(diff)


def test_fewer_epochs_alone_keep_the_delta_but_are_named(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", sets=["train.epochs=2"])
    row = _fp(_tables(recipe_file, res))
    assert row.differs == {"epochs": ("2", "4")} and row.cells["top1"].delta is not None


# ------------------------------------------------------------------------------------- item 5: units


def test_accuracy_printed_as_a_fraction_reads_in_percent(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", top1=0.9)
    tables = _tables(recipe_file, res)
    t = tables[0]
    assert [c.label for c in t.columns] == ["W-A", "Accuracy (%)", "F1"]
    head, line = tb.header(t), tb.body(t)[0]
    assert line[head.index("Accuracy (%) paper")] == "98.60" and line[head.index("Accuracy (%) ours")] == "90.00"
    assert line[head.index("F1 ours")] == "0.8900"  # a score, not an accuracy: as the paper prints it
    fp = next(r for r in csv.DictReader(io.StringIO(tb.to_csv(tables))) if r["row"] == "fp")
    assert float(fp["measured_top1"]) == pytest.approx(90.0) and float(fp["paper_top1"]) == pytest.approx(98.6)
    assert float(fp["top1"]) == pytest.approx(90.0) and float(fp["top1_err"]) == pytest.approx(10.0)
    assert float(fp["top5"]) == pytest.approx(99.0) and float(fp["top5_err"]) == pytest.approx(1.0)
    assert float(fp["param_count"]) == pytest.approx(0.012345)  # millions, the trained model's
    assert (fp["w_bits"], fp["a_bits"], fp["img_size"], fp["data"], fp["seeds"]) == ("32", "32", "16", "fake", "0")
    lo, hi = float(fp["top1_ci95_lo"]), float(fp["top1_ci95_hi"])
    assert lo < 90.0 < hi and hi - lo == pytest.approx(2 * 100 * 1.96 * (0.9 * 0.1 / 500) ** 0.5, rel=0.05)


def test_footer_names_test_set_seeds_and_the_binomial_interval(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", test_size=2000)
    note = _tables(recipe_file, res)[0].footnote()
    assert "Test set: 2,000 images" in note and "±2.2 points" in note and "seed 0" in note
    assert half_width_pct(2000) == pytest.approx(2.19, abs=0.01)
    lo, hi = wilson(0.5, 2000)
    assert 100 * (hi - lo) / 2 == pytest.approx(2.19, abs=0.02)


def test_markdown_escapes_pipes_in_labels(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp")
    md = tb.to_markdown(_tables(recipe_file, res))
    line = next(ln for ln in md.splitlines() if "Full" in ln and ln.startswith("|"))
    assert "Full \\| precision" in line
    header = next(ln for ln in md.splitlines() if ln.startswith("| Method"))
    unescaped = line.replace("\\|", "").count("|")
    assert unescaped == header.count("|")  # as many cells as the header: the label is one cell


def test_latex_is_a_booktabs_table_with_escaped_text(cli, recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", sets=["data.name=digits"])
    code, tex, err = cli("table", str(recipe_file), "--results", str(res), "--format", "tex")
    assert code == 0, err
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"\midrule" in tex
    assert r"\bottomrule" in tex and r"Accuracy (\%) paper" in tex and r"$\Delta$" in tex
    assert "n/c" in tex and r"Full | precision" in tex and "98.60" in tex
    assert "**" not in tex and "—" not in tex
    code, _, err = cli("table", str(recipe_file), "--results", str(res), "--format", "pdf")
    assert code == 2 and "--format" in err


def test_protocol_overrides_mark_the_profile_cell(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", profile="smoke", sets=["train.epochs=3", "data.test_subset=50"])
    tables = _tables(recipe_file, res)
    row = _fp(tables)
    assert row.profile_cell == "smoke*"
    assert "train.epochs=3 (profile: 1)" in row.overrides and "data.test_subset=50 (profile: None)" in row.overrides
    note = tables[0].footnote()
    assert "`*` = the profile's protocol changed by `--set`" in note and "train.epochs=3 (profile: 1)" in note
    res2 = tmp_path / "res2"
    fake_run(res2, recipe_file, "fp", profile="smoke", sets=["data.name=digits"])  # another data set: no *
    assert _fp(_tables(recipe_file, res2)).profile_cell == "smoke"


# -------------------------------------------------------------------------------- item 2: paper scale


def test_complexity_columns_come_from_the_paper_scale_model(recipe_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp", profile="smoke")  # a smaller model (dim 16) trained
    fake_run(res, recipe_file, "count", profile="smoke")
    from bvbench.evaluate.profile import converted_model

    paper_row = load_recipe(str(recipe_file)).row("count")
    expected = sum(p.numel() for p in converted_model(paper_row, 10).parameters())
    t2 = _tables(recipe_file, res)[1]
    cell = t2.rows[0].cells["params"]
    assert cell.source == "paper-scale" and cell.measured == pytest.approx(expected / 1e6)
    assert cell.delta == pytest.approx(expected / 1e6 - 0.1)  # comparable at every profile
    assert "paper-scale model" in t2.footnote()
    cache = json.loads((res / "truth" / CACHE_FILE).read_text())
    assert cache["count"]["key"] == count_key(paper_row) and cache["count"]["params"] == expected
    # the cache is what later tables read (a changed entry shows), and a stale key is counted again
    cache["count"]["params"] = 777_000
    (res / "truth" / CACHE_FILE).write_text(json.dumps(cache))
    assert _tables(recipe_file, res)[1].rows[0].cells["params"].measured == pytest.approx(0.777)
    cache["count"]["key"] = "stale"
    (res / "truth" / CACHE_FILE).write_text(json.dumps(cache))
    assert _tables(recipe_file, res)[1].rows[0].cells["params"].measured == pytest.approx(expected / 1e6)
    # the summary keeps the trained model's own counts, labelled
    lines = tb.build_summary([load_recipe(str(recipe_file))], res)
    fp = next(x for x in lines if x.row == "fp")
    assert fp.ops == 6.0e5 and "trained model" in tb.summary_markdown(lines)
    summary = next(csv.DictReader(io.StringIO(tb.summary_csv(lines))))
    assert float(summary["param_count"]) == pytest.approx(0.012345)


# -------------------------------------------------------------------------- the run's table is the table


def test_run_prints_the_table_that_table_prints(cli, tmp_path: Path) -> None:
    """`bvbench run` with a data-set override and a protocol override prints `bvbench table`'s table: the
    data-set note, n/c and the `smoke*` cell included."""
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path)
    out = tmp_path / "res"
    code, stdout, err = cli("run", str(recipe), "--out", str(out), "--device", "cpu", "--profile", "smoke",
                            "--set", "data.name=digits", "--set", "data.test_subset=40")
    assert code == 0, err
    printed = stdout[stdout.index("### tiny — Table 1"):]
    code, table, _ = cli("table", str(recipe), "--results", str(out), "--profile", "smoke")
    assert code == 0 and printed.strip() == table.strip()
    assert "Not the paper's data set" in table and "| n/c " in table and "smoke*" in table
    assert "data.test_subset=40 (profile: None)" in table
    assert (out / "tiny" / "table.md").read_text().strip() == table.strip()


def test_extra_sections_follow_the_footnote_in_every_format(recipe_file: Path, tmp_path: Path) -> None:
    """The place claims and verdicts plug into: `Table.sections`, rendered after the table and its footnote."""
    res = tmp_path / "res"
    fake_run(res, recipe_file, "fp")
    tables = _tables(recipe_file, res)
    tables[0].sections.append(tb.Section("Claims", ["claim", "verdict"], [["a > b | c", "holds"]], "paired test"))
    md = tb.to_markdown(tables)
    assert md.index("#### Claims") > md.index("_Measured on") and "a > b \\| c" in md and "_paired test_" in md
    assert md.index("#### Claims") < md.index("### truth — Table 2")
    tex = tb.to_latex(tables)
    assert r"\caption{Claims}" in tex and "a > b | c & holds" in tex
    assert len(tb.to_rich(tables)) == 3  # two tables and the section
