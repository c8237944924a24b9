"""Run identity (issues 16.1, 18.1): device, processes and global batch, CPU threads and the data copy enter the
run id; at their reference values (how the committed runs were made) ids stay as they were; the committed
runs record their context (python -m bvbench.migrate)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bvbench.data.fingerprint import data_fingerprint
from bvbench.recipes import load_recipe
from bvbench.results import config_hash
from bvbench.runner.identity import (
    REFERENCE,
    REFERENCE_DATA,
    RunContext,
    config_identity,
    identity_record,
    row_identity,
    run_id,
)

REPO = Path(__file__).resolve().parents[1]
TINY_ID = "paper-fake-seed0-6c572a01"  # the tiny fp row's id before the context entered run ids


def test_the_reference_context_keeps_ids_and_every_other_context_changes_them(tiny_recipe: Path) -> None:
    rec = load_recipe(str(tiny_recipe))
    row = rec.row("fp")
    assert run_id(rec, row, 0, REFERENCE) == TINY_ID
    assert run_id(rec, row, 0, RunContext(root=Path("/nonexistent"))) == TINY_ID  # fake data: the reference copy
    ids = {run_id(rec, row, 0, ctx) for ctx in (REFERENCE, RunContext(threads=1), RunContext(threads=4),
                                                RunContext(world=2), RunContext(world=4), RunContext(device="cuda"))}
    assert len(ids) == 6
    two = row_identity(rec, row, 0, RunContext(world=2))
    assert two["distributed"] == {"world_size": 2, "global_batch": 2 * row.train.batch_size}
    # 2 ranks x 16 is not 1 x 32: the same global batch, still another run (sampler shards, all-reduce order)
    half = load_recipe(str(tiny_recipe), "paper", [f"train.batch_size={row.train.batch_size // 2}"])
    assert run_id(half, half.row("fp"), 0, RunContext(world=2)) != run_id(rec, row, 0, REFERENCE)
    # GPU runs: the CPU thread count changes nothing there and stays out of the id
    assert run_id(rec, row, 0, RunContext(device="cuda", threads=1)) == run_id(rec, row, 0, RunContext(device="cuda"))


def test_the_default_thread_count_subtracts_loader_workers(tiny_recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bvbench.threads as threads

    monkeypatch.delenv("BVBENCH_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    rec = load_recipe(str(tiny_recipe), "paper", ["data.num_workers=3"])
    ctx = RunContext(threads=None)
    assert ctx.threads_for(rec.row("fp")) == 5
    assert identity_record(rec, rec.row("fp"), 0, ctx)["cpu_threads"] == 5
    assert row_identity(rec, rec.row("fp"), 0, ctx)["cpu_threads"] == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks on this node share the cores
    assert ctx.threads_for(rec.row("fp")) == 1
    monkeypatch.setenv("BVBENCH_THREADS", "2")
    assert "cpu_threads" not in row_identity(rec, rec.row("fp"), 0, ctx)


def _jpeg_copy(root: Path, per_class: int = 1) -> Path:
    from bvbench.data.datasets import CIFAR10_CLASSES

    for split in ("train", "test"):
        for i, cls in enumerate(CIFAR10_CLASSES):
            d = root / "cifar10-jpeg" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.new("RGB", (32, 32), (i * 20, k * 30, 7)).save(d / f"{k:04d}.jpg")
    return root


def test_another_copy_of_the_data_is_another_run(tiny_recipe: Path, tmp_path: Path) -> None:
    a, b = _jpeg_copy(tmp_path / "a"), _jpeg_copy(tmp_path / "b")
    fa, fb = data_fingerprint("cifar10", a), data_fingerprint("cifar10", b)
    assert fa == fb and fa["copy"] == "CIFAR-10 (JPEG copy)" and fa["files"] == 20  # same files: same copy
    Image.new("RGB", (32, 32), (1, 2, 3)).save(b / "cifar10-jpeg" / "test" / "cat" / "0001.jpg")  # one file more
    from bvbench.data import fingerprint

    fingerprint._fingerprint.cache_clear()
    assert data_fingerprint("cifar10", b)["fingerprint"] != fa["fingerprint"]
    rec = load_recipe(str(tiny_recipe), "paper", ["data.name=cifar10"])
    row = rec.row("fp")
    ids = {run_id(rec, row, 0, RunContext(root=r)) for r in (a, b)} | {run_id(rec, row, 0, REFERENCE)}
    assert len(ids) == 3
    assert row_identity(rec, row, 0, RunContext(root=b))["data_copy"]["copy"] == "CIFAR-10 (JPEG copy)"


@pytest.mark.skipif(not (Path.home() / ".cache/bvbench/cifar10-jpeg/train").is_dir(), reason="no CIFAR-10 JPEG copy")
def test_the_reference_jpeg_copy_has_the_recorded_fingerprint() -> None:
    assert data_fingerprint("cifar10", Path.home() / ".cache/bvbench") == REFERENCE_DATA["cifar10"]


def test_reference_fingerprints_of_the_bundled_data() -> None:
    for name in ("digits", "fake"):
        assert data_fingerprint(name, Path("/nonexistent")) == REFERENCE_DATA[name]


def _committed() -> list[Path]:
    return sorted((REPO / "results").glob("*/*/*/config.yaml"))


def test_every_committed_run_records_its_context_and_the_current_ones_keep_their_ids() -> None:
    from bvbench.migrate import legacy_runs

    assert _committed() and legacy_runs(REPO / "results") == []
    current = []
    for cfg_path in _committed():
        raw = yaml.safe_load(cfg_path.read_text())
        ident = raw["identity"]
        env = json.loads((cfg_path.parent / "env.json").read_text())
        assert (ident["device"], ident["world_size"], ident["cpu_threads"]) == ("cpu", 1, env["threads"])
        assert ident["data_copy"]["fingerprint"] == REFERENCE_DATA[raw["row"]["data"]["name"]]["fingerprint"]
        if ident["config"] is None:  # made by an earlier code version: another id than today's code gives
            continue
        sets = [] if raw["recipe"] in ("quickstart", "bitvit-cifar10") else ["data.name=cifar10"]
        rec = load_recipe(raw["recipe"], raw["profile"], sets)
        row = rec.row(raw["row"]["name"])
        if config_hash(config_identity(rec, row, raw["seed"])) != ident["config"]:
            continue  # the recipe changed since (its row is another experiment now)
        ctx = RunContext(device=ident["device"], world=ident["world_size"], threads=ident["cpu_threads"])
        assert run_id(rec, row, raw["seed"], ctx) == cfg_path.parent.name  # recomputed from what it recorded
        current.append(raw["recipe"])
    assert "quickstart" in current  # at least quickstart fp (other rows changed with main's recipes since)


def test_the_migration_keeps_reference_runs_and_renames_a_run_made_with_other_threads(tmp_path: Path) -> None:
    from bvbench.migrate import main

    src = next(p.parent for p in _committed() if "quickstart/fp/" in str(p))
    out = tmp_path / "results"
    ref, one = out / "quickstart" / "fp" / src.name, out / "quickstart" / "fp-1thread" / src.name
    for dst, threads in ((ref, 2), (one, 1)):  # as written before the identity record existed
        shutil.copytree(src, dst)
        raw = yaml.safe_load((dst / "config.yaml").read_text())
        raw.pop("identity")
        (dst / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        env = json.loads((dst / "env.json").read_text())
        (dst / "env.json").write_text(json.dumps({**env, "threads": threads}))
    assert main(["--out", str(out), "--check"]) == 1 and not (ref.parent / "x").exists()
    assert "identity" not in yaml.safe_load((ref / "config.yaml").read_text())  # --check changed nothing
    assert main(["--out", str(out)]) == 0
    assert yaml.safe_load((ref / "config.yaml").read_text())["identity"]["cpu_threads"] == 2  # id kept
    rec = load_recipe("quickstart", "cpu")
    new = one.with_name(run_id(rec, rec.row("fp"), 0, RunContext(threads=1)))
    assert not one.exists() and (new / ".done").exists() and new.name != src.name
    assert json.loads((new / "metrics.json").read_text())["run_id"] == new.name
    assert yaml.safe_load((new / "config.yaml").read_text())["run_id"] == new.name
    assert json.loads((new / "migrated.json").read_text())["from"] == src.name
    assert main(["--out", str(out), "--check"]) == 0  # nothing left to migrate


def test_a_run_with_another_thread_count_is_another_run_folder(tiny_recipe: Path, tmp_path: Path) -> None:
    """Real processes: --threads 1 and the reference 2 threads train into two folders; env.json and config.yaml
    record the count."""
    out = tmp_path / "res"
    base = [sys.executable, "-m", "bvbench", "run", str(tiny_recipe), "--profile", "smoke", "--device", "cpu",
            "--out", str(out)]
    for n in ("1", "2"):
        res = subprocess.run([*base, "--threads", n], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted((out / "tiny" / "fp").iterdir())
    assert len(runs) == 2
    by_threads = {json.loads((r / "env.json").read_text())["threads"]: r for r in runs}
    assert set(by_threads) == {1, 2}
    assert by_threads[2].name == "smoke-fake-seed0-" + by_threads[2].name.rsplit("-", 1)[1]
    assert yaml.safe_load((by_threads[1] / "config.yaml").read_text())["identity"]["cpu_threads"] == 1
    assert json.loads((by_threads[1] / "env.json").read_text())["thread_settings"]["loader_workers"] == 0
