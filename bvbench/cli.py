"""The `bvbench` command line: each command parses its options, then calls one library function."""

from __future__ import annotations

import errno
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bvbench.errors import BvbenchError, InterruptedRun, Stopped, signal_name, stop_children
from bvbench.threads import apply_threads, prepare_env

prepare_env()  # before anything imports torch: OpenMP reads OMP_WAIT_POLICY once, at torch import

app = typer.Typer(
    name="bvbench",
    help="Reproduce, compare and extend binarized and 1.58-bit Vision Transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Profile = Annotated[str, typer.Option("--profile", "-p", help="paper (published protocol), cpu or smoke")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="override a recipe field: KEY=VALUE (dotted); one "
                                                        "field per --set: --set a=1 --set b=2")]


def _print_version(value: bool) -> None:
    if value:
        from bvbench import __version__

        print(f"bvbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Reproduce, compare and extend binarized and 1.58-bit Vision Transformers."""


class LoggerName(str, Enum):
    csv = "csv"
    tensorboard = "tensorboard"
    wandb = "wandb"


class Kind(str, Enum):
    recipes = "recipes"
    methods = "methods"
    datasets = "datasets"
    models = "models"
    quantizers = "quantizers"


@app.command("list")
def list_cmd(
    kind: Annotated[Kind, typer.Argument(help="what to list")] = Kind.recipes,
    pattern: Annotated[str | None, typer.Option(help="models: every timm / torchvision name matching this "
                                                     "wildcard, instead of the families")] = None,
    data_dir: Annotated[str | None, typer.Option(help="datasets: the data root to look in (default "
                                                      "$BVBENCH_DATA or ~/.cache/bvbench)")] = None,
) -> None:
    """List recipes, methods, data sets (where each is looked for, and whether it is there), model families or
    quantizers."""
    t = Table(show_lines=False)
    if kind is Kind.recipes:
        _list_recipes(t)
    elif kind is Kind.datasets:
        t = _list_datasets(data_dir)
    elif kind is Kind.methods:
        _list_methods(t)
    elif kind is Kind.quantizers:
        from bvbench.quant import QUANTIZERS

        for col in ("quantizer", "kind", "bits", "paper"):
            t.add_column(col)
        for name in QUANTIZERS.names():
            meta = QUANTIZERS.meta(name)
            t.add_row(name, str(meta.get("kind", "")), str(meta.get("bits", "")), str(meta.get("paper", "")))
    elif pattern is not None:
        from bvbench.models import list_models

        t.add_column("model")
        for name in list_models(pattern):
            t.add_row(name)
    else:
        _list_families(t)
    console.print(t)


def _list_recipes(t: Table) -> None:
    from bvbench import recipes

    t.add_column("recipe", no_wrap=True, min_width=max(map(len, recipes.available())))
    t.add_column("paper", min_width=20)
    t.add_column("tables", max_width=12)
    t.add_column("data set", no_wrap=True)
    t.add_column("rows (run)", no_wrap=True)
    t.add_column("not supported")
    for name in recipes.available():
        try:
            r = recipes.load_recipe(name)
        except BvbenchError as e:
            t.add_row(name, f"[red]invalid: {escape(str(e).splitlines()[0])}[/]", "", "", "", "")
            continue
        run = sum(x.status == "run" for x in r.rows)
        t.add_row(name, r.paper.short, ", ".join(x.name.removeprefix("Table ") for x in r.paper.tables),
                  r.data.name, f"{len(r.rows)} ({run})",
                  "; ".join(f"{x.table}: {x.reason}" for x in r.paper.not_supported))


def _list_datasets(data_dir: str | None) -> Table:
    """Each data set, where it is looked for under the data root, and whether it is there."""
    from bvbench.data import DATASETS, data_root, dataset_info
    from bvbench.data.datasets import locate

    root = data_root(data_dir)
    t = Table(title=f"data root {root} (--data-dir, else $BVBENCH_DATA, else ~/.cache/bvbench)")
    for col in ("data set", "name in tables", "classes", "image size", "looked for under the root", "present"):
        t.add_column(col, overflow="fold")
    for name in DATASETS.names():
        info = dataset_info(name)
        layouts, found = locate(name, root)
        where = "\n".join(("[green]✓[/] " if x == found else "") + escape(str(root / x)) for x in layouts)
        here = "[green]yes[/]" if found else "[red]no[/]" if layouts else "—"
        where = where or escape(str(DATASETS.meta(name).get("source", "")))
        t.add_row(name, info.display, str(info.num_classes), str(info.img_size), where, here)
    return t


def _list_methods(t: Table) -> None:
    from bvbench.methods import METHODS

    for col in ("method", "bits (W-A)", "paper", "options"):
        t.add_column(col)
    for name in METHODS.names():
        meta = METHODS.meta(name)
        t.add_row(name, str(meta.get("bits", "")), escape(str(meta.get("paper", ""))),
                  ", ".join(meta.get("options") or []) or "—")


def _list_families(t: Table) -> None:
    """The families `methods.apply` converts, with the models the recipes use; `--pattern` lists names."""
    from bvbench.models.families import FAMILIES, family_of
    from bvbench.recipes import available, load_recipe

    used: dict[str, set[str]] = {}
    for name in available():
        try:
            for row in load_recipe(name).rows:
                if (fam := family_of(row.model.name)) is not None:
                    used.setdefault(fam.name, set()).add(row.model.name)
        except BvbenchError:
            continue
    t.title = "model families (`bvbench list models --pattern 'deit*'` lists names)"
    for col in ("family", "names", "attention converted", "in the recipes", "note"):
        t.add_column(col, overflow="fold")
    for f in FAMILIES:
        t.add_row(f.name, ", ".join(f.patterns), f.attention, ", ".join(sorted(used.get(f.name, ()))) or "—", f.note)


@app.command()
def show(
    recipe: Annotated[str, typer.Argument(help="recipe name or YAML path")],
    profile: Profile = "paper",
    set_: Sets = None,
    rows: Annotated[str | None, typer.Option(help="comma-separated row names: only these rows")] = None,
) -> None:
    """Print the fully resolved recipe as YAML."""
    from bvbench.recipes import load_recipe, to_yaml

    rec = load_recipe(recipe, profile, set_ or [])
    if rows:
        rec = rec.model_copy(update={"rows": [rec.row(n.strip()) for n in rows.split(",") if n.strip()]})
    print(to_yaml(rec), end="")


@app.command()
def validate(
    recipe: Annotated[list[str] | None, typer.Argument(help="recipe names or paths")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every recipe in recipes/")] = False,
) -> None:
    """Check recipes (every profile) without running them."""
    from bvbench.recipes import PROFILES, available, load_recipe, read_yaml, recipe_path

    names = available() if all_ or not recipe else recipe
    bad = 0
    for name in names:
        profiles = ["paper", *[p for p in (read_yaml(recipe_path(name)).get("profiles") or {}) if p in PROFILES]]
        failures: dict[str, list[str]] = {}  # message -> the profiles that fail with it
        for p in profiles:
            try:
                load_recipe(name, p)
            except BvbenchError as e:
                bad += 1
                failures.setdefault(str(e), []).append(p)
        for msg, where in failures.items():
            plural = "s" if len(where) > 2 else ""
            same = f" (the same in profile{plural} {', '.join(where[1:])})" if len(where) > 1 else ""
            err.print(f"[red]✗[/] {escape(name)} \\[{where[0]}]: {escape(msg)}{same}")
        if not failures:
            console.print(f"[green]✓[/] {escape(name)} ({', '.join(profiles)})")
    if bad:
        raise BvbenchError(f"{bad} recipe profile(s) invalid")


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="recipe name or YAML path")],
    profile: Profile = "paper",
    rows: Annotated[str | None, typer.Option(help="comma-separated row names (their teachers run too)")] = None,
    set_: Sets = None,
    data_dir: Annotated[str | None, typer.Option(help="data root (default $BVBENCH_DATA or ~/.cache/bvbench)")] = None,
    download: Annotated[bool, typer.Option(help="let torchvision download missing data sets")] = False,
    out: Annotated[str, typer.Option(help="results folder")] = "results",
    seed: Annotated[int | None, typer.Option(help="random seed (default: the recipe's)")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="run every row with N seeds: the recipe's seed and the "
                                                        "next N-1 (tables show mean ± std)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    resume: Annotated[bool, typer.Option(help="(the default) an unfinished run is always continued from its last "
                                              "checkpoint; kept for older scripts")] = False,
    restart: Annotated[bool, typer.Option(help="discard unfinished runs (moved aside into .discarded/ beside them) and "
                                               "train those rows afresh; finished runs are kept")] = False,
    launcher: Annotated[str, typer.Option(help="none (train here), local (submitit jobs on this machine) or "
                                               "slurm (one job per row, teachers first, requeued on preemption)")] = "none",
    partition: Annotated[str | None, typer.Option(help="Slurm partition (--launcher slurm)")] = None,
    gpus_per_node: Annotated[int, typer.Option(min=0, help="GPUs (= DDP processes) per node for each row's job")] = 0,
    nodes: Annotated[int, typer.Option(min=1, help="nodes per row's job (--launcher slurm)")] = 1,
    time: Annotated[float, typer.Option(min=0.01, help="time limit per job in hours (Slurm requeues the job "
                                                      "before it and the row resumes)")] = 24.0,
    steal_stale: Annotated[bool, typer.Option(help="take over run folders whose lock is stale (no heartbeat for "
                                                   "10 minutes)")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU intra-op threads (default $BVBENCH_THREADS, else usable "
                                                     "cores minus the row's loader workers); part of a CPU run's id")] = None,
    logger: Annotated[list[LoggerName] | None, typer.Option(
        "--logger", help="experiment logger: csv, tensorboard or wandb; repeat for several (files under each "
                         "run's logs/)")] = None,
) -> None:
    """Train and evaluate each row of a recipe; finished runs are reused, never overwritten; an unfinished run
    is continued from its last checkpoint (no --resume needed; --restart discards it). SIGUSR1 (Slurm, before the
    time limit) saves a checkpoint at the next step and exits 138: requeue the job and the same command continues.

    One process writes a run folder at a time: it holds a lock file beside it (.<run-id>.lock: host, pid,
    start, a heartbeat every 30 s). A row whose folder another live process holds is skipped with a one-line
    message. A lock whose process is gone (same host) is released; one without a heartbeat for 10 minutes is
    stale and only --steal-stale takes it over.
    """
    apply_threads(threads)
    from bvbench.recipes import load_recipe
    from bvbench.runner import RowsFailed, RunOptions

    _check_seed(seed, seeds)
    opts = RunOptions(profile=profile, rows=rows.split(",") if rows else None, sets=set_ or [], data_dir=data_dir,
                      download=download, out=out, seed=seed, device=device, resume=resume,
                      steal_stale=steal_stale, threads=threads, restart=restart,
                      loggers=[lg.value for lg in logger or []])
    failures: list[RowsFailed] = []
    first: int | None = None
    if launcher != "none":
        _launch(recipe, opts, launcher, partition, gpus_per_node, nodes, time)
        if launcher == "slurm":
            return
        rec = load_recipe(recipe, profile, set_ or [])
    else:
        rec, first = _run_seeds(recipe, opts, profile, set_ or [], seeds, failures)
    _write_run_tables(recipe, rec, Path(out), profile)
    _raise_failures(failures, first)  # the table is written; the exit code still says that rows are missing


def _raise_failures(failures: list[Any], first: int | None) -> None:
    from bvbench.runner import RowsFailed

    if failures:
        raise failures[0] if len(failures) == 1 else RowsFailed("; ".join(
            f"seed {first + i}: {f}" for i, f in enumerate(failures)))  # type: ignore[operator]


def _check_seed(seed: int | None, seeds: int | None) -> None:
    from bvbench.recipes.schema import MAX_SEED

    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise BvbenchError(f"--seed {seed} is out of range: seeds are 0 ... {MAX_SEED} (2**32 - 1)")
    if seed is not None and seeds is not None:
        raise BvbenchError("--seed and --seeds exclude each other: --seed S runs seed S, --seeds N runs the "
                           "recipe's seed and the next N-1")


def _run_seeds(recipe: str, opts: Any, profile: str, sets: list[str], seeds: int | None,
               failures: list[Any]) -> tuple[Any, int | None]:
    """The recipe once (seeds None) or with the recipe's seed and the next seeds-1; (recipe, first seed)."""
    from dataclasses import replace

    from bvbench.recipes import load_recipe
    from bvbench.runner import run_recipe

    if seeds is None:
        return _run_seed(run_recipe, recipe, opts, failures), None
    first = load_recipe(recipe, profile, sets).seed
    for i in range(seeds):
        console.print(f"[bold]seed {first + i}[/] ({i + 1} of {seeds})")
        rec = _run_seed(run_recipe, recipe, replace(opts, seed=first + i), failures)
    return rec, first


def _write_run_tables(recipe: str, rec: Any, out: Path, profile: str) -> None:
    """Writes and prints the recipe's tables and claims, as `bvbench table --profile P` shows them."""
    from bvbench.recipes import load_recipe
    from bvbench.report.claims import build_claims, claims_markdown, write_claims
    from bvbench.report.table import recipe_tables, to_markdown, write_tables

    tables = recipe_tables(recipe, out, profile)
    write_tables(tables, out, rec.name)
    claims = build_claims(load_recipe(recipe), out, profile)
    write_claims(claims, out, rec.name)
    print(to_markdown(tables) + ("\n" + claims_markdown(rec.name, claims) if claims else ""))


def _run_seed(run_recipe: Any, recipe: str, opts: Any, failures: list[Any]) -> Any:
    """One `run_recipe`; a RowsFailed (diverged or blocked rows) is kept for the end, after the tables."""
    from bvbench.runner import RowsFailed

    try:
        return run_recipe(recipe, opts)[0]
    except RowsFailed as e:
        failures.append(e)
        return e.recipe


def _launch(recipe: str, opts: Any, launcher: str, partition: str | None, gpus: int, nodes: int,
            hours: float) -> None:
    from bvbench.runner.launch import ClusterOptions, submit

    cluster = ClusterOptions(launcher=launcher, partition=partition, nodes=nodes, gpus_per_node=gpus,
                             time_min=max(1, round(hours * 60)))
    jobs = submit(recipe, opts, cluster, wait=launcher == "local")
    for j in jobs:
        after = f" after {', '.join(j.after)}" if j.after else ""
        console.print(f"  {escape(j.row)}: job {j.job_id}{after}  log {escape(j.log)}")
    console.print(f"{len(jobs)} job(s) {'finished' if launcher == 'local' else 'submitted'}; "
                  f"`bvbench status {escape(recipe)} --out {escape(opts.out)}` shows each row")


@app.command()
def status(
    recipe: Annotated[str, typer.Argument(help="recipe name or YAML path")],
    profile: Annotated[str | None, typer.Option(help="paper, cpu or smoke (default: that of the last "
                                                     "`run --launcher` into --out, else paper)")] = None,
    set_: Sets = None,
    out: Annotated[str, typer.Option(help="results folder")] = "results",
    seed: Annotated[int | None, typer.Option(help="random seed (default: the recipe's)")] = None,
) -> None:
    """Each row of a recipe: finished, running (epoch, last write), queued, failed (with its log), unfinished or unstarted."""
    from bvbench.recipes import load_recipe
    from bvbench.runner.launch import last_submission, row_states

    name = load_recipe(recipe, "paper").name
    last = last_submission(out, name) if profile is None and not set_ else {}
    rec = load_recipe(recipe, profile or last.get("profile", "paper"), set_ or last.get("sets", []))
    seed = seed if seed is not None else last.get("seed")
    for st in row_states(rec, out, seed):
        colour = {"finished": "green", "running": "cyan", "queued": "yellow", "failed": "red"}.get(st.state, "dim")
        log = f"  log {st.log}" if st.log and st.state != "finished" else ""
        console.print(f"[{colour}]{st.state:>11}[/]  {escape(st.row)}  {escape(st.detail)}{escape(log)}")


@app.command()
def table(
    recipe: Annotated[list[str] | None, typer.Argument(help="recipes (default: every recipe with results)")] = None,
    results: Annotated[str, typer.Option(help="results folder")] = "results",
    format_: Annotated[str | None, typer.Option("--format", help="md, csv, tex (LaTeX, booktabs) or rich "
                                                                 "(default: rich on a terminal, md otherwise)")] = None,
    profile: Annotated[str | None, typer.Option(help="only runs of this profile")] = None,
    out: Annotated[str | None, typer.Option(help="write to this file instead of printing")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="only the paper's columns, as the recipe transcribes "
                                                        "them")] = False,
    measured_only: Annotated[bool, typer.Option("--measured-only", help="only our measured columns (no paper "
                                                                        "values, no Δ)")] = False,
    summary: Annotated[bool, typer.Option("--summary", help="one table, a line per finished row across the "
                                                            "recipes (also results/summary.md and .csv)")] = False,
) -> None:
    """Comparison tables: the paper's numbers next to ours (also written to results/<recipe>/table.*)."""
    from bvbench.recipes import available

    fmt, view = _table_format(format_, paper, measured_only, summary, out)
    res = Path(results)
    names = recipe or [n for n in available() if (res / n).is_dir()]
    if not names:
        raise BvbenchError(f"no results in {res}/ yet; run a recipe first (bvbench run quickstart)")
    text = _summary_text(names, res, profile, fmt) if summary else _tables_text(names, res, profile, fmt, view)
    if text is None:  # printed as rich tables
        return
    if out:
        from bvbench.results import atomic_write_text

        atomic_write_text(Path(out), text)
        console.print(f"wrote {out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def _table_format(format_: str | None, paper: bool, measured_only: bool, summary: bool,
                  out: str | None) -> tuple[str, str]:
    """`bvbench table`'s (format, view) from its flags; a contradiction is a user error."""
    from bvbench.report import table as tb

    if format_ not in (None, *tb.FORMATS):
        raise BvbenchError(f"--format {format_!r}: choose md, csv, tex or rich")
    if paper and measured_only:
        raise BvbenchError("--paper and --measured-only exclude each other: --paper shows the paper's columns only, "
                           "--measured-only ours only; pass one")
    if summary and (paper or measured_only):
        raise BvbenchError("--summary lists measured rows; it does not take --paper or --measured-only")
    if format_ == "rich" and out:
        raise BvbenchError("--format rich prints to the terminal; write files with --format md, csv or tex")
    fmt = format_ or ("md" if out or not sys.stdout.isatty() else "rich")
    return fmt, "paper" if paper else "measured" if measured_only else "full"


def _summary_text(names: list[str], res: Path, profile: str | None, fmt: str) -> str | None:
    """The summary across recipes (written to results/summary.*); None when printed as a rich table."""
    from bvbench.recipes import load_recipe
    from bvbench.report import table as tb

    lines = tb.build_summary([load_recipe(n) for n in names], res, profile)
    if res.is_dir():
        tb.write_summary(lines, res)
    if fmt == "rich":
        console.print(tb.summary_rich(lines))
        return None
    if fmt == "tex":
        raise BvbenchError("--summary writes md or csv; --format tex is for the paper tables")
    return tb.summary_markdown(lines) if fmt == "md" else tb.summary_csv(lines)


def _tables_text(names: list[str], res: Path, profile: str | None, fmt: str, view: str) -> str | None:
    """The recipes' tables and claims (written to results/<recipe>/); None when printed as rich tables."""
    from bvbench.recipes import load_recipe
    from bvbench.report import table as tb
    from bvbench.report.claims import build_claims, claims_markdown, claims_rich, write_claims

    all_tables, all_claims = [], []
    for name in names:
        rec = load_recipe(name)
        tables = tb.recipe_tables(name, res, profile)
        claims = build_claims(rec, res, profile)  # the "Claims" section after the tables
        if (res / rec.name).is_dir():
            tb.write_tables(tables, res, rec.name)
            write_claims(claims, res, rec.name)
        all_tables += tables
        all_claims += [(rec.name, claims)] if claims and tb.view_of(view).run_columns else []
    rendered = tb.render(all_tables, fmt, view)
    if not isinstance(rendered, str):
        for i, t in enumerate(rendered + [claims_rich(*c) for c in all_claims]):
            if i:
                console.print()
            console.print(t)
        return None
    return rendered + ("".join("\n" + claims_markdown(*c) for c in all_claims) if fmt == "md" else "")


@app.command()
def profile(
    recipe: Annotated[str, typer.Argument(help="recipe name or YAML path")],
    profile_: Profile = "paper",
    rows: Annotated[str | None, typer.Option(help="comma-separated row names")] = None,
    set_: Sets = None,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
    latency: Annotated[bool, typer.Option(help="also time batch 1 and 64 (median, p10, p90)")] = False,
    checkpoint: Annotated[str | None, typer.Option(help="weights to load (default: random)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (latency)")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads for latency (recorded)")] = None,
) -> None:
    """Parameters, MACs, BOPs, FLOPs, OPs, sizes (and latency) of each row; no training."""
    apply_threads(threads)
    import json

    from bvbench.build import pick_device
    from bvbench.evaluate.profile import profile_row
    from bvbench.methods import METHODS
    from bvbench.recipes import load_recipe

    rec = load_recipe(recipe, profile_, set_ or [])
    names = rows.split(",") if rows else [r.name for r in rec.rows]
    out, skipped = [], []
    for i, name in enumerate(names, 1):
        row = rec.row(name)
        stages = row.resolved_stages()
        if row.status == "reference" or any(s.method is None or s.method.name not in METHODS for s in stages):
            skipped.append(name)
            continue
        with _progress_line(f"profile {i}/{len(names)}: {name}: building the model, counting"
                            + (", timing" if latency else "")):
            out.append(profile_row(rec, row, checkpoint=checkpoint, latency=latency, device=pick_device(device),
                                   threads=threads))
    if json_:
        print(json.dumps({"recipe": rec.name, "profile": rec.profile, "rows": out, "skipped": skipped}, indent=1))
        return
    t = Table(title=f"{rec.name} ({rec.profile}): complexity per forward pass of one image")
    for col in ("row", "params (M)", "MACs (G)", "BOPs (G)", "FLOPs (G)", "OPs (1e8)", "fp32 (MiB)",
                "size (MB)", ".bvb (MB)", ".bvb / fp32", *(["latency b1 (ms)"] if latency else [])):
        t.add_column(col, justify="right" if col != "row" else "left")
    for r in out:
        t.add_row(r["row"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}", f"{r['bops'] / 1e9:.3f}",
                  f"{r['flops'] / 1e9:.3f}", f"{r['ops'] / 1e8:.3f}", f"{r['size_fp32_mib']:.2f}",
                  f"{r['size_mb']:.2f}", f"{r['bvb_bytes'] / 1e6:.3f}", f"{r['bvb_vs_fp32']:.3f}",
                  *([f"{r['latency_ms']:.2f}"] if latency else []))
    console.print(t)
    if latency and out:
        _print_latency(out)
    if skipped:
        console.print(f"[dim]not profiled (reference rows or methods not implemented): {', '.join(skipped)}[/]")


def _progress_line(msg: str) -> Any:
    """A spinner with `msg` on stderr while the block runs (a terminal), else the line itself once."""
    import contextlib

    if err.is_terminal:
        return err.status(escape(msg))
    err.print(escape(msg), style="dim")
    return contextlib.nullcontext()


def _print_latency(rows: list[dict]) -> None:
    """`profile --latency`'s table: per row, variant, threads and batch size; footnote: kernel path and CPU."""
    t = Table(title="latency per forward pass (ms); x fp32 = fp32 median / this median")
    for col in ("row", "variant", "threads", "batch", "median", "p10", "p90", "x fp32"):
        t.add_column(col, justify="left" if col in ("row", "variant") else "right")
    for r in rows:
        fp = {(x["threads"], x["batch_size"]): x["median_ms"] for x in r["latency"] if x["mode"] == "fp32"}
        for x in r["latency"]:
            t.add_row(r["row"], x["mode"], str(x["threads"]), str(x["batch_size"]), f"{x['median_ms']:.3f}",
                      f"{x['p10_ms']:.3f}", f"{x['p90_ms']:.3f}",
                      f"{fp[x['threads'], x['batch_size']] / x['median_ms']:.2f}")
    console.print(t)
    r0 = rows[0]
    console.print(f"[dim]packed = bvbench's bit-kernel engine, kernel path {r0['kernel_path']}; simulated = "
                  f"fake-quantized; CPU: {escape(r0['cpu'])} ({', '.join(r0['cpu_flags']) or 'no SIMD flags'})[/]")
    for r in rows:
        if r.get("packed_note"):
            console.print(f"[dim]{r['row']}: no packed column: {escape(r['packed_note'])}[/]")


@app.command()
def plot(
    recipe: Annotated[str, typer.Argument(help="recipe name or YAML path")],
    results: Annotated[str, typer.Option(help="results folder")] = "results",
    profile: Annotated[str | None, typer.Option(help="only runs of this profile")] = None,
    out: Annotated[str | None, typer.Option(help="folder to write the figures to (default: "
                                                 "<results>/<recipe>/)")] = None,
) -> None:
    """Figures next to the tables: accuracy vs OPs and vs size, training curves, confusion matrices."""
    from bvbench.recipes import load_recipe
    from bvbench.report.plots import plot_recipe

    rec = load_recipe(recipe)
    res = Path(results)
    if not (res / rec.name).is_dir():
        raise BvbenchError(f"no results for {rec.name} in {res}/ yet; run it first (bvbench run {recipe})")
    files = plot_recipe(rec, res, profile, log=lambda msg: err.print(f"[yellow]{escape(msg)}[/]"),
                        out=Path(out) if out else None)
    for f in files:
        console.print(f"wrote {escape(str(f))}")


class AttentionMethod(str, Enum):
    rollout = "rollout"
    last = "last"


@app.command()
def attention(
    run_dir: Annotated[list[str], typer.Argument(help="finished run folders results/<recipe>/<row>/<run-id>")],
    images: Annotated[int, typer.Option(help="how many test images (the first N of the test split)")],
    method: Annotated[AttentionMethod, typer.Option(help="rollout (Abnar & Zuidema 2020) or last "
                                                         "(last layer's class-token attention)")] = AttentionMethod.rollout,
    out: Annotated[str | None, typer.Option(help="PNG to write (default: results/<recipe>/attention_<method>.png)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="data root (default: the one the run used)")] = None,
) -> None:
    """Attention maps of runs side by side on the same test images (original + one column per run)."""
    from bvbench.report.attention import attention_figure, default_out

    dirs = [Path(d) for d in run_dir]
    path = Path(out) if out else default_out(dirs, method.value)
    attention_figure(dirs, images, path, data_dir=data_dir, method=method.value)
    console.print(f"wrote {escape(str(path))}")


class Engine(str, Enum):
    simulated = "simulated"
    packed = "packed"


@app.command("eval")
def eval_cmd(
    run_dir: Annotated[str, typer.Argument(help="a finished run folder results/<recipe>/<row>/<run-id>, or a "
                                                "packed model file written by `bvbench export`")],
    data_dir: Annotated[str | None, typer.Option(help="data root")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    engine: Annotated[Engine, typer.Option(help="packed model files: simulated (fake-quantized) or packed "
                                                "(the bit-kernel engine, CPU)")] = Engine.simulated,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default $BVBENCH_THREADS or usable cores)")] = None,
) -> None:
    """Re-evaluate a finished run from its checkpoint, or a packed model file."""
    apply_threads(threads)
    import json

    from bvbench.evaluate.export import evaluate_packed

    if Path(run_dir).is_file():  # a packed model file (a run is a folder)
        print(json.dumps(evaluate_packed(run_dir, data_dir, device, engine.value), indent=2))
        return
    if engine is Engine.packed:
        raise BvbenchError(f"--engine packed runs a packed model file; write one with `bvbench export {run_dir} "
                           "--out model.bvb`")
    from bvbench.runner import evaluate_run

    print(json.dumps(evaluate_run(run_dir, data_dir, device), indent=2))


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="a finished run folder results/<recipe>/<row>/<run-id>")],
    out: Annotated[str, typer.Option("--out", "-o", help="packed model file to write")],
    half: Annotated[bool, typer.Option("--half", help="full-precision tensors as fp16 (smaller, not exact)")] = False,
) -> None:
    """Write a run's model as a bit-packed file (1-bit signs, 2-bit ternary codes, scales, manifest)."""
    from bvbench.evaluate.export import export_run

    s = export_run(run_dir, out, half=half)
    console.print(f"wrote {escape(s['file'])}: {s['file_bytes'] / 1e6:.3f} MB packed, theoretical "
                  f"{s['theoretical_mb']:.3f} MB ({s['file_vs_theoretical']:.3f}x), fp32 checkpoint "
                  f"{s['checkpoint_bytes'] / 1e6:.3f} MB; {s['packed_layers']} quantized layers packed")
    if s["dequantized_layers"]:
        console.print(f"[yellow]stored as fp32 (codes x scale could not reproduce them exactly): "
                      f"{escape(', '.join(s['dequantized_layers']))}[/]")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback; a signal prints one line and exits
    128 + its number (130 for Ctrl-C, 143 for SIGTERM), whatever the command was doing."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    if threading.current_thread() is threading.main_thread():
        for s in old:
            signal.signal(s, _stop_now)
    try:
        code = app(args=argv, prog_name="bvbench", standalone_mode=False)
    except Stopped as e:
        err.print(f"interrupted by {signal_name(e.signum)}" + (f" and {e.where}" if e.where else ""))
        sys.exit(e.exit_code)
    except InterruptedRun as e:
        err.print(escape(str(e)))
        sys.exit(e.exit_code)
    except BvbenchError as e:
        err.print("[red]error:[/] " + escape(str(e)))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # usage errors from click/typer: their own short message, exit 2
        code = _usage_error(e)
        if code is None:
            raise
        sys.exit(code)
    finally:
        stop_children()  # none after a clean finish; after a stop or an error, its loader workers
        if threading.current_thread() is threading.main_thread():
            for s, h in old.items():
                signal.signal(s, h)
    if isinstance(code, int) and code:  # Typer returns Exit(130) for a KeyboardInterrupt it caught
        if code == 130:
            err.print("interrupted")
        sys.exit(code)


def _stop_now(signum: int, frame: Any) -> None:
    """Outside a run's own handler (see StopFlag) a signal stops the command at once."""
    raise Stopped(signum)


def _usage_error(e: Exception) -> int | None:
    """Show a click/typer usage error and return its exit code; None when `e` is not one."""
    import click
    import typer.exceptions

    if isinstance(e, click.exceptions.Abort | typer.exceptions.Abort):
        return 130
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # a write outside the atomic helpers
        err.print(f"[red]error:[/] no space left on the device{escape(f' writing {e.filename}' if e.filename else '')}; "
                  "files written before are kept")
        return 2
    if isinstance(e, click.exceptions.Exit | typer.exceptions.Exit):
        return int(getattr(e, "exit_code", 0) or 0)
    if isinstance(e, click.exceptions.ClickException | typer.exceptions.TyperException) and hasattr(e, "format_message"):
        if type(e).__name__ == "NoArgsIsHelpError":  # `bvbench` alone, or a group without a command: the help
            e.show()
            return 2
        ctx = getattr(e, "ctx", None)  # one line: the message and where the help is (not the usage block)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print("[red]error:[/] " + escape(" ".join(e.format_message().split()) + where))
        return 2
    return None


if __name__ == "__main__":
    main()
