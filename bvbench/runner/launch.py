"""Launchers: the rows of a recipe as submitit jobs (Slurm or local), teachers and `init_from` sources first.

No scheduler of our own: the plan is a list of jobs with dependencies handed to submitit. On Slurm the rows
without a dependency go out as one job array and every other row waits for its sources with `afterok`; the
local executor runs the same plan wave by wave. Each job trains one row (a multi-GPU DDP run when it has
several tasks), continues its own unfinished run, and requeues itself when Slurm signals preemption.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import submitit

from bvbench.errors import BvbenchError, InterruptedRun
from bvbench.recipes import Recipe, Row, load_recipe
from bvbench.results import RunDir, config_hash, find_runs
from bvbench.runner.plan import RunOptions

# Slurm sends this signal `SIGNAL_DELAY_S` seconds before the time limit (and on preemption); submitit's
# handler then asks the job for its checkpoint and requeues it.
PREEMPT_SIGNAL = "USR1"
SIGNAL_DELAY_S = 120
FRESH_S = 600.0  # a run folder written within this is "running" even where the scheduler cannot be asked


@dataclass
class JobSpec:
    """One row to train and the rows whose finished runs it needs first."""

    row: str
    after: list[str] = field(default_factory=list)


@dataclass
class ClusterOptions:
    launcher: str = "slurm"  # slurm | local
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    time_min: int = 60
    mem_gb: int | None = None


def plan_jobs(recipe: Recipe, rows: list[str] | None = None) -> list[JobSpec]:
    """The trainable rows (and the rows they depend on) in dependency order, each with its sources."""
    names = recipe.dependencies(rows or [r.name for r in recipe.rows])
    runnable = {n for n in names if recipe.row(n).status == "run"}
    jobs = []
    for n in names:
        if n not in runnable:
            continue
        r = recipe.row(n)
        jobs.append(JobSpec(n, [d for d in (r.init_from, r.teacher) if d and d in runnable]))
    return jobs


def waves(jobs: list[JobSpec]) -> list[list[JobSpec]]:
    """Jobs grouped so that every job's sources are in an earlier wave."""
    level: dict[str, int] = {}
    for j in jobs:  # dependency order: sources were seen first
        level[j.row] = 1 + max((level[d] for d in j.after), default=-1)
    out: list[list[JobSpec]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for j in jobs:
        out[level[j.row]].append(j)
    return out


class RowJob(submitit.helpers.Checkpointable):
    """The body of one job: train one row of a recipe; on requeue the same call continues its run."""

    def __init__(self, recipe: str, opts: RunOptions, row: str) -> None:
        self.recipe, self.opts, self.row = recipe, opts, row

    def __call__(self) -> str:
        from bvbench.runner import run_recipe

        _distributed_env()
        # The job's own unfinished run (an earlier attempt, preempted or timed out) is continued.
        opts = replace(self.opts, rows=[self.row], resume=True)
        try:
            _, done = run_recipe(self.recipe, opts)
        except InterruptedRun as e:
            if e.signum != signal.SIGUSR1:
                raise
            # The trainer saved a checkpoint at the step the signal arrived; submitit's own handler (restored
            # when the run ended) requeues the job, whose next attempt continues the run.
            os.kill(os.getpid(), signal.SIGUSR1)
            raise
        mine = [rd for rd in done if rd.path.parent.name == self.row]
        if not mine:
            raise RuntimeError(f"row {self.row!r} did not finish")
        return str(mine[0].path)


def _distributed_env() -> None:
    """Under a multi-task submitit job: the torchrun variables that `init_distributed` reads."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    if env.num_tasks <= 1:
        return
    os.environ.update({"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
                       "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.hostnames[0],
                       "MASTER_PORT": os.environ.get("MASTER_PORT", str(20000 + int(env.job_id.split("_")[0]) % 20000))})


def jobs_dir(out: str | Path, recipe: str) -> Path:
    return Path(out) / recipe / ".jobs"


def _executor(cluster: ClusterOptions, folder: Path, name: str) -> Any:
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = PREEMPT_SIGNAL  # exported to the job by sbatch
    if cluster.launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=cluster.time_min, gpus_per_node=cluster.gpus_per_node,
                             tasks_per_node=max(1, cluster.gpus_per_node), nodes=1)
        return ex
    if cluster.launcher != "slurm":
        raise BvbenchError(f"unknown launcher {cluster.launcher!r}: use none, local or slurm")
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=10)
    params: dict[str, Any] = {"time": cluster.time_min, "nodes": cluster.nodes, "job_name": name,
                              "ntasks_per_node": max(1, cluster.gpus_per_node), "signal_delay_s": SIGNAL_DELAY_S}
    if cluster.partition:
        params["partition"] = cluster.partition
    if cluster.gpus_per_node:
        params["gpus_per_node"] = cluster.gpus_per_node
    if cluster.cpus_per_task:
        params["cpus_per_task"] = cluster.cpus_per_task
    if cluster.mem_gb:
        params["mem"] = f"{cluster.mem_gb}GB"
    ex.update_parameters(**params)
    return ex


@dataclass
class Submitted:
    row: str
    job_id: str
    after: list[str]
    log: str


def submit(recipe_ref: str, opts: RunOptions, cluster: ClusterOptions, *, wait: bool = False) -> list[Submitted]:
    """Submit one job per row; returns the job ids and log paths (also written to <out>/<recipe>/.jobs/)."""
    if cluster.launcher == "slurm" and not _has("sbatch"):
        raise BvbenchError("--launcher slurm needs Slurm's sbatch on PATH (none found); on one machine "
                           "scripts/slurm-local.sh starts a one-node cluster")
    recipe = load_recipe(recipe_ref, opts.profile, opts.sets)  # validates before anything is submitted
    specs = plan_jobs(recipe, opts.rows)
    folder = jobs_dir(opts.out, recipe.name) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    ex = _executor(cluster, folder, f"bvbench-{recipe.name}")
    submitted: dict[str, Any] = {}
    records: list[Submitted] = []
    for wave in waves(specs):
        if cluster.launcher == "local":
            for j in wave:  # the local executor has no dependencies: a wave starts when the last one ended
                for d in j.after:
                    submitted[d].result()
            jobs = [ex.submit(RowJob(recipe_ref, opts, j.row)) for j in wave]
        else:
            jobs = _submit_slurm_wave(ex, wave, submitted, recipe_ref, opts)
        for j, job in zip(wave, jobs, strict=True):
            submitted[j.row] = job
            records.append(Submitted(j.row, str(job.job_id), j.after, str(job.paths.stdout)))
    _record(opts, recipe, cluster, records)
    if wait:
        for job in submitted.values():
            job.result()
    return records


def _submit_slurm_wave(ex: Any, wave: list[JobSpec], submitted: dict[str, Any], recipe_ref: str,
                       opts: RunOptions) -> list[Any]:
    free = [j for j in wave if not j.after]
    jobs: dict[str, Any] = {}
    if free:
        ex.update_parameters(dependency=None)
        with ex.batch():  # one job array for the rows that wait for nothing
            batch = [ex.submit(RowJob(recipe_ref, opts, j.row)) for j in free]
        jobs.update({j.row: b for j, b in zip(free, batch, strict=True)})
    for j in wave:
        if j.after:
            ex.update_parameters(dependency="afterok:" + ":".join(str(submitted[d].job_id) for d in j.after))
            jobs[j.row] = ex.submit(RowJob(recipe_ref, opts, j.row))
    ex.update_parameters(dependency=None)
    return [jobs[j.row] for j in wave]


def _record(opts: RunOptions, recipe: Recipe, cluster: ClusterOptions, records: list[Submitted]) -> None:
    path = jobs_dir(opts.out, recipe.name) / "jobs.json"
    doc = {"recipe": recipe.name, "profile": recipe.profile, "sets": list(opts.sets), "seed": opts.seed,
           "launcher": cluster.launcher,
           "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "folder": str(path.parent / "logs"),
           "jobs": [asdict(r) for r in records]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _has(cmd: str) -> bool:
    return shutil.which(cmd) is not None


@dataclass
class RowState:
    row: str
    state: str  # finished | running | queued | failed | unfinished | unstarted
    detail: str = ""
    log: str = ""


def row_states(recipe: Recipe, out: str | Path, seed: int | None = None) -> list[RowState]:
    """Per trainable row: finished (its run folder has .done), else what its last submitted job is doing."""
    doc = last_submission(out, recipe.name)
    jobs = {j["row"]: j for j in doc.get("jobs", [])}
    queue = _squeue([j["job_id"] for j in jobs.values()]) if doc.get("launcher") == "slurm" else {}
    seed = recipe.seed if seed is None else seed
    states = []
    for spec in plan_jobs(recipe):
        row = recipe.row(spec.row)
        rd = row_run_dir(recipe, row, seed, Path(out))
        job = jobs.get(row.name, {})
        log = job.get("log", "")
        if rd.done:
            states.append(RowState(row.name, "finished", str(rd.path), log))
            continue
        slurm = queue.get(str(job.get("job_id")), "")
        progress, age = _progress(rd.path)
        if slurm in ("PENDING", "CONFIGURING", "REQUEUED"):
            states.append(RowState(row.name, "queued", f"job {job['job_id']}", log))
        elif slurm in ("RUNNING", "COMPLETING") or (progress and age < FRESH_S):
            states.append(RowState(row.name, "running", progress or f"job {job.get('job_id')}", log))
        elif job:
            states.append(RowState(row.name, "failed", progress or "ended without a finished run", log))
        else:
            states.append(RowState(row.name, "unfinished" if progress else "unstarted", progress, log))
    return states


def row_run_dir(recipe: Recipe, row: Row, seed: int, out: Path) -> RunDir:
    """The row's run folder as its job made it: one whose config.yaml records this row's configuration
    (`identity.config`; the job's device, processes and threads may differ from this machine's), finished
    first, else the newest; else the id of the reference context (where nothing was written yet)."""
    from bvbench.results import safe_child
    from bvbench.runner.identity import REFERENCE, config_identity, run_id

    want = config_hash(config_identity(recipe, row, seed))
    mine = []
    for rd in find_runs(out, recipe.name, row.name, finished=False):
        try:
            ident = rd.config().identity or {}
        except BvbenchError:
            continue
        if ident.get("config") == want and rd.path.name.startswith(f"{recipe.profile}-{row.data.name}-seed{seed}-"):
            mine.append(rd)
    done = [rd for rd in mine if rd.done]
    if done or mine:
        return (done or mine)[-1]
    return RunDir(safe_child(out, recipe.name, row.name, run_id(recipe, row, seed, REFERENCE)))


def last_submission(out: str | Path, recipe: str) -> dict[str, Any]:
    """What the last `run --launcher` of this recipe into `out` submitted (profile, sets, jobs), or {}."""
    path = jobs_dir(out, recipe) / "jobs.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _squeue(ids: list[str]) -> dict[str, str]:
    """Job id -> Slurm state for the jobs still known to the controller (no accounting database needed)."""
    if not ids or not _has("squeue"):
        return {}
    res = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True,
                         text=True, timeout=30)
    out = {}
    for line in res.stdout.splitlines():
        jid, _, state = line.partition(" ")
        out[jid] = state
    return out


def _progress(path: Path) -> tuple[str, float]:
    """('epoch E done, last write N s ago', N) for a run folder in training; ('', inf) when none."""
    hist = path / "history.csv"
    files = [p for p in path.iterdir() if p.is_file()] if path.exists() else []
    if not files or not (hist.exists() or (path / "checkpoint.pt").exists()):
        return "", float("inf")
    epochs = max(0, len(hist.read_text().splitlines()) - 1) if hist.exists() else 0
    age = time.time() - max(p.stat().st_mtime for p in files)
    return f"epoch {epochs} done, last write {age:.0f} s ago", age
