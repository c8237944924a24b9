"""results/README.md from a results folder written by the test: tables inlined, every figure linked and real."""

from __future__ import annotations

import re
from pathlib import Path

from bvbench.recipes import load_recipe
from bvbench.report.plots import plot_recipe
from bvbench.report.readme import write_readme
from bvbench.report.table import build_tables, write_tables


def test_readme_links_every_table_and_figure_and_states_the_override(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu")[0] == 0
    rec = load_recipe(str(tiny_recipe))
    write_tables(build_tables(rec, out), out, rec.name)
    figs = plot_recipe(rec, out)
    assert {p.name for p in figs} >= {"curves.png", "confusion.png"}
    entry = {"recipe": str(tiny_recipe), "status": "finished", "data": "fake", "seconds": 12.0,
             "override": "cifar100 is not present here; run on fake with --set data.name=fake"}
    text = write_readme(out, [entry], profile="paper").read_text()
    assert "## test" in text  # one section per paper (its citation)
    assert "**Data override.**" in text and "run on fake" in text
    assert "| Full precision" in text and "| Reference only" in text  # the table itself, rows in order
    assert "Rows: 1 finished, 1 reference." in text
    m = re.search(r"Runs: 1 trained for this recipe \(([0-9.]+) min of training on paper profile\)\.", text)
    assert m, text
    import json

    (run,) = (out / "tiny" / "fp").iterdir()
    assert float(m.group(1)) == round(json.loads((run / "metrics.json").read_text())["train_time_s"] / 60, 1)
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert "tiny/table.md" in links and "tiny/table.csv" in links
    for fig in figs:
        assert f"tiny/{fig.name}" in links
    for link in links:
        target = out / link
        assert target.is_file(), link
        if link.endswith(".png"):
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_of_a_recipe_not_run_says_so(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    entry = {"recipe": str(tiny_recipe), "status": "skipped", "data": None,
             "reason": "CIFAR-100 not found: expected /x/cifar-100-python"}
    text = write_readme(out, [entry]).read_text()
    assert "Nightly status: **skipped**" in text and "CIFAR-100 not found" in text
    assert "Rows: 1 not run, 1 reference." in text and "table.md" not in text


def test_table_says_when_runs_used_another_data_set_than_the_paper(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert cli("run", str(tiny_recipe), "--out", str(out), "--device", "cpu", "--set", "data.name=digits",
               "--set", "train.epochs=1")[0] == 0
    (table, *_) = build_tables(load_recipe(str(tiny_recipe)), out)
    note = table.footnote()
    assert "Not the paper's data set" in note and "used digits" in note and "the paper fake" in note
    code, md, _ = cli("table", str(tiny_recipe), "--results", str(out))
    assert code == 0 and "Not the paper's data set" in md
