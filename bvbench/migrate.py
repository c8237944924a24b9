"""Identity migration (version 2): write into each run folder's config.yaml the context its run id stands for.

    python -m bvbench.migrate [--out results] [--check]

The rule. A run without `identity:` in its config.yaml was made before the device, processes, CPU threads and
data copy entered run ids (`bvbench.runner.identity`). Its context is read from what it recorded: env.json's
device and thread count, metrics.json's `world_size` and data copy (`data.display`, the copies of
`REFERENCE_DATA`). Where that context is the reference one (what every committed run is: CPU, one process, 2
threads, the CIFAR-10 JPEG copy or scikit-learn's digits) its id does not change and only the record is added.
Where it is not, and the run's id is that of today's code, the folder is renamed to the id with its context
(config.yaml and metrics.json follow; `migrated.json` names the old id). Anything else is reported and left as
it is. `--check`: change nothing, exit 1 when a run would be changed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from bvbench.errors import BvbenchError
from bvbench.recipes import load_recipe
from bvbench.results import RunDir, atomic_write_json, atomic_write_text, config_hash, now
from bvbench.runner.identity import IDENTITY_VERSION, REFERENCE_DATA, RunContext, config_identity, run_id

RunList = list[tuple[RunDir, str]]


def recorded_context(rd: RunDir) -> tuple[dict[str, Any], str | None]:
    """(the identity record of a legacy run from its own files, why it cannot be migrated or None)."""
    env_path = rd.path / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    m = rd.metrics()
    row = rd.row()
    ref = REFERENCE_DATA.get(row.data.name, {})
    device = str(env.get("device", m.device or "cpu")).split(":")[0]
    world = int(m.world_size or env.get("world_size") or 1)
    record = {"version": IDENTITY_VERSION, "device": device, "world_size": world,
              "global_batch": row.train.batch_size * world,
              "cpu_threads": env.get("threads") if device == "cpu" else None,
              "data_copy": {"copy": m.data.display, "fingerprint": ref.get("fingerprint")
                            if ref and m.data.display == ref.get("copy") else None}}
    why = None
    if record["data_copy"]["fingerprint"] is None:
        why = f"data copy {m.data.display!r} is not one of the reference copies"
    elif device == "cpu" and not isinstance(record["cpu_threads"], int):
        why = "env.json records no thread count"
    return record, why


def _recipe_for(rd: RunDir) -> Any:
    """The recipe of a run with its recorded row (None when today's recipe no longer has that row)."""
    cfg = rd.config()
    rec = load_recipe(str(cfg.recipe), str(cfg.profile))
    if rec.data.name != cfg.row.data.name:
        rec = load_recipe(str(cfg.recipe), str(cfg.profile), [f"data.name={cfg.row.data.name}"])
    names = {r.name for r in rec.rows}
    if cfg.row.name not in names or rec.row(cfg.row.name).model_dump() != cfg.row.model_dump():
        return None
    return rec


def migrate_run(rd: RunDir, write: bool) -> str:
    """Migrate one run folder; returns what was (or would be) done, in a few words."""
    record, why = recorded_context(rd)
    cfg = rd.config()
    rec = _recipe_for(rd)
    row = rec.row(cfg.row.name) if rec is not None else None
    current = row is not None and run_id(rec, row, cfg.seed, RunContext()) == rd.path.name
    record["config"] = config_hash(config_identity(rec, row, cfg.seed)) if current else None
    reference = (why is None and record["device"] == "cpu" and record["world_size"] == 1
                 and record["cpu_threads"] == 2)
    new_name = rd.path.name
    if why is None and not reference and current:
        ctx = RunContext(device=record["device"], world=record["world_size"], threads=record["cpu_threads"])
        new_name = run_id(rec, row, cfg.seed, ctx)  # the data copy is a reference one (checked above)
    elif why is None and not reference:
        why = "its id is not that of today's code (an earlier code version), so no new id can be computed"
    if why is not None and not reference:
        return f"left as it is: {why}"
    if write:
        _write(rd, record, new_name)
    return "recorded (id kept)" if new_name == rd.path.name else f"renamed to {new_name}"


def _write(rd: RunDir, record: dict[str, Any], new_name: str) -> None:
    raw = yaml.safe_load((rd.path / "config.yaml").read_text())
    raw["identity"] = {**record, "migrated": "from env.json and metrics.json (python -m bvbench.migrate)"}
    if new_name != rd.path.name:
        raw["run_id"] = new_name
        m = json.loads((rd.path / "metrics.json").read_text())
        m["run_id"] = new_name
        atomic_write_json(rd.path / "metrics.json", m)
        atomic_write_json(rd.path / "migrated.json", {"from": rd.path.name, "time": now()})
    atomic_write_text(rd.path / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    if new_name != rd.path.name:
        os.replace(rd.path, rd.path.with_name(new_name))


def legacy_runs(out: Path) -> list[RunDir]:
    """Finished run folders under `out` whose config.yaml has no `identity:` record."""
    runs = []
    for cfg in sorted(out.glob("*/*/*/config.yaml")):
        rd = RunDir(cfg.parent)
        if rd.done and not rd.path.name.startswith(".") and "identity" not in (yaml.safe_load(cfg.read_text()) or {}):
            runs.append(rd)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bvbench.migrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results", help="results folder (default: results)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a run would change")
    args = ap.parse_args(argv)
    try:
        runs = legacy_runs(Path(args.out))
        counts: dict[str, int] = {}
        for rd in runs:
            what = migrate_run(rd, write=not args.check)
            counts[what.split(":")[0]] = counts.get(what.split(":")[0], 0) + 1
            if what != "recorded (id kept)":
                print(f"{rd.path}: {what}")
        print(f"{len(runs)} run(s) without an identity record: "
              + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none"))
        return 1 if args.check and any(not k.startswith("left") for k in counts) else 0
    except BvbenchError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
