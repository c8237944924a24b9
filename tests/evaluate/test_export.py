"""Packed model export: bit packing, an exact round trip on small trained 1-bit and 1.58-bit models (identical
predictions, file size within 10 % of the theoretical size), and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from bvbench.build import build_row_model
from bvbench.data import build_dataset, data_root
from bvbench.errors import BvbenchError
from bvbench.evaluate.complexity import theoretical_size
from bvbench.evaluate.export import (
    Dequantized,
    evaluate_packed,
    export_run,
    load_packed,
    pack_bits,
    pack_ternary,
    split_weight,
    unpack_bits,
    unpack_ternary,
)
from bvbench.evaluate.metrics import predict
from bvbench.quant import LSQ, BitNetWeight, QLinear, SignWeight, TernaryWeight
from bvbench.recipes import Row
from bvbench.runner import RunOptions, run_recipe

RECIPE = """
name: packtest
title: packed export test recipe
seed: 0
paper: {citation: test, file: none.txt, tables: [{name: T, columns: [{key: top1, label: Top-1, unit: percent}]}]}
data: {name: fake, img_size: 16, num_workers: 0}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 128, depth: 2, num_heads: 2}
train: {epochs: 1, max_steps_per_epoch: 3, batch_size: 32, lr: 2.0e-3, warmup_epochs: 0, amp: false,
        augment: {hflip: false, random_crop: false}}
eval: {batch_size: 128}
rows:
  - {name: binary, label: BitNet 1-bit, method: bitnet}
  - {name: ternary, label: BitNet b1.58, method: bitnet158}
  - {name: bivit, label: BiViT learnable channel scales, method: {name: bivit, learnable_scale_mlp: true}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each row trained for 3 steps on fake data through the runner: row name -> run folder."""
    tmp = tmp_path_factory.mktemp("export")
    recipe = tmp / "packtest.yaml"
    recipe.write_text(RECIPE)
    _, done = run_recipe(str(recipe), RunOptions(out=str(tmp / "results"), device="cpu"))
    return {rd.path.parent.name: rd.path for rd in done}


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each run exported once: row name -> (packed file, sizes returned by export_run)."""
    tmp = tmp_path_factory.mktemp("packed")
    return {row: (tmp / f"{row}.bvpack", export_run(rd, tmp / f"{row}.bvpack")) for row, rd in runs.items()}


def _test_predictions(model: torch.nn.Module, run_dir: Path) -> torch.Tensor:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    row = Row.model_validate(cfg["row"])
    ds, _ = build_dataset(row.data, data_root(cfg["data_dir"]), "test")
    loader = DataLoader(ds, batch_size=128, shuffle=False)
    return predict(model, loader, torch.device("cpu"))[0]


@pytest.mark.parametrize("row", ["binary", "ternary", "bivit"])
def test_round_trip_reproduces_predictions_at_theoretical_size(
    runs: dict[str, Path], exported: dict[str, tuple[Path, dict]], row: str
) -> None:
    run_dir = runs[row]
    out, sizes = exported[row]
    original = build_row_model(
        Row.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text())["row"]),
        10,
        run_dir / "checkpoint.pt",
    )
    model, manifest = load_packed(out)

    # every block Linear is stored packed (4 per block, 2 blocks), none fell back to fp32
    assert sizes["packed_layers"] == 8 and sizes["dequantized_layers"] == []
    kinds = {e["kind"] for e in manifest["entries"] if e["name"].endswith("mlp.fc1.weight")}
    assert kinds == {"bits2" if row == "ternary" else "bits1"}
    assert manifest["row"]["name"] == row and manifest["num_classes"] == 10
    assert all(isinstance(m.weight_quant, Dequantized) for m in model.modules() if isinstance(m, QLinear))

    # identical logits, hence identical argmax, on the whole test split
    want, got = _test_predictions(original, run_dir), _test_predictions(model, run_dir)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert torch.equal(got, want)

    # the real file is within 10 % of the theoretical size (Bi-ViT convention) and far below the fp32 checkpoint
    theo = theoretical_size(original)["bytes"]
    assert sizes["theoretical_bytes"] == theo and sizes["file_bytes"] == out.stat().st_size
    assert abs(sizes["file_bytes"] - theo) <= 0.10 * theo, sizes
    assert sizes["file_bytes"] * 5 < sizes["checkpoint_bytes"] == (run_dir / "checkpoint.pt").stat().st_size
    # the loaded model still reports its bits to the complexity counter (BiViT's learnable weight scales are
    # folded into the stored scales, so they are no longer parameters)
    loaded = theoretical_size(model)["bytes"]
    assert loaded == theo if row != "bivit" else loaded < theo


def test_evaluate_packed_matches_the_run_metrics(
    runs: dict[str, Path], exported: dict[str, tuple[Path, dict]]
) -> None:
    import json

    out = exported["binary"][0]
    res = evaluate_packed(out, device="cpu")
    metrics = json.loads((runs["binary"] / "metrics.json").read_text())
    assert res["top1"] == metrics["top1"] and res["f1"] == metrics["f1"]
    assert res["file_bytes"] == out.stat().st_size
    assert res["theoretical_bytes"] == exported["binary"][1]["theoretical_bytes"]
    assert res["checkpoint_bytes"] == (runs["binary"] / "checkpoint.pt").stat().st_size


def test_weights_codes_cannot_reproduce_are_stored_dequantized_and_stay_exact(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bvbench.evaluate.export as export

    monkeypatch.setattr(export, "split_weight", lambda quantizer, weight: None)
    sizes = export_run(runs["binary"], tmp_path / "fp.pt")
    assert sizes["packed_layers"] == 0 and len(sizes["dequantized_layers"]) == 8
    assert sizes["file_bytes"] > 1.5 * sizes["theoretical_bytes"]  # exactness wins over size
    model, _ = load_packed(tmp_path / "fp.pt")
    cfg = yaml.safe_load((runs["binary"] / "config.yaml").read_text())
    original = build_row_model(Row.model_validate(cfg["row"]), 10, runs["binary"] / "checkpoint.pt")
    assert torch.equal(_test_predictions(model, runs["binary"]), _test_predictions(original, runs["binary"]))


def test_half_precision_export_is_smaller_and_loads(
    runs: dict[str, Path], exported: dict[str, tuple[Path, dict]], tmp_path: Path
) -> None:
    full, half = exported["ternary"][1], export_run(runs["ternary"], tmp_path / "b.pt", half=True)
    model, manifest = load_packed(tmp_path / "b.pt")
    saved = 2 * manifest["blobs"]["fp16"]["numel"]  # 2 bytes per full-precision element
    assert abs(full["file_bytes"] - half["file_bytes"] - saved) < 512 and saved > 0.15 * full["file_bytes"]
    assert manifest["half"] and {e["kind"] for e in manifest["entries"]} >= {"fp16", "bits2"}
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bad_files_raise_one_clear_error(
    runs: dict[str, Path], exported: dict[str, tuple[Path, dict]], tmp_path: Path
) -> None:
    out = exported["ternary"][0]
    data = out.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BvbenchError, match="corrupt or not a bvbench packed model file"):
        load_packed(truncated)

    with pytest.raises(BvbenchError, match="not a bvbench packed model file"):
        load_packed(runs["ternary"] / "checkpoint.pt")  # a plain checkpoint has no manifest
    with pytest.raises(BvbenchError, match="does not exist"):
        load_packed(tmp_path / "missing.pt")

    obj = torch.load(out, weights_only=True)
    obj["blobs"]["bits2"][0] ^= 0xFF  # a flipped byte in the packed weights
    flipped = tmp_path / "flipped.pt"
    torch.save(obj, flipped)
    with pytest.raises(BvbenchError, match="corrupt: the bits2 blob fails its checksum"):
        load_packed(flipped)

    obj = torch.load(out, weights_only=True)
    obj["manifest"]["entries"][0]["offset"] = 10**9
    torch.save(obj, flipped)
    with pytest.raises(BvbenchError, match="corrupt: .*outside its blob"):
        load_packed(flipped)

    with pytest.raises(BvbenchError, match="not a bvbench run folder"):
        export_run(tmp_path, tmp_path / "x.pt")


def test_bit_packing_round_trips() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 33):
        bits = torch.rand(n, generator=g) > 0.5
        packed = pack_bits(bits)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
        assert torch.equal(unpack_bits(packed, n), bits)
        codes = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8)
        packed = pack_ternary(codes)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 3) // 4
        assert torch.equal(unpack_ternary(packed, n), codes)
    assert pack_bits(torch.tensor([True, False, True] + [False] * 5)).tolist() == [0b10100000]
    assert pack_ternary(torch.tensor([-1, 0, 1, 1])).tolist() == [0b00011010]
    with pytest.raises(ValueError, match="invalid 2-bit"):
        unpack_ternary(torch.tensor([0xFF], dtype=torch.uint8), 4)


@pytest.mark.parametrize(
    "quantizer, kind, scale_shape",
    [
        (BitNetWeight(), "bits1", ()),
        (TernaryWeight(), "bits2", ()),
        (SignWeight(), "bits1", ()),
        (SignWeight(per_channel=True), "bits1", (6, 1)),
        (LSQ(bits=8, kind="weight", num_channels=6), "bits8", (6, 1)),
    ],
)
def test_split_weight_reproduces_the_quantizer_bit_for_bit(
    quantizer: torch.nn.Module, kind: str, scale_shape: tuple[int, ...]
) -> None:
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(1))
    split = split_weight(quantizer, w)
    assert split is not None
    got_kind, codes, scale = split
    assert got_kind == kind and tuple(scale.shape) == scale_shape and scale.dtype == torch.float32
    want = quantizer(w).detach()
    deq = torch.where(codes, scale, -scale) if kind == "bits1" else codes.float() * scale
    assert torch.equal(deq, want)
