"""`bvbench eval m.bvb --engine packed`: the packed engine built straight from an exported file predicts what
the simulated (fake-quantized) model predicts, on the quickstart smoke runs (fp, BitNet W1A8, b1.58, GSB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bvbench.data import build_dataset, data_root
from bvbench.data.loader import eval_loader
from bvbench.engine import PATHS
from bvbench.engine.layers import PackedAttention, PackedLinear
from bvbench.evaluate.export import evaluate_packed, export_run, load_engine, load_packed
from bvbench.evaluate.metrics import predict
from bvbench.recipes import Row
from bvbench.runner import RunOptions, evaluate_run, run_recipe

ROWS = ["fp", "bitnet", "bitnet158", "gsb"]
MODES = {"fp": set(), "bitnet": {"int8"}, "bitnet158": {"int8"}, "gsb": {"binary", "mask", "int8"}}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """row -> (run folder, exported .bvb) of `bvbench run quickstart --profile smoke`."""
    tmp = tmp_path_factory.mktemp("bvb")
    _, done = run_recipe("quickstart", RunOptions(profile="smoke", out=str(tmp / "results"), device="cpu"))
    out = {}
    for rd in done:
        row = rd.path.parent.name
        out[row] = (rd.path, tmp / f"{row}.bvb")
        export_run(rd.path, out[row][1])
    return out


def _logits(model: torch.nn.Module, manifest: dict) -> torch.Tensor:
    row = Row.model_validate(manifest["row"])
    ds, _ = build_dataset(row.data, data_root(manifest["data_dir"]), "test")
    return predict(model, eval_loader(ds, 256, 0), torch.device("cpu"))[0]


@pytest.mark.parametrize("row", ROWS)
def test_packed_engine_predicts_what_the_simulated_model_predicts(files: dict, row: str) -> None:
    _, bvb = files[row]
    engine, manifest = load_engine(bvb)
    modes = {m.mode for m in engine.modules() if isinstance(m, PackedLinear)} - {"float"}
    assert modes == MODES[row]  # the quantized layers really run on the kernels
    if row == "gsb":
        assert all(m.binary for m in engine.modules() if isinstance(m, PackedAttention))
    want, got = _logits(load_packed(bvb)[0], manifest), _logits(engine, manifest)
    assert torch.equal(got.argmax(1), want.argmax(1))
    tol = 1e-2 if "int8" in MODES[row] else 1e-4
    assert (got - want).abs().max() <= tol * want.abs().max()
    sim, packed = evaluate_packed(bvb, device="cpu"), evaluate_packed(bvb, engine="packed")
    assert sim["engine"] == "simulated" and packed["engine"] == "packed" and packed["kernel_path"] in PATHS
    for key in ("top1", "top5", "precision", "recall", "f1"):
        assert packed[key] == sim[key], key


def test_cli_eval_engine_packed_gives_the_runs_metrics(files: dict, cli) -> None:
    run_dir, bvb = files["gsb"]
    code, out, err = cli("eval", str(bvb), "--engine", "packed")
    assert code == 0, err
    res = json.loads(out)
    run = evaluate_run(str(run_dir), device="cpu")
    assert res["engine"] == "packed" and res["file_bytes"] == bvb.stat().st_size
    assert (res["top1"], res["f1"]) == (run["top1"], run["f1"])
    code, out, err = cli("eval", str(run_dir), "--engine", "packed")
    assert code == 2 and out == "" and "bvbench export" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("eval", str(bvb), "--engine", "packed", "--device", "cuda")
    assert code == 2 and "CPU only" in err
