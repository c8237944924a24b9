"""Recipe figures (PNG, next to the tables in results/<recipe>/): accuracy vs OPs and vs size, training curves,
and every row's confusion matrix in one grid. `plot_recipe` writes them all; the `*_figure` builders return the
matplotlib Figure so that callers (and tests) can inspect it."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bvbench.recipes.schema import UNITS, PaperColumn, Recipe, Row
from bvbench.report.table import latest_run, untrained
from bvbench.results import Metrics, atomic_write_bytes

matplotlib.use("Agg")  # files only, never a window (pyplot resolves its backend lazily)
logger = logging.getLogger(__name__)
DPI = 110

# Size metrics in preference order: the first one a paper column prints is what the size figure shows.
SIZE_KEYS = ("size_mb", "size_mib", "size_fp32_mib")
SIZE_LABELS = {
    "size_mb": "packed model size (MB = 10^6 bytes, weights at their bit width)",
    "size_mib": "model size (MiB, weights at their bit width)",
    "size_fp32_mib": "model size (MiB, every parameter as fp32)",
}


@dataclass
class FinishedRun:
    """The newest finished run of one recipe row: its metrics.json and folder."""

    row: Row
    metrics: Metrics
    path: Path

    @property
    def label(self) -> str:
        return self.row.label


@dataclass
class Point:
    """One marker of an accuracy-vs-cost figure; `accuracy` in percent, `cost` in the metric's raw unit."""

    row: str
    label: str
    source: str  # "paper" | "ours"
    cost: float
    accuracy: float


@dataclass
class RecipeRuns:
    """A recipe's finished runs (recipe order) and what the figure titles say about them."""

    recipe: Recipe
    runs: list[FinishedRun] = field(default_factory=list)
    profile: str | None = None

    def data_display(self) -> str:
        shown = sorted({str(r.metrics.data.display) for r in self.runs})
        if shown:
            return ", ".join(shown)
        from bvbench.data import dataset_info

        try:
            return dataset_info(self.recipe.data.name).display
        except Exception:  # an unregistered data set name: show it as written
            return self.recipe.data.name

    def subtitle(self) -> str:
        shown = sorted({str(r.metrics.profile) for r in self.runs})
        if not shown:
            which = f" of profile {self.profile}" if self.profile else ""
            return f"{self.data_display()}, paper values only (no finished runs{which})"
        return f"{self.data_display()}, profile {', '.join(shown)}"


def finished_runs(recipe: Recipe, results: Path, profile: str | None = None) -> RecipeRuns:
    """The newest finished run of every runnable row (via `latest_run`), in the recipe's order; rows that
    trained nothing from nothing (complexity only) are left out."""
    out = RecipeRuns(recipe, profile=profile)
    for row in recipe.rows:
        if row.status != "run":
            continue
        m = latest_run(results, recipe.name, row.name, profile)
        if m is None or untrained(row, m):  # complexity-only rows (untrained): no accuracy to plot
            continue
        out.runs.append(FinishedRun(row, m, results / recipe.name / row.name / str(m.run_id or "")))
    return out


# ------------------------------------------------------------------------------------------ paper values


def paper_column(recipe: Recipe, row: Row, key: str) -> PaperColumn | None:
    """The column `key` of the paper table the row belongs to (its `table`, else the first table)."""
    name = row.table or recipe.paper.tables[0].name
    for t in recipe.paper.tables:
        if t.name == name:
            for c in t.columns:
                if c.key == key:
                    return c
    return None


def paper_value(recipe: Recipe, row: Row, key: str) -> float | None:
    """The paper's printed value of `key` for `row`, converted back to the raw metrics.json unit."""
    col = paper_column(recipe, row, key)
    v = row.paper.get(key)
    if col is None or not isinstance(v, int | float) or isinstance(v, bool):
        return None
    return float(v) / UNITS[col.unit]


def size_key(recipe: Recipe) -> str:
    """The size the size figure shows: always the packed size (size_mb, weights at their bit width), so 1-bit
    rows sit left of full-precision ones whatever size the paper prints."""
    return "size_mb"


PACKED_PAPER_SIZES = {"size_mb": 1.0, "size_mib": 2**20 / 1e6}  # paper size columns at bit width, to MB


def accuracy_points(rr: RecipeRuns, key: str) -> list[Point]:
    """Paper points (rows whose paper printed both top-1 and `key`) and measured points (finished rows)."""
    pts: list[Point] = []
    for row in rr.recipe.rows:
        acc, cost = paper_value(rr.recipe, row, "top1"), paper_value(rr.recipe, row, key)
        if key == "size_mb":  # the paper's packed size in MB (MiB converted); fp32 sizes are not packed sizes
            cost = next((v * f for k, f in PACKED_PAPER_SIZES.items()
                         if (v := paper_value(rr.recipe, row, k)) is not None), None)
        if acc is not None and cost is not None and cost > 0:
            pts.append(Point(row.name, row.label, "paper", cost, 100 * acc))
    for run in rr.runs:
        acc, cost = run.metrics.top1, run.metrics.value(key)
        if isinstance(acc, int | float) and isinstance(cost, int | float) and cost > 0:
            pts.append(Point(run.row.name, run.label, "ours", float(cost), 100 * float(acc)))
    return pts


# ------------------------------------------------------------------------------------------ figures


def _colors(names: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def scatter_figure(points: list[Point], xlabel: str, title: str, order: list[str] | None = None) -> Figure:
    """Top-1 against a cost on a log x axis: filled circles = ours, open squares = paper, one colour per row
    (by position in `order`, the recipe's rows, so colours agree across figures), each point labelled with its
    row; a dotted line joins a row's paper and measured points."""
    rows = list(dict.fromkeys(p.row for p in points))
    color = _colors(list(dict.fromkeys([*(order or []), *rows])))
    big = len(points) > 12
    fig, ax = plt.subplots(figsize=(12, 8.5) if big else (8.5, 5.8), dpi=DPI)
    for source, marker, face in (("paper", "s", "none"), ("ours", "o", None)):
        pts = [p for p in points if p.source == source]
        if not pts:
            continue
        cs = [color[p.row] for p in pts]
        ax.scatter([p.cost for p in pts], [p.accuracy for p in pts], marker=marker, s=60, linewidths=1.5,
                   facecolors=cs if face is None else face, edgecolors=cs, label=source, zorder=3)
    for row in rows:
        pair = [p for p in points if p.row == row]
        if len(pair) == 2:
            ax.plot([q.cost for q in pair], [q.accuracy for q in pair], ":", color=color[row], lw=1, zorder=2)
    ax.set_xscale("log")
    xs = [p.cost for p in points]
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 2.5, hi * 2.5)  # room for the labels around the points
    ys = [p.accuracy for p in points]
    pad = max(2.0, 0.08 * (max(ys) - min(ys)))
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel(xlabel + " (log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    sources = {p.source for p in points}
    handles = [h for src, h in (
        ("paper", Line2D([], [], marker="s", ls="", mfc="none", mec="gray", label="paper")),
        ("ours", Line2D([], [], marker="o", ls="", color="gray", label="ours (measured)"))) if src in sources]
    ax.legend(handles=handles, loc="best", fontsize=8)
    fig.tight_layout()
    left = _place_labels(ax, points, color, fontsize=8 if len(points) <= 20 else 6.5)
    if left:
        _label_key(fig, left)
    return fig


def _boxes(ax: Any, points: list[Point], renderer: Any) -> list[Any]:
    """What a label must not cover: every marker and the legend."""
    boxes = []
    for p in points:
        x, y = ax.transData.transform((p.cost, p.accuracy))
        boxes.append(matplotlib.transforms.Bbox([[x - 5, y - 5], [x + 5, y + 5]]))
    if ax.get_legend() is not None:
        boxes.append(ax.get_legend().get_window_extent(renderer))
    return boxes


def _fits(bb: Any, inside: Any, taken: list[Any]) -> bool:
    return (bb.x0 >= inside.x0 and bb.x1 <= inside.x1 and bb.y0 >= inside.y0 and bb.y1 <= inside.y1
            and not any(bb.overlaps(o) for o in taken))


DIRS = [(1, 0.3, "left", "bottom"), (1, -0.3, "left", "top"), (-1, 0.3, "right", "bottom"),
        (-1, -0.3, "right", "top"), (0, 1, "center", "bottom"), (0, -1, "center", "top"),
        (1, 1, "left", "bottom"), (-1, -1, "right", "top")]


def _candidates(x: float, y: float, w: float, h: float, pt: float) -> Any:
    """(offset in points, ha, va, pixel bbox) of a w x h label at the nearest of 8 directions x 5 distances."""
    for r in (5, 12, 22, 34, 50):
        for dx, dy, ha, va in DIRS:
            ox, oy = x + dx * r * pt, y + dy * r * pt
            x0 = ox - {"left": 0.0, "right": w, "center": w / 2}[ha]
            y0 = oy - {"bottom": 0.0, "top": h, "center": h / 2}[va]
            box = matplotlib.transforms.Bbox([[x0, y0], [x0 + w, y0 + h]]).expanded(1.04, 1.15)
            yield (dx * r, dy * r), ha, va, box


def _place_labels(ax: Any, points: list[Point], color: dict[str, Any], fontsize: float) -> list[Point]:
    """Label every point with its row label where the text overlaps no other label, marker or the legend and
    stays inside the axes: greedily (the nearest of 8 directions x 5 distances), then adjustText for the rest.
    Returns the points no free place was found for (they get no label in the axes: see `_label_key`)."""
    from matplotlib.colors import to_rgb

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    taken = _boxes(ax, points, renderer)
    pt = fig.dpi / 72  # pixels per point
    left = []
    for p in points:
        dark = tuple(0.7 * c for c in to_rgb(color[p.row]))
        probe = ax.text(0, 0, p.label, fontsize=fontsize, transform=None)
        size = probe.get_window_extent(renderer)
        probe.remove()
        x, y = ax.transData.transform((p.cost, p.accuracy))
        for off, ha, va, box in _candidates(x, y, size.width, size.height, pt):
            if _fits(box, inside, taken):
                far = abs(off[0]) >= 22 or abs(off[1]) >= 22
                ax.annotate(p.label, (p.cost, p.accuracy), textcoords="offset points", xytext=off, ha=ha, va=va,
                            fontsize=fontsize, color=dark,
                            arrowprops={"arrowstyle": "-", "color": dark, "lw": 0.5, "alpha": 0.6} if far else None)
                taken.append(box)
                break
        else:
            left.append(p)
    return _adjust_rest(ax, left, color, fontsize, taken, inside) if left else []


def _adjust_rest(ax: Any, left: list[Point], color: dict[str, Any], fontsize: float, taken: list[Any],
                 inside: Any) -> list[Point]:
    """adjustText for the labels the greedy pass could not place; those still overlapping are removed."""
    try:
        from adjustText import adjust_text
    except ImportError:  # optional at run time: the greedy pass alone, the rest listed under the figure
        return left
    renderer = ax.figure.canvas.get_renderer()
    texts = [ax.text(p.cost, p.accuracy, p.label, fontsize=fontsize, color=color[p.row]) for p in left]
    adjust_text(texts, objects=list(taken), ax=ax, time_lim=2.0, ensure_inside_axes=True)
    still = []
    for p, t in zip(left, texts, strict=True):
        bb = t.get_window_extent(renderer).expanded(1.04, 1.15)
        if _fits(bb, inside, taken):
            taken.append(bb)
            tx, ty = t.get_position()  # a thin leader line from the point to its moved label
            ax.plot([p.cost, tx], [p.accuracy, ty], "-", color=color[p.row], lw=0.5, alpha=0.6, zorder=1,
                    label="_leader")
        else:
            t.remove()
            still.append(p)
    return still


def _label_key(fig: Figure, left: list[Point]) -> None:
    """The labels that found no free place, listed under the axes (the figure grows; the axes keep their
    size in pixels, so the labels placed stay clear of each other)."""
    lines = [f"{p.label} ({p.source}): cost {p.cost:.3g}, top-1 {p.accuracy:.2f} %" for p in left]
    per_row = 3
    rows = ["    ".join(lines[i:i + per_row]) for i in range(0, len(lines), per_row)]
    text = "Not labelled in the plot (no free place): " + "\n".join(rows)
    w, h = fig.get_size_inches()
    extra = (len(rows) + 1) * 7 * 1.5 / 72 + 0.15
    boxes = [ax.get_position() for ax in fig.axes]
    fig.set_size_inches(w, h + extra)
    for ax, b in zip(fig.axes, boxes, strict=True):
        ax.set_position([b.x0, (b.y0 * h + extra) / (h + extra), b.width, b.height * h / (h + extra)])
    fig.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left", wrap=False)


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv rows with numbers parsed (empty cells become NaN)."""
    out = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in rec.items():
                if k == "stage":
                    parsed[k] = v
                    continue
                try:
                    parsed[k] = float(v) if v not in ("", None) else math.nan
                except ValueError:
                    parsed[k] = math.nan
            out.append(parsed)
    return out


def curves_figure(rr: RecipeRuns) -> Figure | None:
    """Train loss and test top-1 per epoch (epochs counted across stages) of every finished row with a
    history.csv; a row's stage boundaries are dashed vertical lines in its colour. None when there is none."""
    hist = [(run, read_history(run.path / "history.csv")) for run in rr.runs if (run.path / "history.csv").exists()]
    hist = [(run, h) for run, h in hist if h]
    if not hist:
        return None
    color = _colors([r.name for r in rr.recipe.rows])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.8))
    for run, h in hist:
        x = np.arange(1, len(h) + 1)
        c = color[run.row.name]
        ax_loss.plot(x, [r.get("train_loss", math.nan) for r in h], "-o", ms=3, color=c, label=run.label)
        ax_acc.plot(x, [100 * r.get("test_top1", math.nan) for r in h], "-o", ms=3, color=c, label=run.label)
        for i in range(1, len(h)):
            if h[i]["stage"] != h[i - 1]["stage"]:
                for ax in (ax_loss, ax_acc):
                    ax.axvline(i + 0.5, color=c, ls="--", lw=1, alpha=0.7)
                ax_acc.annotate(f"{h[i]['stage']} →", (i + 0.5, 1.0), xycoords=("data", "axes fraction"),
                                xytext=(3, -12), textcoords="offset points", fontsize=7, color=c)
    for ax, ylabel in ((ax_loss, "train loss"), (ax_acc, "test top-1 (%)")):
        ax.set_xlabel("epoch (across stages)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_title("training loss")
    ax_acc.set_title("test top-1")
    ax_acc.legend(fontsize=8, loc="best")
    fig.suptitle(f"{rr.recipe.name}: training curves — {rr.subtitle()} (dashed: stage boundary)", fontsize=10)
    fig.tight_layout()
    return fig


def read_confusion(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and the count matrix (rows = true class) of a confusion.csv."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    classes = lines[0][1:]
    cm = np.array([[float(v) for v in line[1:]] for line in lines[1:]], dtype=float)
    return classes, cm


CONFUSION_CMAP = "viridis"
CONFUSION_FLOOR = 1e-3  # fractions below this read as the floor colour: errors at 95 % accuracy still show


def confusion_norm() -> Any:
    """Log colour scale from CONFUSION_FLOOR to 1, values below clipped to the floor (zeros included)."""
    from matplotlib.colors import LogNorm

    return LogNorm(vmin=CONFUSION_FLOOR, vmax=1.0, clip=True)


def confusion_figure(rr: RecipeRuns) -> Figure | None:
    """Every finished row's row-normalised confusion matrix in one grid with a shared colour bar."""
    mats = [(run, *read_confusion(run.path / "confusion.csv")) for run in rr.runs
            if (run.path / "confusion.csv").exists()]
    if not mats:
        return None
    n = len(mats)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    n_classes = max(len(c) for _, c, _ in mats)
    cell = 3.2 if n_classes <= 10 else 4.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + 1.4, cell * nrows + 0.8), squeeze=False,
                             layout="constrained")
    im = None
    for ax, (run, classes, cm) in zip(axes.flat, mats, strict=False):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # row-normalised: fraction of the true class
        im = ax.imshow(norm, cmap=CONFUSION_CMAP, norm=confusion_norm(), interpolation="nearest")
        top1 = run.metrics.top1
        ax.set_title(run.label + (f"\ntop-1 {100 * top1:.1f}%" if isinstance(top1, int | float) else ""), fontsize=9)
        k = len(classes)
        if k <= 12:
            ax.set_xticks(range(k), classes, rotation=90, fontsize=6)
            ax.set_yticks(range(k), classes, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{rr.recipe.name}: confusion matrices (row-normalised) — {rr.subtitle()}", fontsize=10)
    assert im is not None
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8,
                 label=f"fraction of the true class (log scale; below {CONFUSION_FLOOR:g} clipped)")
    return fig


# ------------------------------------------------------------------------------------------ all of them


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_recipe(recipe: Recipe, results: Path, profile: str | None = None,
                log: Callable[[str], None] | None = None, out: Path | None = None) -> list[Path]:
    """Write accuracy_vs_ops.png, accuracy_vs_size.png, curves.png and confusion.png into `out` (default
    results/<recipe>/); a figure with nothing to show is skipped with one log line. Returns the files written."""
    say = log or logger.warning
    results = Path(results)
    rr = finished_runs(recipe, results, profile)
    out_dir = Path(out) if out is not None else results / recipe.name
    written: list[Path] = []
    skey = size_key(recipe)
    for fname, key, xlabel in (("accuracy_vs_ops.png", "ops", "OPs per image (BOPs/64 + FLOPs)"),
                               ("accuracy_vs_size.png", skey, SIZE_LABELS[skey])):
        pts = accuracy_points(rr, key)
        if not pts:
            say(f"{recipe.name}: {fname} skipped: no finished run has top1 and {key}, and the paper prints no "
                f"row with both")
            continue
        what = "OPs" if key == "ops" else "model size"
        title = f"{recipe.name}: top-1 vs {what} — {rr.subtitle()}"
        written.append(_save(scatter_figure(pts, xlabel, title, [r.name for r in recipe.rows]), out_dir / fname))
    for fname, build in (("curves.png", curves_figure), ("confusion.png", confusion_figure)):
        fig = build(rr)
        if fig is None:
            say(f"{recipe.name}: {fname} skipped: no finished runs"
                + (f" of profile {profile!r}" if profile else "") + f" in {out_dir}")
            continue
        written.append(_save(fig, out_dir / fname))
    return written


__all__ = ["Point", "accuracy_points", "confusion_figure", "curves_figure", "finished_runs", "paper_value",
           "plot_recipe", "scatter_figure", "size_key"]
