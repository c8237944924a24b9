"""plot_recipe and its figures from a results folder written here (metrics.json, history.csv, confusion.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bvbench.recipes import load_recipe
from bvbench.report import plots
from bvbench.report.table import build_tables, to_markdown
from bvbench.results import Metrics, RunDir

RECIPE = """
name: plotme
title: plot test recipe
paper:
  citation: test
  file: none.txt
  tables:
    - name: Table 1
      columns:
        - {key: top1, label: Top-1 (%), unit: percent}
        - {key: ops, label: OPs (10^8), unit: x1e8}
        - {key: size_mb, label: Size (MB), unit: MB}
data: {name: fake, img_size: 16, num_workers: 0}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
train: {epochs: 2, batch_size: 32}
rows:
  - name: fp
    label: Full precision
    paper: {top1: 70.5, ops: 0.02, size_mb: 0.5}
  - name: bin
    label: Binary two-stage
    stages: [{name: warm, epochs: 2}, {name: bin, epochs: 3}]
    paper: {top1: 60.0, ops: 0.001}
  - name: pend
    label: Not run yet
    paper: {top1: 55.0, ops: 0.004, size_mb: 0.05}
  - name: ref
    label: A CNN
    status: reference
    paper: {top1: 50.0, size_mb: 0.1}
"""

CLASSES = ["cat", "dog", "eel"]


def write_run(results: Path, row: str, run_id: str, *, top1: float, ops: float, size_mb: float,
              stages: list[tuple[str, int]], cm: list[list[int]], profile: str = "paper") -> Path:
    """A finished run folder as the runner leaves it (the files the plots read)."""
    d = results / "plotme" / row / run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"recipe": "plotme", "profile": profile, "row": {"name": row}}))
    RunDir(d).write_metrics(Metrics.of({
        "recipe": "plotme", "row": row, "label": row, "run_id": run_id, "profile": profile, "seed": 0,
        "data": {"name": "fake", "display": "Fake (synthetic)"}, "epochs": sum(e for _, e in stages),
        "top1": top1, "f1": top1 - 0.05, "ops": ops, "size_mb": size_mb, "device": "cpu"}))
    lines = ["stage,epoch,lr,train_loss,train_top1,test_loss,test_top1,images_per_s,epoch_time_s"]
    k = 0
    for stage, epochs in stages:
        for e in range(1, epochs + 1):
            k += 1
            lines.append(f"{stage},{e},0.001,{2.0 - 0.1 * k},0.5,1.5,{0.1 * k},100,1.0")
    (d / "history.csv").write_text("\n".join(lines) + "\n")
    rows = ["true\\pred," + ",".join(CLASSES)] + [f"{c}," + ",".join(map(str, r)) for c, r in zip(CLASSES, cm, strict=True)]
    (d / "confusion.csv").write_text("\n".join(rows) + "\n")
    (d / ".done").write_text("done\n")
    return d


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    write_run(res, "fp", "paper-a", top1=0.3, ops=4.8e5, size_mb=0.11, stages=[("main", 2)],
              cm=[[5, 0, 0], [1, 3, 0], [2, 2, 4]])
    write_run(res, "bin", "paper-b", top1=0.25, ops=4.0e4, size_mb=0.017, stages=[("warm", 2), ("bin", 3)],
              cm=[[4, 1, 0], [0, 4, 0], [0, 0, 8]])
    # a smoke-profile run of `pend`: only seen without a profile filter
    write_run(res, "pend", "smoke-c", top1=0.1, ops=1e5, size_mb=0.05, stages=[("main", 1)],
              cm=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], profile="smoke")
    return res


@pytest.fixture
def recipe(tmp_path: Path):
    f = tmp_path / "plotme.yaml"
    f.write_text(RECIPE)
    return load_recipe(str(f))


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_table_and_plots_render_from_a_results_folder(recipe, results: Path) -> None:
    md = to_markdown(build_tables(recipe, results, "paper"))
    assert "| Full precision" in md and "30.00" in md and "25.00" in md  # measured top-1 in paper units
    logs: list[str] = []
    files = plots.plot_recipe(recipe, results, "paper", log=logs.append)
    names = [p.name for p in files]
    assert names == ["accuracy_vs_ops.png", "accuracy_vs_size.png", "curves.png", "confusion.png"]
    assert not logs
    for p in files:
        assert p.parent == results / "plotme"
        w, h = png_size(p)
        assert w >= 600 and h >= 350
        assert p.stat().st_size > 15_000  # a drawn figure, not an empty canvas


def test_accuracy_points_paper_vs_ours_in_raw_units(recipe, results: Path) -> None:
    rr = plots.finished_runs(recipe, results, "paper")
    assert [r.row.name for r in rr.runs] == ["fp", "bin"]  # the smoke run of `pend` is filtered out
    pts = plots.accuracy_points(rr, "ops")
    paper = {p.row: p for p in pts if p.source == "paper"}
    ours = {p.row: p for p in pts if p.source == "ours"}
    # paper OPs printed in units of 10^8 -> raw counts; `ref` printed no OPs
    assert set(paper) == {"fp", "bin", "pend"}
    assert paper["fp"].cost == pytest.approx(2e6) and paper["fp"].accuracy == pytest.approx(70.5)
    assert set(ours) == {"fp", "bin"}
    assert ours["bin"].cost == pytest.approx(4e4) and ours["bin"].accuracy == pytest.approx(25.0)
    size = plots.accuracy_points(rr, plots.size_key(recipe))
    assert sorted((p.row, p.source) for p in size) == [
        ("bin", "ours"), ("fp", "ours"), ("fp", "paper"), ("pend", "paper"), ("ref", "paper")]


def test_scatter_has_one_marker_and_one_label_per_point(recipe, results: Path) -> None:
    pts = plots.accuracy_points(plots.finished_runs(recipe, results, "paper"), "ops")
    fig = plots.scatter_figure(pts, "OPs", "title")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(offsets) == len(pts) == 5
    assert sorted(t.get_text() for t in ax.texts) == sorted(p.label for p in pts)


def test_curves_one_line_per_row_and_stage_boundaries(recipe, results: Path) -> None:
    fig = plots.curves_figure(plots.finished_runs(recipe, results, "paper"))
    assert fig is not None
    ax_loss, ax_acc = fig.axes
    for ax in (ax_loss, ax_acc):
        series = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
        assert set(series) == {"Full precision", "Binary two-stage"}  # one line per finished row, by label
    loss = {ln.get_label(): ln for ln in ax_loss.lines}["Binary two-stage"]
    assert list(loss.get_xdata()) == [1, 2, 3, 4, 5]  # epochs counted across the two stages
    assert list(loss.get_ydata()) == pytest.approx([1.9, 1.8, 1.7, 1.6, 1.5])
    acc = {ln.get_label(): ln for ln in ax_acc.lines}["Binary two-stage"]
    assert list(acc.get_ydata()) == pytest.approx([10, 20, 30, 40, 50])  # test top-1 in percent
    boundaries = [ln for ln in ax_acc.lines if ln.get_label().startswith("_") and ln.get_linestyle() == "--"]
    assert [ln.get_xdata()[0] for ln in boundaries] == [2.5]  # only `bin` changes stage, after epoch 2


def test_confusion_grid_one_panel_per_finished_row_row_normalised(recipe, results: Path) -> None:
    fig = plots.confusion_figure(plots.finished_runs(recipe, results, None))
    assert fig is not None
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["Full precision", "Binary two-stage", "Not run yet"]
    first = panels[0].images[0].get_array()
    assert np.asarray(first).sum(axis=1) == pytest.approx([1, 1, 1])
    assert np.asarray(first)[2] == pytest.approx([0.25, 0.25, 0.5])


def test_nothing_to_plot_is_skipped_with_a_log_line(tmp_path: Path) -> None:
    text = RECIPE.replace("ops: 0.02, ", "").replace("ops: 0.001", "").replace("ops: 0.004, ", "")
    f = tmp_path / "plotme.yaml"
    f.write_text(text)
    recipe = load_recipe(str(f))
    logs: list[str] = []
    files = plots.plot_recipe(recipe, tmp_path / "empty", log=logs.append)
    # the paper prints sizes, so the size figure still has paper points
    assert [p.name for p in files] == ["accuracy_vs_size.png"]
    assert len(logs) == 3
    assert any("accuracy_vs_ops.png skipped" in m for m in logs)
    assert any("curves.png skipped: no finished runs" in m for m in logs)
    assert not (tmp_path / "empty" / "plotme" / "curves.png").exists()
