"""Comparison tables: each paper table's rows in the paper's order, paper | measured | delta per column.

A row run with several seeds shows the mean over seeds (the newest finished run of each seed, one profile) with
its sample standard deviation. Three views: `full` (paper | ours | Δ), `paper` (what the paper printed, as the
recipe transcribes it) and `measured` (ours only). `build_summary` lists every finished row across recipes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvbench.errors import BvbenchError
from bvbench.recipes.schema import UNITS, PaperColumn, Recipe
from bvbench.results import Metrics, RunDir, find_runs

logger = logging.getLogger(__name__)
MISSING = "—"
VIEWS = ("full", "paper", "measured")


@dataclass
class Cell:
    paper: Any = None
    measured: float | None = None  # mean over seeds, in the paper's unit
    std: float | None = None  # sample standard deviation over seeds (ddof=1), when n > 1
    n: int = 0  # how many runs (seeds) the measurement averages

    @property
    def delta(self) -> float | None:
        if isinstance(self.paper, int | float) and self.measured is not None:
            return self.measured - float(self.paper)
        return None


@dataclass
class TableRow:
    name: str
    label: str
    status: str  # run | pending | reference | not run | finished
    cells: dict[str, Cell]
    run: Metrics = field(default_factory=Metrics)  # metrics.json of the newest run (empty: none)
    runs: list[Metrics] = field(default_factory=list)  # one metrics.json per seed, oldest first

    @property
    def seeds(self) -> list[Any]:
        return _sorted_seeds(m.seed for m in self.runs)


@dataclass
class Table:
    recipe: str
    name: str
    caption: str | None
    columns: list[PaperColumn]
    rows: list[TableRow]
    paper_data: str | None = None  # the recipe's own data set (what the paper values were measured on)

    def footnote(self) -> str:
        """Which data, profile, epochs, device, seeds and code the measured columns come from."""
        runs = [m for r in self.rows for m in (r.runs or ([r.run] if r.run.run_id else []))]
        if not runs:
            return "No finished runs yet: measured columns are empty."

        def uniq(key: str) -> str:
            vals = sorted({str(r.value(key)) for r in runs})
            return ", ".join(vals)

        seeds = _sorted_seeds(m.seed for m in runs)
        if len(seeds) > 1:
            seed = (f"seeds {', '.join(map(str, seeds))} (mean ± sample std over the seeds a row has, "
                    "n = number of seeds)")
        else:
            seed = f"seed {uniq('seed')}"
        text = (f"Measured on {uniq('data.display')}; profile {uniq('profile')}; epochs {uniq('epochs')}; "
                f"device {uniq('device')}; {seed}; code {uniq('git_sha')}.")
        other = sorted({str(r.data.name) for r in runs} - {str(self.paper_data)})
        if self.paper_data and other:
            text += (f" **Not the paper's data set**: these runs used {', '.join(other)} "
                     f"(`--set data.name=...`), the paper {self.paper_data}; compare the rows' order, not the "
                     f"values with the paper's.")
        return text


def _sorted_seeds(seeds: Any) -> list[Any]:
    """Distinct seeds, numbers first in numeric order."""
    vals = set(seeds)
    return sorted(vals, key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else str(s)))


def _with_sha(rd: RunDir, m: Metrics) -> Metrics:
    env = rd.path / "env.json"
    if env.exists():
        try:
            m.git_sha = (json.loads(env.read_text()).get("git_sha") or "unknown")[:12]
        except (OSError, ValueError, AttributeError):
            _skip_warning(rd.path, f"{env} is not readable JSON; its code version is shown as unknown")
            m.git_sha = "unknown"
    return m


_warned: set[str] = set()


def _skip_warning(path: Path, msg: str) -> None:
    """One warning on stderr per broken run folder (the table and plots go on without it)."""
    if str(path) not in _warned:
        _warned.add(str(path))
        logger.warning(f"warning: {msg}")


def _readable_runs(results: Path, recipe: str, row: str) -> list[tuple[RunDir, Metrics]]:
    """The finished runs of a row with their metrics, oldest first; a broken run folder is skipped with a
    warning that names it, so one bad folder never breaks a table or a figure."""
    out = []
    for rd in find_runs(results, recipe, row):
        try:
            out.append((rd, rd.metrics()))
        except BvbenchError as e:
            _skip_warning(rd.path, f"skipping the run folder {rd.path}: {e}")
    return out


def latest_run(results: Path, recipe: str, row: str, profile: str | None = None) -> Metrics | None:
    """metrics.json (plus git sha) of the newest finished run of a row, optionally of one profile."""
    best = None
    for rd, m in _readable_runs(results, recipe, row):
        if profile and m.profile != profile:
            continue
        best = (rd, m)
    if best is None:
        return None
    return _with_sha(*best)


def latest_runs(results: Path, recipe: str, row: str, profile: str | None = None) -> list[Metrics]:
    """metrics.json (plus git sha) of the newest finished run of each seed of a row, oldest first (the last is
    the row's newest run). All of one profile: `profile`, else the profile of the newest run."""
    found = _readable_runs(results, recipe, row)
    if profile:
        found = [(rd, m) for rd, m in found if m.profile == profile]
    if not found:
        return []
    prof = found[-1][1].profile
    by_seed: dict[Any, tuple[RunDir, Metrics]] = {}
    for rd, m in found:
        if m.profile == prof:
            by_seed.pop(m.seed, None)  # re-insert: dict order = order of each seed's newest run
            by_seed[m.seed] = (rd, m)
    return [_with_sha(rd, m) for rd, m in by_seed.values()]


def aggregate(runs: list[Metrics], key: str, factor: float = 1.0) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None, n) of a metric over runs, scaled by `factor`; runs without it are skipped."""
    vals = [float(v) * factor for m in runs
            if isinstance(v := m.value(key), int | float) and not isinstance(v, bool)]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals)


def _unfinished(results: Path, recipe: str, row: str) -> str:
    """'diverged' when a run of the row stopped on a NaN/Inf loss, else 'not run'."""
    for rd in find_runs(results, recipe, row, finished=False):
        if (rd.path / "diverged.json").exists():
            return "diverged"
    return "not run"


def _status(recipe: Recipe, results: Path, r: Any, finished: bool) -> str:
    """A row's status; a not-run row whose teacher or init row diverged is 'blocked by <row> (diverged)'."""
    if r.status != "run":
        return r.status
    if finished:
        return "finished"
    own = _unfinished(results, recipe.name, r.name)
    for dep in (r.init_from, r.teacher):
        if own == "not run" and dep and not latest_runs(results, recipe.name, dep):
            up = _status(recipe, results, recipe.row(dep), False)
            if up == "diverged":
                return f"blocked by {dep} (diverged)"
            if up.startswith("blocked by"):
                return up
    return own


def build_tables(recipe: Recipe, results: Path, profile: str | None = None) -> list[Table]:
    """One Table per paper table of the recipe, rows in the recipe's (= paper's) order."""
    tables = []
    for pt in recipe.paper.tables:
        rows = []
        for r in recipe.rows:
            if r.table != pt.name:
                continue
            runs = latest_runs(results, recipe.name, r.name, profile) if r.status == "run" else []
            run = runs[-1] if runs else None
            cells = {}
            for col in pt.columns:
                cell = Cell(r.paper.get(col.key))
                if col.measured and runs:
                    cell.measured, cell.std, cell.n = aggregate(runs, col.key, UNITS[col.unit])
                cells[col.key] = cell
            status = _status(recipe, results, r, run is not None)
            rows.append(TableRow(r.name, r.label, status, cells, run or Metrics(), runs))
        tables.append(Table(recipe.name, pt.name, pt.caption, pt.columns, rows, paper_data=recipe.data.name))
    return tables


def decimals(paper: Any, unit: str) -> int:
    """As many decimals as the paper printed (at least the unit's usual number)."""
    base = {"fraction": 4, "count": 0}.get(unit, 2)
    if isinstance(paper, float):
        text = repr(paper)
        if "e" not in text and "." in text:
            return max(base, len(text.split(".")[1]))
    return base


def fmt(v: Any, unit: str = "fraction", places: int | None = None) -> str:
    if v is None:
        return MISSING
    if isinstance(v, str):
        return v
    if isinstance(v, int) and places is None:
        return str(v)
    return f"{v:.{decimals(None, unit) if places is None else places}f}"


def fmt_delta(d: float | None, unit: str, places: int | None = None) -> str:
    if d is None:
        return MISSING
    return ("+" if d >= 0 else "") + fmt(d, unit, places)




def fmt_measured(cell: Cell, unit: str, places: int | None = None) -> str:
    """The measured value; `mean ± std (n=N)` when it averages several seeds."""
    if cell.n > 1 and cell.measured is not None and cell.std is not None:
        return f"{fmt(cell.measured, unit, places)} ± {fmt(cell.std, unit, places)} (n={cell.n})"
    return fmt(cell.measured, unit, places)


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: one of {', '.join(VIEWS)}")


def header(table: Table, view: str = "full") -> list[str]:
    _check_view(view)
    cols = ["Method"]
    for c in table.columns:
        if view == "paper":
            cols.append(c.label)
        elif view == "measured":
            cols += [f"{c.label} ours"] if c.measured else []
        else:
            cols += [f"{c.label} paper", f"{c.label} ours", "Δ"] if c.measured else [c.label]
    return cols if view == "paper" else cols + ["Data set", "Profile", "Status"]


def body(table: Table, view: str = "full") -> list[list[str]]:
    _check_view(view)
    out = []
    for r in table.rows:
        line = [r.label]
        for c in table.columns:
            cell = r.cells[c.key]
            places = decimals(cell.paper, c.unit)
            if view == "paper":
                line.append(fmt(cell.paper, c.unit))
            elif view == "measured":
                line += [fmt_measured(cell, c.unit, places)] if c.measured else []
            elif c.measured:
                line += [fmt(cell.paper, c.unit), fmt_measured(cell, c.unit, places),
                         fmt_delta(cell.delta, c.unit, places)]
            else:
                line.append(fmt(cell.paper, c.unit))
        if view != "paper":
            line += [r.run.data.display or MISSING, r.run.profile or MISSING, r.status]
        out.append(line)
    return out


def title(t: Table) -> str:
    return f"{t.recipe} — {t.name}" + (f": {t.caption}" if t.caption else "")


def note(t: Table, view: str = "full") -> str:
    """The line under a table: where the numbers come from."""
    if view == "paper":
        return f"Paper values as printed (the recipe's transcription); {MISSING} = not printed."
    if view == "measured":
        return f"{t.footnote()} {MISSING} = not measured."
    return f"{t.footnote()} Paper values as printed; Δ = ours − paper; {MISSING} = not measured."


def to_markdown(tables: list[Table], view: str = "full") -> str:
    from tabulate import tabulate

    parts = []
    for t in tables:
        parts.append(f"### {title(t)}")
        parts.append("")
        parts.append(tabulate(body(t, view), headers=header(t, view), tablefmt="github", disable_numparse=True))
        parts.append("")
        parts.append(f"_{note(t, view)}_" if view != "full" else
                     f"_{t.footnote()}_ Paper values as printed; Δ = ours − paper; {MISSING} = not measured.")
        parts.append("")
    return "\n".join(parts)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def to_csv(tables: list[Table], view: str = "full") -> str:
    """Long, machine-readable form: one line per (table, row), numbers unformatted. The full view has
    paper_/measured_/delta_<key> (measured = mean over seeds), then measured_<key>_std (sample std, empty for
    one seed), n_seeds and seeds (';'-separated)."""
    _check_view(view)
    buf = io.StringIO()
    w = csv.writer(buf)
    keys: list[str] = []
    measured: set[str] = set()
    for t in tables:
        for c in t.columns:
            if c.key not in keys and (view != "measured" or c.measured):
                keys.append(c.key)
            if c.measured:
                measured.add(c.key)
    skeys = [k for k in keys if k in measured]  # keys with a measured_<key>_std column
    ident = ["recipe", "table", "row", "label"]
    runinfo = ["status", "data", "profile", "run_id"]
    if view == "paper":
        w.writerow(ident + [f"paper_{k}" for k in keys])
    elif view == "measured":
        w.writerow(ident + runinfo + [f"measured_{k}" for k in keys] + [f"measured_{k}_std" for k in skeys]
                   + ["n_seeds", "seeds"])
    else:
        w.writerow(ident + runinfo + [f"{p}_{k}" for k in keys for p in ("paper", "measured", "delta")]
                   + [f"measured_{k}_std" for k in skeys] + ["n_seeds", "seeds"])
    for t in tables:
        for r in t.rows:
            cells = [r.cells.get(k) for k in keys]
            paper = ["" if c is None or c.paper is None else c.paper for c in cells]
            meas = [_num(None if c is None else c.measured) for c in cells]
            delta = [_num(None if c is None else c.delta) for c in cells]
            std = [_num(None if (c := r.cells.get(k)) is None else c.std) for k in skeys]
            seeds = [len(r.runs) if r.runs else "", ";".join(map(str, r.seeds))]
            head = [t.recipe, t.name, r.name, r.label]
            info = [r.status, r.run.data.display or "", r.run.profile or "", r.run.run_id or ""]
            if view == "paper":
                w.writerow(head + paper)
            elif view == "measured":
                w.writerow(head + info + meas + std + seeds)
            else:
                w.writerow(head + info + [v for trio in zip(paper, meas, delta, strict=True) for v in trio]
                           + std + seeds)
    return buf.getvalue()


# --------------------------------------------------------------------------------------- terminal colours


def default_tolerance(unit: str, paper: Any = None) -> float:
    """The match tolerance of a column without its own: 1 percentage point, 0.01 of a fraction, else 10% of the
    paper's value (0 when the paper printed none)."""
    if unit == "percent":
        return 1.0
    if unit == "fraction":
        return 0.01
    if isinstance(paper, int | float) and not isinstance(paper, bool):
        return 0.1 * abs(float(paper))
    return 0.0


def tolerance_style(delta: float, tolerance: float | None, unit: str, paper: Any = None) -> str:
    """'green' when |Δ| <= tolerance, 'yellow' within 3× tolerance, 'red' beyond. `tolerance` None: the unit's
    default (`default_tolerance`; relative units need `paper`)."""
    tol = default_tolerance(unit, paper) if tolerance is None else float(tolerance)
    a = abs(delta)
    eps = 1e-9 * max(1.0, tol)  # 71.5 - 70.5 is exactly at the boundary, whatever the float rounding
    if a <= tol + eps:
        return "green"
    if a <= 3 * tol + eps:
        return "yellow"
    return "red"


def to_rich(tables: list[Table], view: str = "full") -> list[Any]:
    """One rich.table.Table per table: Δ coloured by the column's tolerance, rows without a run dimmed."""
    from rich.table import Table as RichTable
    from rich.text import Text

    _check_view(view)
    out = []
    for t in tables:
        legend = " Δ: green within the column's tolerance, yellow within 3×, red beyond." if view == "full" else ""
        rt = RichTable(title=title(t), caption=note(t, view) + legend, caption_justify="left", title_justify="left")
        for i, h in enumerate(header(t, view)):
            rt.add_column(h, justify="left" if i == 0 or h in ("Data set", "Profile", "Status") else "right",
                          overflow="fold")
        texts = body(t, view)
        for r, line in zip(t.rows, texts, strict=True):
            cells: list[Any] = [Text(v) for v in line]
            if view == "full":
                i = 1
                for c in t.columns:
                    if not c.measured:
                        i += 1
                        continue
                    cell = r.cells[c.key]
                    if cell.delta is not None:
                        d = round(cell.delta, decimals(cell.paper, c.unit))  # judge the Δ as printed
                        cells[i + 2].stylize(tolerance_style(d, c.tolerance, c.unit, cell.paper))
                    i += 3
            if view != "paper" and r.status == "diverged":
                cells[-1].stylize("red")
            rt.add_row(*cells, style=None if view == "paper" or r.status == "finished" else "dim")
        out.append(rt)
    return out


def write_tables(tables: list[Table], results: Path, recipe: str) -> tuple[Path, Path]:
    """Writes results/<recipe>/table.md and table.csv (atomically)."""
    from bvbench.results import atomic_write_text

    d = results / recipe
    d.mkdir(parents=True, exist_ok=True)
    md, cs = d / "table.md", d / "table.csv"
    atomic_write_text(md, to_markdown(tables))
    atomic_write_text(cs, to_csv(tables))
    return md, cs


# ---------------------------------------------------------------------------------- summary across recipes


@dataclass
class SummaryLine:
    recipe: str
    row: str
    label: str
    method: str
    w_a: str | None
    top1: float | None  # percent, mean over seeds
    top1_std: float | None
    n: int
    ops: float | None  # raw count (metrics `ops`)
    size_mb: float | None
    data: str | None
    profile: str | None
    epochs: Any


SUMMARY_HEADER = ["Recipe", "Row", "Method", "W-A", "Top-1 (%)", "OPs (10^8)", "Size (MB)", "Data set", "Profile",
                  "Epochs"]


def _w_a(recipe: Recipe, row: Any) -> str | None:
    """The row's W-A bits as the paper printed them: its `w_a` value, else a descriptive column labelled W-A."""
    if row.paper.get("w_a") is not None:
        return str(row.paper["w_a"])
    for c in recipe.paper.table(row.table).columns:
        if not c.measured and c.label.strip().upper() == "W-A" and row.paper.get(c.key) is not None:
            return str(row.paper[c.key])
    return None


def build_summary(recipes: list[Recipe], results: Path, profile: str | None = None) -> list[SummaryLine]:
    """One line per finished (recipe, row), recipes by name, rows in each recipe's order; rows that train nothing
    and start from nothing (complexity-only rows) are left out."""
    lines = []
    for rec in sorted(recipes, key=lambda r: r.name):
        for row in rec.rows:
            if row.status != "run":
                continue
            runs = latest_runs(results, rec.name, row.name, profile)
            if not runs:
                continue
            m = runs[-1]
            if not m.epochs and not row.init_from and not row.model.pretrained and not row.model.checkpoint:
                continue  # an untrained model counted for complexity only (GSB Table IX): no accuracy to report
            top1, std, n = aggregate(runs, "top1", UNITS["percent"])
            ops, size = m.ops, m.size_mb
            lines.append(SummaryLine(rec.name, row.name, row.label, str(m.method or row.method.name),
                                     _w_a(rec, row), top1, std, n,
                                     float(ops) if isinstance(ops, int | float) else None,
                                     float(size) if isinstance(size, int | float) else None,
                                     m.data.display, m.profile, m.epochs))
    return lines


def summary_body(lines: list[SummaryLine]) -> list[list[str]]:
    out = []
    for x in lines:
        top1 = fmt_measured(Cell(None, x.top1, x.top1_std, x.n), "percent", 2)
        out.append([x.recipe, x.label, x.method, x.w_a or MISSING, top1,
                    fmt(None if x.ops is None else x.ops * UNITS["x1e8"], "x1e8", 3),
                    fmt(x.size_mb, "MB", 3), x.data or MISSING, x.profile or MISSING,
                    MISSING if x.epochs is None else str(x.epochs)])
    return out


SUMMARY_NOTE = ("Newest finished run of each seed per row; Top-1 is the mean over seeds (± sample std, n seeds) "
                "where a row has several; OPs and size from metrics.json; W-A as the paper printed it.")


def summary_markdown(lines: list[SummaryLine]) -> str:
    from tabulate import tabulate

    if not lines:
        return "### Summary\n\nNo finished runs yet.\n"
    table = tabulate(summary_body(lines), headers=SUMMARY_HEADER, tablefmt="github", disable_numparse=True)
    return f"### Summary: finished rows across recipes\n\n{table}\n\n_{SUMMARY_NOTE}_\n"


def summary_csv(lines: list[SummaryLine]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe", "row", "label", "method", "w_a", "top1_pct", "top1_pct_std", "n_seeds", "ops", "size_mb",
                "data", "profile", "epochs"])
    for x in lines:
        w.writerow([x.recipe, x.row, x.label, x.method, x.w_a or "", _num(x.top1), _num(x.top1_std), x.n,
                    _num(x.ops), _num(x.size_mb), x.data or "", x.profile or "",
                    "" if x.epochs is None else x.epochs])
    return buf.getvalue()


def summary_rich(lines: list[SummaryLine]) -> Any:
    from rich.table import Table as RichTable

    rt = RichTable(title="Summary: finished rows across recipes", caption=SUMMARY_NOTE, caption_justify="left",
                   title_justify="left")
    for h in SUMMARY_HEADER:
        rt.add_column(h, justify="right" if h in ("Top-1 (%)", "OPs (10^8)", "Size (MB)", "Epochs") else "left",
                      overflow="fold")
    for line in summary_body(lines):
        rt.add_row(*line)
    return rt


def write_summary(lines: list[SummaryLine], results: Path) -> tuple[Path, Path]:
    """Writes results/summary.md and results/summary.csv (atomically)."""
    from bvbench.results import atomic_write_text

    results.mkdir(parents=True, exist_ok=True)
    md, cs = results / "summary.md", results / "summary.csv"
    atomic_write_text(md, summary_markdown(lines))
    atomic_write_text(cs, summary_csv(lines))
    return md, cs
