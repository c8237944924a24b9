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
from bvbench.recipes.loading import load_recipe
from bvbench.recipes.schema import UNITS, PaperColumn, Recipe, Row
from bvbench.report.compare import (
    Setup,
    comparable,
    differences,
    half_width_pct,
    img_size,
    overrides,
    wilson,
)
from bvbench.report.paper_scale import PAPER_SCALE_KEYS, paper_scale
from bvbench.results import Metrics, RunDir, find_runs

logger = logging.getLogger(__name__)
MISSING = "—"
NC = "n/c"  # Δ of numbers measured on another setup than the paper's: not comparable
ACCURACY_KEYS = ("top1", "top5")


@dataclass
class Cell:
    paper: Any = None
    measured: float | None = None  # mean over seeds, in the paper's unit
    std: float | None = None  # sample standard deviation over seeds (ddof=1), when n > 1
    n: int = 0  # how many runs (seeds) the measurement averages
    comparable: bool = True  # False: measured on another data set, model or input size than the paper's
    source: str = "run"  # run | paper-scale (the row's paper-scale model, counted without training)

    @property
    def delta(self) -> float | None:
        if self.comparable and isinstance(self.paper, int | float) and self.measured is not None:
            return self.measured - float(self.paper)
        return None

    @property
    def not_comparable(self) -> bool:
        """A paper value and a measured one that must not be subtracted (Δ shows n/c)."""
        return not self.comparable and isinstance(self.paper, int | float) and self.measured is not None


@dataclass
class TableRow:
    name: str
    label: str
    status: str  # run | pending | reference | not run | finished
    cells: dict[str, Cell]
    run: Metrics = field(default_factory=Metrics)  # metrics.json of the newest run (empty: none)
    runs: list[Metrics] = field(default_factory=list)  # one metrics.json per seed, oldest first
    differs: dict[str, tuple[str, str]] = field(default_factory=dict)  # aspect -> (ours, paper's)
    overrides: list[str] = field(default_factory=list)  # protocol fields `--set` changed from the profile's
    img_size: int | None = None  # input size of the newest run
    paper_scale: dict[str, Any] = field(default_factory=dict)  # counts of the paper-scale model

    @property
    def seeds(self) -> list[Any]:
        return _sorted_seeds(m.seed for m in self.runs)

    @property
    def profile_cell(self) -> str:
        """The runs' profile; `cpu*` when `--set` changed its protocol (epochs, subsets, stages)."""
        if not self.run.profile:
            return MISSING
        return self.run.profile + ("*" if self.overrides else "")


@dataclass
class Section:
    """An extra block printed after a table's footnote (e.g. claims and their verdicts)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Table:
    recipe: str
    name: str
    caption: str | None
    columns: list[PaperColumn]
    rows: list[TableRow]
    paper_data: str | None = None  # the recipe's own data set (what the paper values were measured on)
    sections: list[Section] = field(default_factory=list)  # printed after the footnote, in order

    def _runs(self) -> list[Metrics]:
        return [m for r in self.rows for m in (r.runs or ([r.run] if r.run.run_id else []))]

    def footnote(self) -> str:
        """Which data, profile, epochs, device, seeds and code the measured columns come from; what makes a Δ
        not comparable; the paper-scale columns; the test-set size and the binomial noise of one accuracy."""
        runs = self._runs()
        if not runs:
            return " ".join(["No finished runs yet: measured columns are empty.", *self._scale_note()])

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
        if not self.run_columns():
            text = text.split(" **Not the paper's")[0]  # nothing in this table depends on the runs' data
            return " ".join([text, *self._scale_note(), *self._override_note()])
        return " ".join([text, *self._nc_note(), *self._scale_note(), *self._override_note(), *self._noise_note()])

    def run_columns(self) -> list[PaperColumn]:
        """The measured columns that come from the runs (not from the paper-scale model)."""
        return [c for c in self.columns if c.measured and c.key not in PAPER_SCALE_KEYS]

    def _nc_note(self) -> list[str]:
        """What differs from the paper's setup, over the rows whose Δ reads n/c."""
        aspects: dict[str, set[tuple[str, str]]] = {}
        for r in self.rows:
            if any(c.not_comparable for c in r.cells.values()):
                for k, pair in r.differs.items():
                    aspects.setdefault(k, set()).add(pair)
        if not aspects:
            return []
        parts = []
        for k in ("data set", "model", "image size", "epochs"):
            if k in aspects:
                parts.append(f"{k} " + ", ".join(f"{a} (paper: {b})" for a, b in sorted(aspects[k])))
        return [f"**Δ n/c** (not comparable): measured on another setup than the paper's: {'; '.join(parts)}."]

    def _scale_note(self) -> list[str]:
        keys = [c.label for c in self.columns if c.measured and c.key in PAPER_SCALE_KEYS]
        if not keys or not any(r.paper_scale for r in self.rows):
            return []
        sizes = sorted({f"{r.paper_scale.get('img_size')} px" for r in self.rows if r.paper_scale})
        return [f"{', '.join(keys)}: the row's paper-scale model ({', '.join(sizes)} input, random weights, as "
                f"`bvbench profile` counts it), comparable with the paper's at every profile; the trained model's "
                f"own counts are in its run folder (metrics.json) and in `bvbench table --summary`."]

    def _override_note(self) -> list[str]:
        over = [f"{r.label}: {', '.join(r.overrides)}" for r in self.rows if r.overrides]
        if not over:
            return []
        return [f"`*` = the profile's protocol changed by `--set`: {'; '.join(over)}."]

    def _noise_note(self) -> list[str]:
        sizes = sorted({int(n) for m in self._runs() if isinstance(n := m.data.test_size, int) and n > 0})
        if not sizes or not any(c.key in ACCURACY_KEYS for c in self.columns):
            return []
        widths = ", ".join(f"±{half_width_pct(n):.1f}" for n in sizes)
        return [f"Test set: {', '.join(f'{n:,}' for n in sizes)} images; a single accuracy has a 95 % interval of "
                f"at most {widths} points (normal approximation of a binomial at 50 %)."]


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


# ----------------------------------------------------------------------------------- units and comparability


def percent_column(col: PaperColumn) -> PaperColumn:
    """An accuracy column printed as a fraction, shown in % (every accuracy reads in % everywhere)."""
    if col.key not in ACCURACY_KEYS or col.unit != "fraction":
        return col
    label = col.label if "%" in col.label else f"{col.label} (%)"
    tol = None if col.tolerance is None else 100 * col.tolerance
    return col.model_copy(update={"unit": "percent", "label": label, "tolerance": tol})


def paper_in(value: Any, before: PaperColumn, after: PaperColumn) -> Any:
    """A paper value of column `before` in the unit of `after` (0.986 -> 98.6), keeping its printed digits."""
    if before.unit == after.unit or not isinstance(value, int | float) or isinstance(value, bool):
        return value
    digits = max(0, decimals(value, before.unit) - 2)
    return round(float(value) * UNITS[after.unit] / UNITS[before.unit], digits)


def _run_row(results: Path, m: Metrics) -> Row | None:
    """The resolved row a run trained (its config.yaml), or None when it cannot be read."""
    if not (m.recipe and m.row and m.run_id):
        return None
    try:
        return RunDir(results / m.recipe / m.row / m.run_id).row()
    except BvbenchError:
        return None


class _Profiles:
    """The recipe loaded at each profile, once (for what a run's `--set` changed)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.cache: dict[str, Recipe | None] = {}

    def row(self, profile: str | None, name: str) -> Row | None:
        if not profile:
            return None
        if profile not in self.cache:
            try:
                self.cache[profile] = load_recipe(self.source, profile)
            except BvbenchError:
                self.cache[profile] = None
        rec = self.cache[profile]
        return None if rec is None else rec.row(name)


def _setup_of(row: TableRow, paper_row: Row, results: Path, profiles: _Profiles) -> None:
    """Fill `row.differs`, `row.overrides` and `row.img_size` from its runs' config.yaml."""
    paper = Setup.of(paper_row)
    for m in row.runs:
        ran = _run_row(results, m)
        if ran is None:
            continue
        for k, pair in differences(Setup.of(ran), paper).items():
            row.differs.setdefault(k, pair)
        prof = profiles.row(m.profile, row.name)
        if prof is not None:
            for o in overrides(ran, prof):
                if o not in row.overrides:
                    row.overrides.append(o)
        row.img_size = img_size(ran)


def paper_recipe(recipe: Recipe, source: str | None = None) -> Recipe:
    """The recipe at its paper profile without overrides (what the paper values were measured on)."""
    if recipe.profile == "paper" and source is None:
        return recipe
    try:
        return load_recipe(source or recipe.name)
    except BvbenchError:
        return recipe


def _scale_rows(recipe: Recipe) -> list[str]:
    """Rows of the paper tables that print a complexity or size column."""
    tables = {t.name for t in recipe.paper.tables if any(c.measured and c.key in PAPER_SCALE_KEYS
                                                         for c in t.columns)}
    return [r.name for r in recipe.rows if r.table in tables]


def _cells(r: TableRow, cols: list[tuple[PaperColumn, PaperColumn]], paper_vals: dict[str, Any]) -> None:
    """The row's cells: paper value, measured (runs, or the paper-scale model for complexity columns)."""
    ok = comparable(r.differs)
    for before, col in cols:
        cell = Cell(paper_in(paper_vals.get(col.key), before, col))
        if col.measured and col.key in PAPER_SCALE_KEYS:
            v = r.paper_scale.get(col.key)
            if isinstance(v, int | float):
                cell.measured, cell.n, cell.source = float(v) * UNITS[col.unit], 1, "paper-scale"
        elif col.measured and r.runs:
            cell.measured, cell.std, cell.n = aggregate(r.runs, col.key, UNITS[col.unit])
            cell.comparable = ok
        r.cells[col.key] = cell


def build_tables(recipe: Recipe, results: Path, profile: str | None = None, source: str | None = None
                 ) -> list[Table]:
    """One Table per paper table of the recipe, rows in the recipe's (= paper's) order. Paper values, Δ and
    comparability refer to the recipe's paper profile (`source`: its file or name, when `recipe` was loaded
    at another profile or with overrides)."""
    ref = paper_recipe(recipe, source)
    profiles = _Profiles(source or recipe.name)
    scale = paper_scale(ref, results, _scale_rows(ref))
    tables = []
    for pt in ref.paper.tables:
        cols = [(c, percent_column(c)) for c in pt.columns]
        rows = []
        for r in ref.rows:
            if r.table != pt.name:
                continue
            runs = latest_runs(results, ref.name, r.name, profile) if r.status == "run" else []
            status = _status(ref, results, r, bool(runs))
            row = TableRow(r.name, r.label, status, {}, runs[-1] if runs else Metrics(), runs,
                           paper_scale=scale.get(r.name, {}))
            _setup_of(row, r, results, profiles)
            _cells(row, cols, r.paper)
            rows.append(row)
        tables.append(Table(ref.name, pt.name, pt.caption, [c for _, c in cols], rows, paper_data=ref.data.name))
    return tables


def recipe_tables(recipe: str, results: Path, profile: str | None = None) -> list[Table]:
    """`bvbench table`'s and `bvbench run`'s tables of a recipe (name or YAML path), plus extra sections."""
    rec = load_recipe(recipe)
    tables = build_tables(rec, results, profile, source=recipe)
    if tables:
        tables[-1].sections += extra_sections(rec, results, profile)
    return tables


def extra_sections(recipe: Recipe, results: Path, profile: str | None = None) -> list[Section]:
    """Sections printed after a recipe's last table (claims and verdicts plug in here); none yet."""
    return []


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


def cell_delta(cell: Cell, unit: str, places: int | None = None) -> str:
    """The Δ cell: ours − paper, `n/c` when the two were measured on different setups."""
    return NC if cell.not_comparable else fmt_delta(cell.delta, unit, places)


def fmt_measured(cell: Cell, unit: str, places: int | None = None) -> str:
    """The measured value; `mean ± std (n=N)` when it averages several seeds."""
    if cell.n > 1 and cell.measured is not None and cell.std is not None:
        return f"{fmt(cell.measured, unit, places)} ± {fmt(cell.std, unit, places)} (n={cell.n})"
    return fmt(cell.measured, unit, places)


@dataclass(frozen=True)
class View:
    """How a table is shown: the cells each paper column gets, whether the runs' setup columns (Data set,
    Profile, Status) follow, the note under it and the CSV fields. One subclass per view name."""

    name: str
    run_columns: bool = True  # Data set | Profile | Status after the paper's columns; diverged rows marked
    legend: str = ""  # appended to the rich caption

    def column_header(self, c: PaperColumn) -> list[str]:
        raise NotImplementedError

    def column_cells(self, cell: Cell, c: PaperColumn) -> list[str]:
        raise NotImplementedError

    def note(self, t: Table) -> str:
        raise NotImplementedError

    def md_note(self, t: Table) -> str:
        return f"_{self.note(t)}_"

    def csv_keeps(self, c: PaperColumn) -> bool:
        """Whether the CSV lists the column's key."""
        return True

    def csv_fields(self, keys: list[str], mkeys: list[str]) -> list[str]:
        raise NotImplementedError

    def style(self, t: Table, r: TableRow, cells: list[Any]) -> str | None:
        """Colours a rich row's cells in place; returns the row's style."""
        if not self.run_columns:
            return None
        if r.status == "diverged":
            cells[-1].stylize("red")
        return None if r.status == "finished" else "dim"


@dataclass(frozen=True)
class FullView(View):
    """paper | ours | Δ per measured column; Δ coloured by the column's tolerance in the terminal."""

    name: str = "full"
    legend: str = " Δ: green within the column's tolerance, yellow within 3×, red beyond."

    def column_header(self, c: PaperColumn) -> list[str]:
        return [f"{c.label} paper", f"{c.label} ours", "Δ"] if c.measured else [c.label]

    def column_cells(self, cell: Cell, c: PaperColumn) -> list[str]:
        if not c.measured:
            return [fmt(cell.paper, c.unit)]
        places = decimals(cell.paper, c.unit)
        return [fmt(cell.paper, c.unit), fmt_measured(cell, c.unit, places), cell_delta(cell, c.unit, places)]

    def note(self, t: Table) -> str:
        return f"{t.footnote()} Paper values as printed; Δ = ours − paper; {MISSING} = not measured."

    def md_note(self, t: Table) -> str:
        return (f"_{t.footnote()}_ Paper values as printed; Δ = ours − paper ({NC}: not comparable); "
                f"{MISSING} = not measured.")

    def csv_fields(self, keys: list[str], mkeys: list[str]) -> list[str]:
        return (CSV_IDENT + CSV_TIMM + [f"paper_{k}" for k in keys] + [f"measured_{k}" for k in mkeys]
                + [f"measured_{k}_std" for k in mkeys] + [f"delta_{k}" for k in mkeys] + ["comparable", "differs"])

    def style(self, t: Table, r: TableRow, cells: list[Any]) -> str | None:
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
        return super().style(t, r, cells)


@dataclass(frozen=True)
class PaperView(View):
    """What the paper printed, as the recipe transcribes it; no run columns."""

    name: str = "paper"
    run_columns: bool = False

    def column_header(self, c: PaperColumn) -> list[str]:
        return [c.label]

    def column_cells(self, cell: Cell, c: PaperColumn) -> list[str]:
        return [fmt(cell.paper, c.unit)]

    def note(self, t: Table) -> str:
        return f"Paper values as printed (the recipe's transcription); {MISSING} = not printed."

    def csv_fields(self, keys: list[str], mkeys: list[str]) -> list[str]:
        return ["recipe", "table", "row", "label"] + [f"paper_{k}" for k in keys]


@dataclass(frozen=True)
class MeasuredView(View):
    """Ours only: the measured columns and the runs' setup."""

    name: str = "measured"

    def column_header(self, c: PaperColumn) -> list[str]:
        return [f"{c.label} ours"] if c.measured else []

    def column_cells(self, cell: Cell, c: PaperColumn) -> list[str]:
        return [fmt_measured(cell, c.unit, decimals(cell.paper, c.unit))] if c.measured else []

    def note(self, t: Table) -> str:
        return f"{t.footnote()} {MISSING} = not measured."

    def csv_keeps(self, c: PaperColumn) -> bool:
        return c.measured

    def csv_fields(self, keys: list[str], mkeys: list[str]) -> list[str]:
        return CSV_IDENT + CSV_TIMM + [f"measured_{k}" for k in mkeys] + [f"measured_{k}_std" for k in mkeys]


VIEW_OF: dict[str, View] = {v.name: v for v in (FullView(), PaperView(), MeasuredView())}
VIEWS = tuple(VIEW_OF)
RUN_HEADER = ["Data set", "Profile", "Status"]


def view_of(view: str | View) -> View:
    """The view named `view` (a View passes through)."""
    if isinstance(view, View):
        return view
    if view not in VIEW_OF:
        raise ValueError(f"view {view!r}: one of {', '.join(VIEWS)}")
    return VIEW_OF[view]


def header(table: Table, view: str | View = "full") -> list[str]:
    v = view_of(view)
    cols = ["Method"] + [h for c in table.columns for h in v.column_header(c)]
    return cols + RUN_HEADER if v.run_columns else cols


def body(table: Table, view: str | View = "full") -> list[list[str]]:
    v = view_of(view)
    out = []
    for r in table.rows:
        line = [r.label] + [x for c in table.columns for x in v.column_cells(r.cells[c.key], c)]
        if v.run_columns:
            line += [r.run.data.display or MISSING, r.profile_cell, r.status]
        out.append(line)
    return out


def title(t: Table) -> str:
    return f"{t.recipe} — {t.name}" + (f": {t.caption}" if t.caption else "")


def note(t: Table, view: str | View = "full") -> str:
    """The line under a table: where the numbers come from."""
    return view_of(view).note(t)


def md_escape(text: str) -> str:
    """A Markdown table cell: `|` escaped (an unescaped one splits the cell on GitHub), newlines as spaces."""
    return text.replace("\\|", "|").replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], lines: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate([[md_escape(v) for v in line] for line in lines], headers=[md_escape(h) for h in head],
                    tablefmt="github", disable_numparse=True)


def _md_sections(sections: list[Section]) -> list[str]:
    parts = []
    for s in sections:
        parts += [f"#### {s.title}", "", _md_table(s.header, s.rows), ""]
        parts += [f"_{s.note}_", ""] if s.note else []
    return parts


def to_markdown(tables: list[Table], view: str | View = "full") -> str:
    v = view_of(view)
    parts = []
    for t in tables:
        parts += [f"### {title(t)}", "", _md_table(header(t, v), body(t, v)), "", v.md_note(t), ""]
        parts += _md_sections(t.sections)
    return "\n".join(parts)


TEX_SUBS = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
            ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")]
TEX_SYMBOLS = {"✓": r"\checkmark", "✗": r"$\times$", "±": r"$\pm$", "—": "--", "Δ": r"$\Delta$", "−": "-",
               "≤": r"$\leq$", "≥": r"$\geq$"}


def tex_escape(text: str) -> str:
    """LaTeX text: special characters escaped, the tables' symbols as LaTeX commands (amssymb: \\checkmark)."""
    for a, b in TEX_SUBS:
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
    text = text.replace("\x00", TEX_SUBS[0][1])
    for a, b in TEX_SYMBOLS.items():
        text = text.replace(a, b)
    return text.replace("**", "")


def _tex_table(head: list[str], lines: list[list[str]], caption: str, note_text: str) -> list[str]:
    spec = "l" + "r" * (len(head) - 1)
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", r"\small",
           rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex_escape(h) for h in head) + r" \\",
           r"\midrule"]
    out += [" & ".join(tex_escape(v) for v in line) + r" \\" for line in lines]
    out += [r"\bottomrule", r"\end{tabular}"]
    if note_text:
        out += [rf"\par\smallskip\footnotesize {tex_escape(note_text)}"]
    return out + [r"\end{table}", ""]


def to_latex(tables: list[Table], view: str | View = "full") -> str:
    """One booktabs `table` per paper table (needs \\usepackage{booktabs, amssymb}), footnote under it."""
    parts = ["% bvbench tables: \\usepackage{booktabs,amssymb}", ""]
    for t in tables:
        parts += _tex_table(header(t, view), body(t, view), title(t), note(t, view))
        for s in t.sections:
            parts += _tex_table(s.header, s.rows, s.title, s.note)
    return "\n".join(parts)


FORMATS = ("md", "csv", "tex", "rich")


def render(tables: list[Table], fmt: str = "md", view: str | View = "full") -> str | list[Any]:
    """The tables in one format: text for md, csv and tex, rich renderables for rich. `bvbench table` and
    `bvbench run` both print through this."""
    if fmt not in FORMATS:
        raise BvbenchError(f"--format {fmt!r}: choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if fmt == "rich":
        return to_rich(tables, view)
    return {"md": to_markdown, "csv": to_csv, "tex": to_latex}[fmt](tables, view)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def bits(w_a: str | None) -> tuple[str, str]:
    """('1', '1') from a W-A cell '1-1', ('1.58', '8') from '1.58-8'; empty strings when it is not one."""
    parts = (w_a or "").replace("/", "-").split("-")
    if len(parts) != 2:
        return "", ""
    try:
        return tuple(f"{float(p.strip()):g}" for p in parts)  # type: ignore[return-value]
    except ValueError:
        return "", ""


BITS_LABELS = ("W-A", "#BITS", "BITS", "W/A", "#BITS (W-A)")


def bits_column(c: PaperColumn) -> bool:
    """A descriptive column holding the W-A bit widths ('W-A', '#Bits', ...)."""
    return not c.measured and (c.key in ("w_a", "bits") or c.label.strip().upper() in BITS_LABELS)


def row_w_a(t: Table, r: TableRow) -> str | None:
    """The row's W-A bits as the paper printed them (a `w_a` cell, else a text column labelled W-A)."""
    for c in t.columns:
        if bits_column(c):
            v = r.cells[c.key].paper
            if v is not None:
                return str(v)
    return None


def timm_columns(runs: list[Metrics]) -> dict[str, str]:
    """timm validate.py's columns of a row's runs (mean over seeds): top1/top5 and their errors in %,
    param_count in millions (the trained model's), plus our ops and size_mb (trained model's)."""
    top1, top1_std, _ = aggregate(runs, "top1", 100.0)
    top5, _, _ = aggregate(runs, "top5", 100.0)
    m = runs[-1] if runs else Metrics()
    params = m.value("params")
    return {"top1": _num(top1), "top1_std": _num(top1_std), "top1_err": _num(None if top1 is None else 100 - top1),
            "top5": _num(top5), "top5_err": _num(None if top5 is None else 100 - top5),
            "param_count": _num(params / 1e6 if isinstance(params, int | float) else None),
            "ops": _num(m.ops), "size_mb": _num(m.size_mb)}


def _ci(runs: list[Metrics]) -> tuple[str, str]:
    """Wilson 95 % interval (%) of the newest run's top-1 on its test set."""
    m = runs[-1] if runs else Metrics()
    if m.top1 is None or not m.data.test_size:
        return "", ""
    lo, hi = wilson(float(m.top1), int(m.data.test_size))
    return _num(100 * lo), _num(100 * hi)


CSV_IDENT = ["recipe", "table", "row", "label", "status", "model", "method", "w_bits", "a_bits", "img_size", "data",
             "profile", "epochs", "seeds", "n_seeds", "run_id"]
CSV_TIMM = ["top1", "top1_std", "top1_err", "top5", "top5_err", "top1_ci95_lo", "top1_ci95_hi", "param_count", "ops",
            "size_mb", "test_size"]


def _ident(t: Table, r: TableRow) -> dict[str, Any]:
    m = r.run
    w, a = bits(row_w_a(t, r))
    return {"recipe": t.recipe, "table": t.name, "row": r.name, "label": r.label, "status": r.status,
            "model": m.model or "", "method": m.method or "", "w_bits": w, "a_bits": a,
            "img_size": r.img_size or "", "data": m.data.name or "", "profile": r.profile_cell if m.profile else "",
            "epochs": "" if m.epochs is None else m.epochs, "seeds": ";".join(map(str, r.seeds)),
            "n_seeds": len(r.runs) if r.runs else "", "run_id": m.run_id or ""}


def to_csv(tables: list[Table], view: str | View = "full") -> str:
    """Long, machine-readable form: one line per (table, row), numbers unformatted, accuracies in %. Columns:
    identity and setup (`CSV_IDENT`), timm validate.py's (`CSV_TIMM`: the trained model's top-1/top-5 in %,
    param_count in M, ops, size_mb), then per paper column paper_<key>, measured_<key> (what the table cell
    shows, in the paper's unit: complexity columns from the paper-scale model), measured_<key>_std and
    delta_<key> (empty when not comparable; `comparable` says which). The paper view has the paper's only."""
    v = view_of(view)
    keys: list[str] = []
    measured: set[str] = set()
    for t in tables:
        for c in t.columns:
            if c.key not in keys and v.csv_keeps(c):
                keys.append(c.key)
            if c.measured:
                measured.add(c.key)
    fields = v.csv_fields(keys, [k for k in keys if k in measured])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for t in tables:
        for r in t.rows:
            w.writerow(_csv_line(t, r, keys))
    return buf.getvalue()


def _csv_line(t: Table, r: TableRow, keys: list[str]) -> dict[str, Any]:
    line: dict[str, Any] = {**_ident(t, r), **timm_columns(r.runs)}
    line["top1_ci95_lo"], line["top1_ci95_hi"] = _ci(r.runs)
    line["test_size"] = r.run.data.test_size or ""
    nc = False
    for k in keys:
        c = r.cells.get(k)
        if c is None:
            continue
        line[f"paper_{k}"] = "" if c.paper is None else c.paper
        line[f"measured_{k}"], line[f"measured_{k}_std"] = _num(c.measured), _num(c.std)
        line[f"delta_{k}"] = _num(c.delta)
        nc = nc or c.not_comparable
    line["comparable"] = "" if not r.runs else "no" if nc or not comparable(r.differs) else "yes"
    line["differs"] = "; ".join(f"{k} {a} (paper: {b})" for k, (a, b) in r.differs.items())
    return line


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


def to_rich(tables: list[Table], view: str | View = "full") -> list[Any]:
    """One rich.table.Table per table: Δ coloured by the column's tolerance, rows without a run dimmed."""
    from rich.table import Table as RichTable
    from rich.text import Text

    v = view_of(view)
    out = []
    for t in tables:
        rt = RichTable(title=title(t), caption=v.note(t) + v.legend, caption_justify="left", title_justify="left")
        for i, h in enumerate(header(t, v)):
            rt.add_column(h, justify="left" if i == 0 or h in RUN_HEADER else "right", overflow="fold")
        for r, line in zip(t.rows, body(t, v), strict=True):
            cells: list[Any] = [Text(x) for x in line]
            style = v.style(t, r, cells)
            rt.add_row(*cells, style=style)
        out.append(rt)
        for sec in t.sections:
            st = RichTable(title=sec.title, caption=sec.note or None, caption_justify="left", title_justify="left")
            for h in sec.header:
                st.add_column(h, overflow="fold")
            for line in sec.rows:
                st.add_row(*line)
            out.append(st)
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
    ops: float | None  # raw count (metrics `ops`) of the trained model
    size_mb: float | None  # of the trained model
    data: str | None
    profile: str | None
    epochs: Any
    runs: list[Metrics] = field(default_factory=list)
    img_size: int | None = None


SUMMARY_HEADER = ["Recipe", "Row", "Method", "W-A", "Top-1 (%)", "OPs (10^8, trained model)",
                  "Size (MB, trained model)", "Data set", "Profile", "Epochs"]
SUMMARY_NUMERIC = {"Top-1 (%)", "OPs (10^8, trained model)", "Size (MB, trained model)", "Epochs"}


def _w_a(recipe: Recipe, row: Any) -> str | None:
    """The row's W-A bits as the paper printed them: its `w_a` value, else a descriptive column labelled W-A."""
    if row.paper.get("w_a") is not None:
        return str(row.paper["w_a"])
    for c in recipe.paper.table(row.table).columns:
        if bits_column(c) and row.paper.get(c.key) is not None:
            return str(row.paper[c.key])
    return None


def untrained(row: Row, m: Metrics) -> bool:
    """A run that trained nothing and started from nothing (GSB Table IX counts OPs of an untrained model):
    complexity only, no accuracy worth reporting or plotting."""
    return not m.epochs and not row.init_from and not row.model.pretrained and not row.model.checkpoint


def build_summary(recipes: list[Recipe], results: Path, profile: str | None = None) -> list[SummaryLine]:
    """One line per finished (recipe, row), recipes by name, rows in each recipe's order; rows that train nothing
    and start from nothing (complexity-only rows) are left out."""
    lines = []
    for rec in sorted(recipes, key=lambda r: r.name):
        for row in rec.rows:
            if row.status != "run":
                continue
            runs = latest_runs(results, rec.name, row.name, profile)
            if not runs or untrained(row, runs[-1]):
                continue
            m = runs[-1]
            top1, std, n = aggregate(runs, "top1", UNITS["percent"])
            ops, size = m.ops, m.size_mb
            ran = _run_row(results, m)
            lines.append(SummaryLine(rec.name, row.name, row.label, str(m.method or row.method.name),
                                     _w_a(rec, row), top1, std, n,
                                     float(ops) if isinstance(ops, int | float) else None,
                                     float(size) if isinstance(size, int | float) else None,
                                     m.data.display, m.profile, m.epochs, runs,
                                     img_size(ran) if ran is not None else None))
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


SUMMARY_NOTE = ("Newest finished run of each seed per row; Top-1 (%) is the mean over seeds (± sample std, n seeds) "
                "where a row has several; OPs and size are the trained model's own (metrics.json, at the profile's "
                "model and input size, not the paper's); W-A as the paper printed it.")


def summary_markdown(lines: list[SummaryLine]) -> str:
    if not lines:
        return "### Summary\n\nNo finished runs yet.\n"
    table = _md_table(SUMMARY_HEADER, summary_body(lines))
    return f"### Summary: finished rows across recipes\n\n{table}\n\n_{SUMMARY_NOTE}_\n"


SUMMARY_CSV = ["recipe", "row", "label", "model", "method", "w_a", "w_bits", "a_bits", "img_size", *CSV_TIMM[:7],
               "n_seeds", "seeds", "param_count", "ops", "size_mb", "test_size", "data", "profile", "epochs", "run_id"]


def summary_csv(lines: list[SummaryLine]) -> str:
    """timm validate.py's column names where they apply (top-1/top-5 in %, param_count in M) and ours; the
    counts (param_count, ops, size_mb) are the trained model's."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_CSV, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for x in lines:
        m = x.runs[-1] if x.runs else Metrics()
        wb, ab = bits(x.w_a)
        line = {"recipe": x.recipe, "row": x.row, "label": x.label, "model": m.model or "", "method": x.method,
                "w_a": x.w_a or "", "w_bits": wb, "a_bits": ab, "img_size": x.img_size or "", **timm_columns(x.runs),
                "n_seeds": x.n, "seeds": ";".join(map(str, _sorted_seeds(r.seed for r in x.runs))),
                "test_size": m.data.test_size or "", "data": m.data.name or "", "profile": x.profile or "",
                "epochs": "" if x.epochs is None else x.epochs, "run_id": m.run_id or ""}
        line["top1_ci95_lo"], line["top1_ci95_hi"] = _ci(x.runs)
        w.writerow(line)
    return buf.getvalue()


def summary_rich(lines: list[SummaryLine]) -> Any:
    from rich.table import Table as RichTable

    rt = RichTable(title="Summary: finished rows across recipes", caption=SUMMARY_NOTE, caption_justify="left",
                   title_justify="left")
    for h in SUMMARY_HEADER:
        rt.add_column(h, justify="right" if h in SUMMARY_NUMERIC else "left",
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
