"""What makes two runs the same run: the resolved configuration of a row and the context that changes its
numbers (device, processes and global batch, CPU threads, the data copy) — its run id. A row with
`train.global_batch` fixes its global batch in the configuration: the world size is then left out.

Context entries at their reference value (one process on the CPU with 2 intra-op threads, trained on the
copies in `REFERENCE_DATA`: how every run committed under results/ was made) are left out of the hash, so an
id without them means exactly that context and the committed ids stay valid; any other value enters the hash.
`identity_record` is what config.yaml records of it (`identity:`), also written into the committed runs by
`python -m bvbench.migrate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bvbench.build import methods_version
from bvbench.recipes.schema import Recipe, Row, batch_split
from bvbench.results import config_hash
from bvbench.threads import resolve_threads

# Fields added to the schema after runs were recorded, with the value that reproduces the older behaviour: at that
# value they are left out of a run's identity, so adding them did not change the id of any existing experiment
# (any other value does). A changed default of an older field still changes every id that depends on it.
ADDED_FIELDS: dict[tuple[str, ...], Any] = {
    ("eval", "count_first_last"): "as_run",
    ("distill", "rank_norm"): "fro",
    ("train", "compile"): False,
    ("model", "kwargs"): {},
    ("train", "global_batch"): None,
}

AUGMENT_DRAWS = "per-sample"
IDENTITY_VERSION = 2
REFERENCE_THREADS = 2
"""The intra-op thread count of every committed CPU run (torch's default on the 2-core machine they ran on)."""
REFERENCE_DATA: dict[str, dict[str, Any]] = {
    # the JPEG copy of /work/shared/data/cifar10-jpeg.tar.gz (sha256 d877bdec...), unpacked as it is
    "cifar10": {"copy": "CIFAR-10 (JPEG copy)", "fingerprint": "5aa042d051ee4632", "files": 60000},
    "digits": {"copy": "Digits (scikit-learn 8x8)", "fingerprint": "2908b44170f04a82", "files": 1797},
    "fake": {"copy": "Fake (synthetic)", "fingerprint": "19f6c7402697039e", "files": 640},
}
"""The data copies the committed results were trained on (`data_fingerprint` of each)."""


@dataclass(frozen=True)
class RunContext:
    """Where a row trains: device type, processes, `--threads` (None: the machine default per row, see
    `bvbench.threads.resolve_threads`) and the data root whose copy is fingerprinted (None: the reference copies)."""

    device: str = "cpu"
    world: int = 1
    threads: int | None = REFERENCE_THREADS
    root: Path | None = None
    download: bool = False

    def threads_for(self, row: Row) -> int:
        """The intra-op thread count the row trains with (loader workers subtracted from the default)."""
        return resolve_threads(self.threads, row.data.num_workers)

    def data_copy(self, row: Row) -> dict[str, Any]:
        if self.root is None:
            return dict(REFERENCE_DATA.get(row.data.name, {"copy": row.data.name, "fingerprint": "reference"}))
        from bvbench.data.fingerprint import data_fingerprint

        return data_fingerprint(row.data.name, self.root, self.download)


REFERENCE = RunContext()


def config_identity(recipe: Recipe, row: Row, seed: int) -> dict[str, Any]:
    """The resolved configuration part of the identity (not labels or paper values), sources included."""
    ident = row.model_dump(mode="json", exclude={"label", "note", "paper", "status", "table", "name"})
    for (*parents, key), neutral in ADDED_FIELDS.items():
        node: Any = ident
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(key, neutral) == neutral:
            node.pop(key, None)
    train = ident.get("train", {})
    train.pop("checkpoint_every", None)  # when to save changes no result
    if train.get("global_batch") is not None:
        train.pop("batch_size", None)  # then only the most per process (memory), split by `batch_split`
    ident.update({"profile": recipe.profile, "seed": seed, "methods_version": methods_version(row)})
    if row.train.augment.random:
        # Random per-image augmentation is drawn from (seed, epoch, sample index) since exact mid-epoch resume
        # (issue 12.5); earlier runs drew it from each worker's stream and are other runs. Rows without random
        # augmentation compute exactly what they did and keep their ids.
        ident["augment_draws"] = AUGMENT_DRAWS
    for dep in ("teacher", "init_from"):
        ref = getattr(row, dep)
        if ref:
            ident[dep] = config_identity(recipe, recipe.row(ref), seed)
    return ident


def context_identity(row: Row, ctx: RunContext) -> dict[str, Any]:
    """The context entries that differ from the reference (see the module docstring)."""
    out: dict[str, Any] = {}
    if ctx.device != "cpu":
        out["device"] = ctx.device  # GPU kernels compute other numbers than the CPU's
    if ctx.world > 1 and row.train.global_batch is None:
        # per-process batch x processes: another global batch. With train.global_batch the configuration fixes
        # it (and accumulation makes up the processes), so 1, 4 or 8 processes train the same run.
        out["distributed"] = {"world_size": ctx.world, "global_batch": row.train.batch_size * ctx.world}
    if ctx.device == "cpu" and (n := ctx.threads_for(row)) != REFERENCE_THREADS:
        out["cpu_threads"] = n  # CPU reductions split by thread: not bit-identical across thread counts
    copy = ctx.data_copy(row)
    if copy["fingerprint"] != REFERENCE_DATA.get(row.data.name, {}).get("fingerprint", "reference"):
        out["data_copy"] = {"copy": copy["copy"], "fingerprint": copy["fingerprint"]}
    return out


def row_identity(recipe: Recipe, row: Row, seed: int, ctx: RunContext) -> dict[str, Any]:
    """What makes two runs the same run: configuration plus context, for the row and its sources."""
    ident = config_identity(recipe, row, seed)
    ident.update(context_identity(row, ctx))
    for dep in ("teacher", "init_from"):
        ref = getattr(row, dep)
        if ref:
            ident[dep] = row_identity(recipe, recipe.row(ref), seed, ctx)
    return ident


def run_id(recipe: Recipe, row: Row, seed: int, ctx: RunContext) -> str:
    return f"{recipe.profile}-{row.data.name}-seed{seed}-{config_hash(row_identity(recipe, row, seed, ctx))}"


def identity_record(recipe: Recipe, row: Row, seed: int, ctx: RunContext) -> dict[str, Any]:
    """config.yaml's `identity:`: the full context (reference values included) and the configuration hash."""
    copy = ctx.data_copy(row)
    per, accum = batch_split(row.train, ctx.world)
    split = {"batch_per_process": per, "accum_steps": accum} if row.train.global_batch is not None else {}
    return {"version": IDENTITY_VERSION, "config": config_hash(config_identity(recipe, row, seed)),
            "device": ctx.device, "world_size": ctx.world, "global_batch": per * accum * ctx.world, **split,
            "cpu_threads": ctx.threads_for(row) if ctx.device == "cpu" else None,
            "data_copy": {"copy": copy["copy"], "fingerprint": copy["fingerprint"]}}

