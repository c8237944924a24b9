"""`bvbench profile --latency`: fp32, simulated and packed engine per row, batch 1 and 64, 1 and all threads,
and the measured .bvb size next to the fp32 size."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import bvbench.evaluate.profile as profile
from bvbench.evaluate.export import export_run
from bvbench.evaluate.profile import profile_row
from bvbench.recipes import load_recipe
from bvbench.runner import RunOptions, run_recipe


def test_latency_columns_and_bvb_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a few timings per cell are enough for the columns; the default 10 + 30 per cell is what users get
    monkeypatch.setattr(profile, "measure_variants", functools.partial(profile.measure_variants, warmup=1, iters=3))
    rec = load_recipe("quickstart", "smoke")
    r = profile_row(rec, rec.row("bitnet"), latency=True, threads=2)
    combos = {(x["mode"], x["threads"], x["batch_size"]) for x in r["latency"]}
    assert combos == {(m, t, b) for m in ("fp32", "simulated", "packed") for t in (1, 2) for b in (1, 64)}
    assert all(0 < x["p10_ms"] <= x["median_ms"] <= x["p90_ms"] for x in r["latency"])
    assert r["latency_source"] == "packed" and r["kernel_path"] in ("portable", "avx2", "avx512")
    assert r["cpu"] and r["packed_note"] is None
    assert torch.get_num_threads() >= 1
    # the size column is the real file: within a few zip-record bytes of what `bvbench export` writes
    _, done = run_recipe("quickstart", RunOptions(profile="smoke", rows=["bitnet"], out=str(tmp_path / "res"),
                                                  device="cpu"))
    bitnet = next(d for d in done if d.path.parent.name == "bitnet")
    real = export_run(bitnet.path, tmp_path / "m.bvb")["file_bytes"]
    assert abs(r["bvb_bytes"] - real) < 0.01 * real
    assert r["bvb_vs_fp32"] < 0.2
