"""Issue 14, plots people can read: no untrained row in accuracy plots, labels that never overlap, the packed
size on the size axis, log-scaled confusion matrices, attention maps as patch blocks on one perceptual scale."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.text import Text

from bvbench.recipes import load_recipe
from bvbench.report import plots
from bvbench.report.attention import HEAT_CMAP, heat_panel, shared_scale
from tests.report.test_plots import RECIPE, write_run


def _recipe(tmp_path: Path, text: str):
    f = tmp_path / "plotme.yaml"
    f.write_text(text)
    return load_recipe(str(f))


def test_untrained_rows_never_appear_in_accuracy_plots(tmp_path: Path) -> None:
    text = RECIPE.replace("  - name: pend", """  - name: count
    label: Counted only
    train: {epochs: 0}
  - name: pend""")
    recipe = _recipe(tmp_path, text)
    res = tmp_path / "res"
    write_run(res, "fp", "paper-a", top1=0.3, ops=4.8e5, size_mb=0.11, stages=[("main", 2)],
              cm=[[5, 0, 0], [1, 3, 0], [2, 2, 4]])
    write_run(res, "count", "paper-z", top1=0.1, ops=4.8e5, size_mb=0.11, stages=[("main", 0)],
              cm=[[5, 0, 0], [1, 3, 0], [2, 2, 4]])
    rr = plots.finished_runs(recipe, res, "paper")
    assert [r.row.name for r in rr.runs] == ["fp"]
    assert "count" not in {p.row for p in plots.accuracy_points(rr, "ops")}
    fig = plots.confusion_figure(rr)
    assert "Counted only" not in {ax.get_title().splitlines()[0] for ax in fig.axes if ax.get_title()}
    plt.close(fig)


def _overlaps(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [(t.get_text(), Text.get_window_extent(t, r)) for t in ax.texts]  # the text, not its leader line
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_labels_never_overlap_even_when_points_crowd(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = [plots.Point(f"r{i}", f"row label number {i}", "ours" if i % 2 else "paper",
                       float(1e6 * (1 + 0.01 * rng.random())), float(50 + 0.2 * rng.random())) for i in range(30)]
    pts += [plots.Point("far", "far away", "ours", 1e9, 90.0)]
    fig = plots.scatter_figure(pts, "OPs", "crowded")
    assert _overlaps(fig) == []
    ax = fig.axes[0]
    inside = ax.get_window_extent(fig.canvas.get_renderer())
    for t in ax.texts:
        bb = Text.get_window_extent(t, fig.canvas.get_renderer())
        assert inside.x0 - 1 <= bb.x0 and bb.x1 <= inside.x1 + 1 and inside.y0 - 1 <= bb.y0 and bb.y1 <= inside.y1 + 1
    shown = {t.get_text() for t in ax.texts}
    key = " ".join(t.get_text() for t in fig.texts)
    assert "far away" in shown
    assert all(p.label in shown or f"{p.label} (" in key for p in pts)  # every row is named somewhere
    assert len(shown) < len(pts) and "Not labelled in the plot" in key  # 31 labels cannot all fit here
    plt.close(fig)


def test_few_points_are_all_labelled_in_the_axes() -> None:
    pts = [plots.Point(f"r{i}", f"Row {i}", "ours", 10.0 ** (3 + i), 40.0 + 5 * i) for i in range(5)]
    fig = plots.scatter_figure(pts, "OPs", "few")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(p.label for p in pts)
    assert not fig.texts and _overlaps(fig) == []
    plt.close(fig)


def test_size_axis_is_the_packed_size(tmp_path: Path) -> None:
    """A paper that prints fp32 sizes (Bit-ViT's 'Model size'): ours at the packed size, no paper points (an
    fp32 size is not a packed size); MiB columns are converted to MB."""
    text = RECIPE.replace("{key: size_mb, label: Size (MB), unit: MB}", "{key: size_fp32_mib, label: Size, unit: MiB}")
    text = text.replace("size_mb: 0.5", "size_fp32_mib: 0.5").replace("size_mb: 0.05", "size_fp32_mib: 0.05")
    text = text.replace("size_mb: 0.1", "size_fp32_mib: 0.1")
    recipe = _recipe(tmp_path, text)
    res = tmp_path / "res"
    write_run(res, "fp", "paper-a", top1=0.3, ops=4.8e5, size_mb=0.11, stages=[("main", 2)], cm=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    write_run(res, "bin", "paper-b", top1=0.25, ops=4.0e4, size_mb=0.017, stages=[("main", 2)], cm=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert plots.size_key(recipe) == "size_mb"
    pts = plots.accuracy_points(plots.finished_runs(recipe, res, "paper"), "size_mb")
    assert {(p.row, p.source, p.cost) for p in pts} == {("fp", "ours", 0.11), ("bin", "ours", 0.017)}
    mib = _recipe(tmp_path, RECIPE.replace("{key: size_mb, label: Size (MB), unit: MB}",
                                           "{key: size_mib, label: Size, unit: MiB}").replace("size_mb:", "size_mib:"))
    paper = {p.row: p.cost for p in plots.accuracy_points(plots.finished_runs(mib, res, "paper"), "size_mb")
             if p.source == "paper"}
    assert paper["fp"] == pytest.approx(0.5 * 2**20 / 1e6)


def test_confusion_matrices_are_row_normalised_on_a_log_scale(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, RECIPE)
    res = tmp_path / "res"
    write_run(res, "fp", "paper-a", top1=0.95, ops=4.8e5, size_mb=0.11, stages=[("main", 2)],
              cm=[[95, 5, 0], [0, 100, 0], [1, 0, 99]])
    fig = plots.confusion_figure(plots.finished_runs(recipe, res, "paper"))
    im = next(ax for ax in fig.axes if ax.images and ax.get_title()).images[0]
    assert isinstance(im.norm, LogNorm) and im.norm.clip
    arr = np.asarray(im.get_array())
    assert arr.sum(axis=1) == pytest.approx([1, 1, 1]) and arr[0, 1] == pytest.approx(0.05)
    rgba = im.to_rgba(arr)
    # a 1 % and a 5 % error are visibly different from no error and from each other (linear scale: nearly not)
    assert not np.allclose(rgba[2, 0], rgba[0, 2]) and not np.allclose(rgba[0, 1], rgba[2, 0])
    assert np.abs(rgba[0, 1, :3] - rgba[0, 2, :3]).sum() > 0.3
    plt.close(fig)


def test_attention_panels_are_patch_blocks_on_one_perceptual_scale() -> None:
    heats = [np.arange(16, dtype=float).reshape(4, 4) / 100, np.full((4, 4), 0.05)]
    vmax = shared_scale(heats)
    assert vmax == pytest.approx(0.15)
    fig, axes = plt.subplots(1, 2)
    img = np.zeros((16, 16, 3))
    ims = [heat_panel(ax, img, h, vmax) for ax, h in zip(axes, heats, strict=True)]
    for im in ims:
        assert im.get_interpolation() == "nearest" and im.get_cmap().name == HEAT_CMAP in ("viridis", "magma")
        assert im.get_clim() == (0.0, pytest.approx(0.15))
        assert np.asarray(im.get_array()).shape == (4, 4)  # one value per patch, not smoothed to pixels
        assert im.get_extent() == [-0.5, 15.5, 15.5, -0.5]  # the patches cover the image
    plt.close(fig)
