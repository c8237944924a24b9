"""The nightly reproduction: the `cpu` profile of every recipe whose data is present, then tables, plots and
results/README.md.

    python -m bvbench.nightly [--out results] [--data-dir DIR] [--budget-hours 3] [--only a,b]   (= make nightly)

A recipe whose data set is not present runs on CIFAR-10 (`--set data.name=cifar10`) when CIFAR-10 is there,
and its section in results/README.md says so; without either it is skipped with the data's own message.
Finished runs are reused (run ids hash the resolved configuration, across recipes), unfinished ones resumed,
so a second call continues where the first stopped and shared teachers train once. `--report-only` trains nothing and
reads no data set: per recipe it takes the configuration whose runs are on disk (its own data, or the CIFAR-10
override). When the time budget is
spent, the remaining recipes are left for the next call (and marked so): the run never stops mid-row.
The rows of each recipe's headline claims (`claims:` with `headline: true`) run HEADLINE_SEEDS seeds
(`--headline-seeds`), so the claims section (results/<recipe>/claims.md) shows their seed spread; extra seeds
start only within the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bvbench.errors import (
    BvbenchError,
    DataMissingError,
    InterruptedRun,
    Stopped,
    signal_name,
    signals_stop,
    stop_children,
)

# The order in which recipes run: what issue #4 commits first, then the recipes that reuse their runs.
ORDER = ["quickstart", "bitnet-vit-cifar10", "bitvit-cifar10", "gsb-cifar100", "bitnet-vit-cifar100",
         "gsb-chaoyang", "gsb-flowers102", "bivit-imagenet", "bi-vit-imagenet", "bivit-tinyimagenet"]
FALLBACK = "cifar10"
HEADLINE_SEEDS = 3  # the rows of each recipe's headline claims run this many seeds (claims show the spread)


def data_present(name: str, root: Path) -> str | None:
    """None when the data set's test split can be read from `root`; else the data module's message."""
    from bvbench.data.datasets import DATASETS, static_info

    try:
        DATASETS.get(name).load(root, "test", False, static_info(name))
    except DataMissingError as e:
        return str(e)
    return None


def plan(names: list[str], root: Path) -> list[dict[str, Any]]:
    """Per recipe: which data it runs on (its own, or CIFAR-10 with the override) or why it is skipped."""
    from bvbench.recipes import load_recipe

    out = []
    fallback_missing = data_present(FALLBACK, root)
    for name in names:
        rec = load_recipe(name, "cpu")
        own = rec.data.name
        missing = data_present(own, root)
        entry: dict[str, Any] = {"recipe": name, "title": rec.title, "data": own, "sets": [], "override": None}
        if missing is None:
            pass
        elif fallback_missing is None:
            entry.update(data=FALLBACK, sets=[f"data.name={FALLBACK}"],
                         override=f"{own} is not present here ({missing}); run on {FALLBACK} with "
                                  f"--set data.name={FALLBACK}")
        else:
            entry.update(status="skipped", reason=f"{missing}; and the fallback: {fallback_missing}")
        out.append(entry)
    return out


def plan_from_disk(names: list[str], results: Path, ctx: Any) -> list[dict[str, Any]]:
    """`--report-only`: per recipe, the configuration whose runs are on disk (its own data, or the CIFAR-10
    override when more of its rows finished that way) and its status; no data set is read. What the last
    nightly recorded for the same configuration (its override line, timings) is kept."""
    from bvbench.recipes import load_recipe

    status = results / "nightly.json"
    try:
        before = {e["recipe"]: e for e in json.loads(status.read_text())["recipes"]} if status.exists() else {}
    except (ValueError, KeyError, TypeError):
        before = {}
    out = []
    for name in names:
        rec = load_recipe(name, "cpu")
        own = rec.data.name
        options = [(own, [])] + ([(FALLBACK, [f"data.name={FALLBACK}"])] if own != FALLBACK else [])
        counts = [(_finished_without_data(name, results, sets, ctx), data, sets) for data, sets in options]
        (done, total), data, sets = max(counts, key=lambda c: c[0][0])  # ties: the recipe's own data
        entry: dict[str, Any] = {"recipe": name, "title": rec.title, "data": data, "sets": sets, "override": None}
        prev = before.get(name, {})
        if prev.get("sets") == sets:
            entry.update({k: v for k, v in prev.items() if k in ("override", "started", "seconds")})
        if sets and not entry["override"]:
            entry["override"] = f"the runs on disk were trained on {data} with --set data.name={data}"
        entry["status"] = "finished" if done == total else f"partial ({done} of {total} rows finished)"
        out.append(entry)
    return out


def _finished_without_data(name: str, results: Path, sets: list[str], ctx: Any) -> tuple[int, int]:
    """`finished_rows`; where the data set is absent (its copy cannot be fingerprinted), the run ids of the
    reference copy (root None), so that the report needs no data."""
    from dataclasses import replace

    try:
        return finished_rows(name, results, sets, ctx)
    except DataMissingError:
        return finished_rows(name, results, sets, replace(ctx, root=None))


def finished_rows(name: str, results: Path, sets: list[str], ctx: Any) -> tuple[int, int]:
    """(rows with a finished run of the cpu profile for the configuration `sets` gives in context `ctx`
    (device, threads, data copy), rows to run)."""
    from bvbench.recipes import load_recipe
    from bvbench.results import RunDir, safe_child
    from bvbench.runner import run_id

    rec = load_recipe(name, "cpu", sets)
    rows = [r for r in rec.rows if r.status == "run"]
    done = sum(RunDir(safe_child(results, rec.name, r.name, run_id(rec, r, rec.seed, ctx))).done for r in rows)
    return done, len(rows)


def headline_rows(name: str) -> list[str]:
    """The rows the recipe's headline claims compare (`claims: - {..., headline: true}`), in claim order."""
    from bvbench.recipes import load_recipe

    rec = load_recipe(name, "cpu")
    rows = [r for c in rec.claims if c.headline for r in (c.better, c.worse) if rec.row(r).status == "run"]
    return list(dict.fromkeys(rows))


def run_headline_seeds(entry: dict[str, Any], opts: Any, run_recipe: Any, n: int = HEADLINE_SEEDS,
                       over_budget: Any = lambda: False) -> list[int]:
    """Seeds 2 ... n (after the recipe's own) of the headline rows, their teachers with them; none is started
    once `over_budget()` (the next call continues: finished seeds are reused)."""
    from dataclasses import replace

    from bvbench.recipes import load_recipe

    rows = headline_rows(entry["recipe"])
    first = load_recipe(entry["recipe"], "cpu", entry["sets"]).seed
    done = []
    for s in [first + i for i in range(1, n)] if rows else []:
        if over_budget():
            print(f"--- nightly: {entry['recipe']} headline seed {s} left for the next call (budget spent)",
                  flush=True)
            break
        print(f"--- nightly: {entry['recipe']} headline rows {', '.join(rows)}, seed {s}", flush=True)
        run_recipe(entry["recipe"], replace(opts, rows=rows, seed=s))
        done.append(s)
    return done


def main(argv: list[str] | None = None) -> int:
    """Exit code 0 (all finished), 1 (a recipe failed or was left), 2 (a user error), 128 + signal (130 Ctrl-C,
    143 SIGTERM), as `bvbench run`."""
    with signals_stop():
        try:
            return _main(argv)
        except Stopped as e:
            print(f"interrupted by {signal_name(e.signum)}" + (f" and {e.where}" if e.where else ""),
                  file=sys.stderr)
            stop_children()
            return e.exit_code


def _parser() -> argparse.ArgumentParser:
    from bvbench.runner.identity import REFERENCE_THREADS

    ap = argparse.ArgumentParser(prog="python -m bvbench.nightly", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results", help="results folder (default: results)")
    ap.add_argument("--data-dir", default=None, help="data root (default $BVBENCH_DATA or ~/.cache/bvbench)")
    ap.add_argument("--budget-hours", type=float, default=3.0, help="start no new recipe after this (default 3)")
    ap.add_argument("--only", default=None, help="comma-separated recipes (default: all, in the nightly order)")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables, plots and README from the runs "
                    "on disk; train nothing, read no data set")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=REFERENCE_THREADS,
                    help=f"CPU intra-op threads (default {REFERENCE_THREADS}: those of the committed results, so "
                         "the nightly reuses and reproduces them on any machine)")
    ap.add_argument("--headline-seeds", type=int, default=HEADLINE_SEEDS,
                    help=f"seeds of the headline claims' rows (default {HEADLINE_SEEDS}; 1: the recipe's seed only)")
    return ap


def _recipe_names(only: str | None) -> list[str]:
    """Every recipe in the nightly order, or those `--only` names (an unknown one: a user error)."""
    from bvbench.recipes import available
    from bvbench.registry import suggest

    known = available()
    names = [n for n in ORDER if n in known] + sorted(set(known) - set(ORDER))
    if not only:
        return names
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    for n in wanted:
        if n not in known:
            raise BvbenchError(f"--only: unknown recipe {n!r}{suggest(n, known)}")
    return [n for n in names if n in wanted]


def _train_entry(e: dict[str, Any], args: argparse.Namespace, out: Path, over_budget: Any) -> None:
    """Runs one recipe's cpu profile (and its headline seeds); a user error fails this recipe only."""
    from bvbench.recipes import load_recipe
    from bvbench.results import now
    from bvbench.runner import RunOptions, run_recipe

    print(f"\n=== nightly: {e['recipe']} (cpu profile, data {e['data']}"
          + (", override" if e["override"] else "") + ")", flush=True)
    start = time.monotonic()
    e["started"] = now()
    try:
        opts = RunOptions(profile="cpu", sets=e["sets"], data_dir=args.data_dir, out=str(out),
                          device=args.device, resume=True, threads=args.threads)
        run_recipe(e["recipe"], opts)
        e["headline_seeds"] = [load_recipe(e["recipe"], "cpu", e["sets"]).seed,
                               *run_headline_seeds(e, opts, run_recipe, args.headline_seeds, over_budget)]
        e["status"] = "finished"
    except InterruptedRun:
        raise
    except BvbenchError as err:  # one recipe's problem is reported; the others still run
        e.update(status="failed", reason=str(err))
        print(f"error: {e['recipe']}: {err}", file=sys.stderr, flush=True)
    e["seconds"] = round(time.monotonic() - start, 1)


def _write_reports(entries: list[dict[str, Any]], out: Path) -> None:
    """Per recipe with runs: table, claims and plots; then the summary across recipes."""
    from bvbench.recipes import load_recipe
    from bvbench.report.claims import build_claims, write_claims
    from bvbench.report.plots import plot_recipe
    from bvbench.report.table import build_summary, recipe_tables, write_summary, write_tables

    for e in entries:
        rec = load_recipe(e["recipe"])
        if (out / rec.name).is_dir():
            write_tables(recipe_tables(e["recipe"], out, "cpu"), out, rec.name)
            write_claims(build_claims(rec, out, "cpu"), out, rec.name)
            plot_recipe(rec, out, "cpu", log=lambda m: print(m, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    write_summary(build_summary([load_recipe(e["recipe"]) for e in entries], out, "cpu"), out)


def _nightly(args: argparse.Namespace) -> int:
    from bvbench.build import pick_device
    from bvbench.data import data_root
    from bvbench.report.readme import write_readme
    from bvbench.results import atomic_write_json, now
    from bvbench.runner import RunContext

    names = _recipe_names(args.only)
    out = Path(args.out)
    root = data_root(args.data_dir)
    status_path = out / "nightly.json"
    ctx = RunContext(device=pick_device(args.device).type, threads=args.threads, root=root)
    entries = plan_from_disk(names, out, ctx) if args.report_only else plan(names, root)
    t0 = time.monotonic()
    budget = args.budget_hours * 3600
    for e in entries:
        if e.get("status") == "skipped" or args.report_only:
            continue
        if time.monotonic() - t0 > budget:
            e.update(status="left for the next call", reason=f"the {args.budget_hours:g} h budget was spent")
            continue
        _train_entry(e, args, out, lambda: time.monotonic() - t0 > budget)
    _write_reports(entries, out)
    atomic_write_json(status_path, {"finished": now(), "budget_hours": args.budget_hours,
                                    "seconds": round(time.monotonic() - t0, 1), "recipes": entries})
    readme = write_readme(out, entries)
    print(f"\nnightly: {sum(e['status'] == 'finished' for e in entries)} of {len(entries)} recipes finished; "
          f"{readme}", flush=True)
    return 0 if args.report_only or all(e["status"] in ("finished", "skipped") for e in entries) else 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _nightly(args)
    except InterruptedRun as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.exit_code
    except BvbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code if hasattr(e, "exit_code") else 2


if __name__ == "__main__":
    raise SystemExit(main())
