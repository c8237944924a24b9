"""The nightly reproduction: the `cpu` profile of every recipe whose data is present, then tables, plots and
results/README.md.

    python -m bvbench.nightly [--out results] [--data-dir DIR] [--budget-hours 3] [--only a,b]   (= make nightly)

A recipe whose data set is not present runs on CIFAR-10 (`--set data.name=cifar10`) when CIFAR-10 is there,
and its section in results/README.md says so; without either it is skipped with the data's own message.
Finished runs are reused (run ids hash the resolved configuration, across recipes), unfinished ones resumed,
so a second call continues where the first stopped and shared teachers train once. When the time budget is
spent, the remaining recipes are left for the next call (and marked so): the run never stops mid-row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bvbench.errors import BvbenchError, DataMissingError, InterruptedRun

# The order in which recipes run: what issue #4 commits first, then the recipes that reuse their runs.
ORDER = ["quickstart", "bitnet-vit-cifar10", "bitvit-cifar10", "gsb-cifar100", "bitnet-vit-cifar100",
         "gsb-chaoyang", "gsb-flowers102", "bivit-imagenet", "bi-vit-imagenet", "bivit-tinyimagenet"]
FALLBACK = "cifar10"


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


def finished_rows(name: str, results: Path, sets: list[str]) -> tuple[int, int]:
    """(rows with a finished run of the cpu profile for the configuration `sets` gives, rows to run)."""
    from bvbench.recipes import load_recipe
    from bvbench.results import RunDir, safe_child
    from bvbench.runner import run_id

    rec = load_recipe(name, "cpu", sets)
    rows = [r for r in rec.rows if r.status == "run"]
    done = sum(RunDir(safe_child(results, rec.name, r.name, run_id(rec, r, rec.seed))).done for r in rows)
    return done, len(rows)


def main(argv: list[str] | None = None) -> int:
    from bvbench.data import data_root
    from bvbench.recipes import available, load_recipe
    from bvbench.report.plots import plot_recipe
    from bvbench.report.readme import write_readme
    from bvbench.report.table import build_summary, recipe_tables, write_summary, write_tables
    from bvbench.results import atomic_write_json, now
    from bvbench.runner import RunOptions, run_recipe

    ap = argparse.ArgumentParser(prog="python -m bvbench.nightly", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results", help="results folder (default: results)")
    ap.add_argument("--data-dir", default=None, help="data root (default $BVBENCH_DATA or ~/.cache/bvbench)")
    ap.add_argument("--budget-hours", type=float, default=3.0, help="start no new recipe after this (default 3)")
    ap.add_argument("--only", default=None, help="comma-separated recipes (default: all, in the nightly order)")
    ap.add_argument("--report-only", action="store_true", help="rebuild tables, plots and README; train nothing")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    try:
        known = available()
        names = [n for n in ORDER if n in known] + sorted(set(known) - set(ORDER))
        if args.only:
            wanted = [n.strip() for n in args.only.split(",") if n.strip()]
            for n in wanted:
                if n not in known:
                    from bvbench.registry import suggest

                    raise BvbenchError(f"--only: unknown recipe {n!r}{suggest(n, known)}")
            names = [n for n in names if n in wanted]
        out = Path(args.out)
        root = data_root(args.data_dir)
        status_path = out / "nightly.json"
        entries = plan(names, root)
        t0 = time.monotonic()
        budget = args.budget_hours * 3600
        for e in entries:
            if e.get("status") == "skipped":
                continue
            if args.report_only:  # what is on disk for exactly this configuration
                done, total = finished_rows(e["recipe"], out, e["sets"])
                e["status"] = "finished" if done == total else f"partial ({done} of {total} rows finished)"
                continue
            if time.monotonic() - t0 > budget:
                e.update(status="left for the next call", reason=f"the {args.budget_hours:g} h budget was spent")
                continue
            print(f"\n=== nightly: {e['recipe']} (cpu profile, data {e['data']}"
                  + (", override" if e["override"] else "") + ")", flush=True)
            start = time.monotonic()
            e["started"] = now()
            try:
                run_recipe(e["recipe"], RunOptions(profile="cpu", sets=e["sets"], data_dir=args.data_dir,
                                                   out=str(out), device=args.device, resume=True))
                e["status"] = "finished"
            except InterruptedRun:
                raise
            except BvbenchError as err:  # one recipe's problem is reported; the others still run
                e.update(status="failed", reason=str(err))
                print(f"error: {e['recipe']}: {err}", file=sys.stderr, flush=True)
            e["seconds"] = round(time.monotonic() - start, 1)
        for e in entries:
            rec = load_recipe(e["recipe"])
            if (out / rec.name).is_dir():
                write_tables(recipe_tables(e["recipe"], out, "cpu"), out, rec.name)
                plot_recipe(rec, out, "cpu", log=lambda m: print(m, flush=True))
        out.mkdir(parents=True, exist_ok=True)
        write_summary(build_summary([load_recipe(e["recipe"]) for e in entries], out, "cpu"), out)
        atomic_write_json(status_path, {"finished": now(), "budget_hours": args.budget_hours,
                                        "seconds": round(time.monotonic() - t0, 1), "recipes": entries})
        readme = write_readme(out, entries)
        print(f"\nnightly: {sum(e['status'] == 'finished' for e in entries)} of {len(entries)} recipes finished; "
              f"{readme}", flush=True)
        return 0 if args.report_only or all(e["status"] in ("finished", "skipped") for e in entries) else 1
    except InterruptedRun as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except BvbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code if hasattr(e, "exit_code") else 2


if __name__ == "__main__":
    raise SystemExit(main())
