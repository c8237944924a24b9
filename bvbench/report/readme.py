"""results/README.md: one section per paper with its recipes' tables, figures and the honest status of every row.

Built from what is on disk (results/<recipe>/table.md and *.png, results/nightly.json); it never computes a
number itself, so it cannot say more than the runs measured.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bvbench.recipes import load_recipe
from bvbench.report.table import build_tables
from bvbench.results import atomic_write_text, now

FIGURES = [("accuracy_vs_ops.png", "Top-1 vs OPs"), ("accuracy_vs_size.png", "Top-1 vs model size"),
           ("curves.png", "Training curves"), ("confusion.png", "Confusion matrices")]


def _status_counts(recipe_name: str, results: Path, profile: str | None) -> tuple[dict[str, int], str | None]:
    """Rows per status, and a line on where the finished runs came from and what their training cost."""
    counts: dict[str, int] = defaultdict(int)
    seen = set()
    trained, adopted, seconds = 0, 0, 0.0
    for t in build_tables(load_recipe(recipe_name), results, profile):
        for r in t.rows:
            if r.name not in seen:
                seen.add(r.name)
                counts[r.status] += 1
                for m in r.runs or ([r.run] if r.run.run_id else []):
                    if m.reused_from:
                        adopted += 1
                    else:
                        trained += 1
                        seconds += m.train_time_s or 0.0
    if not trained + adopted:
        return dict(counts), None
    line = f"Runs: {trained} trained for this recipe ({seconds / 60:.1f} min of training on {profile or 'any'} profile)"
    if adopted:
        line += f", {adopted} adopted from identical runs of other rows or recipes"
    return dict(counts), line + "."


def _section(entry: dict[str, Any], results: Path, profile: str | None) -> list[str]:
    rec = load_recipe(entry["recipe"])
    name = rec.name
    d = results / name
    lines = [f"### {name}: {rec.title}", ""]
    status = entry.get("status", "not run")
    data = entry.get("data", rec.data.name)
    line = f"Nightly status: **{status}**"
    lines += [line + f"; profile `{profile or 'any'}`; data: " + (f"**{data}**" if data else "—") + ".", ""]
    if entry.get("override"):
        lines += [f"> **Data override.** {entry['override']}. The measured columns below come from "
                  f"{data}, not from the paper's data set: compare orderings between rows, not values with the "
                  f"paper's.", ""]
    if entry.get("reason") and status != "finished":
        lines += [f"> {entry['reason']}", ""]
    counts, runs_line = _status_counts(entry["recipe"], results, profile)
    if counts:
        lines += ["Rows: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    if runs_line:
        lines += [runs_line, ""]
    table = d / "table.md"
    if table.exists():
        lines += [f"Tables: [{name}/table.md]({name}/table.md) · [{name}/table.csv]({name}/table.csv)", ""]
        body = table.read_text().strip()
        # demote the table headings below this section's
        lines += [("##" + ln if ln.startswith("### ") else ln) for ln in body.splitlines()] + [""]
    claims = d / "claims.md"  # bvbench.report.claims: a verdict per ordering the paper claims
    if claims.exists():
        lines += [("##" + ln if ln.startswith("### ") else ln) for ln in claims.read_text().strip().splitlines()]
        lines += ["", f"Claims: [{name}/claims.md]({name}/claims.md) · [{name}/claims.csv]({name}/claims.csv)", ""]
    figs = [(f, cap) for f, cap in FIGURES if (d / f).exists()]
    if figs:
        lines += ["Figures: " + " · ".join(f"[{cap}]({name}/{f})" for f, cap in figs), ""]
        for f, cap in figs[:2]:
            lines += [f"![{name}: {cap}]({name}/{f})", ""]
    return lines


def build_readme(results: Path, entries: list[dict[str, Any]], profile: str | None = "cpu") -> str:
    """The Markdown text: a header with the nightly's scope, then one section per paper (recipes grouped by the
    paper file they reproduce), in the nightly order."""
    by_paper: dict[str, list[dict[str, Any]]] = defaultdict(list)
    citations: dict[str, str] = {}
    for e in entries:
        rec = load_recipe(e["recipe"])
        by_paper[rec.paper.file].append(e)
        citations.setdefault(rec.paper.file, rec.paper.citation)
    finished = sum(e.get("status") == "finished" for e in entries)
    out = [
        "# bvbench results: the nightly reproduction",
        "",
        f"Rebuilt {now()} by `make nightly` (`python -m bvbench.nightly`): the `cpu` profile of every recipe "
        f"({finished} of {len(entries)} finished). The `cpu` profile keeps each paper's protocol (teachers, "
        "stages, losses, quantizer placement) but shrinks it to minutes on 2 CPU cores: 32x32 input, a small ViT "
        "trained from scratch in place of pretrained weights, a few epochs on a subset. Its accuracies are "
        "therefore far below the papers'; what can be compared is the ordering of the rows. Paper columns are the "
        "numbers printed in the papers; measured columns come only from runs in this folder; `—` is not measured.",
        "",
        "Status of a row: `finished` (measured here), `not run` (no finished run yet), `diverged` (NaN/Inf loss, "
        "stopped), `reference` (a method bvbench does not train; the paper's value only).",
        "",
    ]
    if (results / "summary.md").exists():
        out += ["Summary across recipes (Top-1, OPs and size of every finished row): [summary.md](summary.md) · "
                "[summary.csv](summary.csv)", ""]
    for paper, items in by_paper.items():
        out += [f"## {citations[paper]}", "", f"Paper text: `../shared/papers/{paper}`", ""]
        for e in items:
            out += _section(e, results, profile)
    return "\n".join(out).rstrip() + "\n"


def write_readme(results: Path, entries: list[dict[str, Any]] | None = None, profile: str | None = "cpu") -> Path:
    """Write results/README.md (runs of `profile`; None: any); without `entries`, from results/nightly.json."""
    results = Path(results)
    if entries is None:
        status = results / "nightly.json"
        entries = json.loads(status.read_text())["recipes"] if status.exists() else [
            {"recipe": p.name} for p in sorted(results.iterdir()) if p.is_dir()]
    path = results / "README.md"
    atomic_write_text(path, build_readme(results, entries, profile))
    return path
