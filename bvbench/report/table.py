"""Comparison tables: each paper table's rows in the paper's order, paper | measured | delta per column."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvbench.recipes import UNITS, PaperColumn, Recipe
from bvbench.results import RunDir, find_runs

MISSING = "—"


@dataclass
class Cell:
    paper: Any = None
    measured: float | None = None

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
    run: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    recipe: str
    name: str
    caption: str | None
    columns: list[PaperColumn]
    rows: list[TableRow]

    def footnote(self) -> str:
        """Which data, profile, epochs, device and code the measured columns come from."""
        runs = [r.run for r in self.rows if r.run]
        if not runs:
            return "No finished runs yet: measured columns are empty."

        def uniq(key: str) -> str:
            vals = sorted({str(_get(r, key)) for r in runs})
            return ", ".join(vals)

        return (f"Measured on {uniq('data.display')}; profile {uniq('profile')}; epochs {uniq('epochs')}; "
                f"device {uniq('device')}; seed {uniq('seed')}; code {uniq('git_sha')}.")


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def latest_run(results: Path, recipe: str, row: str, profile: str | None = None) -> dict[str, Any] | None:
    """metrics.json (plus git sha) of the newest finished run of a row, optionally of one profile."""
    runs: list[RunDir] = find_runs(results, recipe, row)
    best = None
    for rd in runs:
        m = rd.metrics()
        if profile and m.get("profile") != profile:
            continue
        best = (rd, m)
    if best is None:
        return None
    rd, m = best
    env = rd.path / "env.json"
    if env.exists():
        import json

        m["git_sha"] = (json.loads(env.read_text()).get("git_sha") or "unknown")[:12]
    return m


def _unfinished(results: Path, recipe: str, row: str) -> str:
    """'diverged' when a run of the row stopped on a NaN/Inf loss, else 'not run'."""
    for rd in find_runs(results, recipe, row, finished=False):
        if (rd.path / "diverged.json").exists():
            return "diverged"
    return "not run"


def build_tables(recipe: Recipe, results: Path, profile: str | None = None) -> list[Table]:
    """One Table per paper table of the recipe, rows in the recipe's (= paper's) order."""
    tables = []
    for pt in recipe.paper.tables:
        rows = []
        for r in recipe.rows:
            if r.table != pt.name:
                continue
            run = latest_run(results, recipe.name, r.name, profile) if r.status == "run" else None
            cells = {}
            for col in pt.columns:
                measured = None
                if col.measured and run is not None:
                    v = _get(run, col.key)
                    if isinstance(v, int | float):
                        measured = float(v) * UNITS[col.unit]
                cells[col.key] = Cell(r.paper.get(col.key), measured)
            status = r.status if r.status != "run" else ("finished" if run else _unfinished(results, recipe.name, r.name))
            rows.append(TableRow(r.name, r.label, status, cells, run or {}))
        tables.append(Table(recipe.name, pt.name, pt.caption, pt.columns, rows))
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


def header(table: Table) -> list[str]:
    cols = ["Method"]
    for c in table.columns:
        cols += [f"{c.label} paper", f"{c.label} ours", "Δ"] if c.measured else [c.label]
    return cols + ["Data set", "Profile", "Status"]


def body(table: Table) -> list[list[str]]:
    out = []
    for r in table.rows:
        line = [r.label]
        for c in table.columns:
            cell = r.cells[c.key]
            if c.measured:
                places = decimals(cell.paper, c.unit)
                line += [fmt(cell.paper, c.unit), fmt(cell.measured, c.unit, places),
                         fmt_delta(cell.delta, c.unit, places)]
            else:
                line.append(fmt(cell.paper, c.unit))
        line += [_get(r.run, "data.display") or MISSING, r.run.get("profile", MISSING), r.status]
        out.append(line)
    return out


def to_markdown(tables: list[Table]) -> str:
    from tabulate import tabulate

    parts = []
    for t in tables:
        parts.append(f"### {t.recipe} — {t.name}" + (f": {t.caption}" if t.caption else ""))
        parts.append("")
        parts.append(tabulate(body(t), headers=header(t), tablefmt="github", disable_numparse=True))
        parts.append("")
        parts.append(f"_{t.footnote()}_ Paper values as printed; Δ = ours − paper; {MISSING} = not measured.")
        parts.append("")
    return "\n".join(parts)


def to_csv(tables: list[Table]) -> str:
    """Long, machine-readable form: one line per (table, row), numbers unformatted."""
    buf = io.StringIO()
    w = csv.writer(buf)
    keys: list[str] = []
    for t in tables:
        for c in t.columns:
            if c.key not in keys:
                keys.append(c.key)
    w.writerow(["recipe", "table", "row", "label", "status", "data", "profile", "run_id"]
               + [f"{p}_{k}" for k in keys for p in ("paper", "measured", "delta")])
    for t in tables:
        for r in t.rows:
            vals = []
            for k in keys:
                cell = r.cells.get(k)
                vals += ["", "", ""] if cell is None else [
                    "" if cell.paper is None else cell.paper,
                    "" if cell.measured is None else f"{cell.measured:.6g}",
                    "" if cell.delta is None else f"{cell.delta:.6g}",
                ]
            w.writerow([t.recipe, t.name, r.name, r.label, r.status, _get(r.run, "data.display") or "",
                        r.run.get("profile", ""), r.run.get("run_id", ""), *vals])
    return buf.getvalue()


def write_tables(tables: list[Table], results: Path, recipe: str) -> tuple[Path, Path]:
    """Writes results/<recipe>/table.md and table.csv (atomically)."""
    from bvbench.results import atomic_write_text

    d = results / recipe
    d.mkdir(parents=True, exist_ok=True)
    md, cs = d / "table.md", d / "table.csv"
    atomic_write_text(md, to_markdown(tables))
    atomic_write_text(cs, to_csv(tables))
    return md, cs
