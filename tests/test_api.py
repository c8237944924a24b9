"""The Python API: `bvbench.run`, `bvbench.methods.apply`, `bvbench.profile`; their docstring examples run here."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from torch import nn

import bvbench
from bvbench.errors import BvbenchError


def _tiny_vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2,
                             num_heads=2, num_classes=10)


@pytest.mark.parametrize("name", ["bvbench.api.run", "bvbench.api.profile", "bvbench.methods.apply"])
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write where a notebook would: its working directory
    module, _, attr = name.rpartition(".")
    obj = getattr(__import__(module, fromlist=[attr]), attr)
    tests = doctest.DocTestFinder().find(obj, name, globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def test_import_bvbench_is_cheap_and_loads_the_api_on_use() -> None:
    code = ("import sys, bvbench; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'bvbench.api' not in sys.modules; "
            "assert bvbench.run.__module__ == 'bvbench.api' and bvbench.methods.apply.__name__ == 'apply'; "
            "print(sorted(n for n in ('run', 'profile', 'methods') if n in dir(bvbench)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['methods', 'profile', 'run']"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bvbench.nope  # noqa: B018


def test_run_returns_the_finished_rows_as_typed_results(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    res = bvbench.run(tiny_recipe, profile="smoke", out=out, device="cpu", quiet=True)
    assert isinstance(res, bvbench.RunResult) and (res.recipe, res.profile, res.seed) == ("tiny", "smoke", 0)
    assert [r.row for r in res.rows] == ["fp"]  # the reference row is not run
    fp = res["fp"]
    assert isinstance(fp, bvbench.RowResult) and fp.path == out / "tiny" / "fp" / fp.run_id
    assert fp.metrics == json.loads((fp.path / "metrics.json").read_text()) and fp.top1 == fp.metrics["top1"]
    assert "Full precision" in res.table()
    with pytest.raises(KeyError, match="rows: fp"):
        res["other"]

    stamp = (fp.path / "metrics.json").stat().st_mtime_ns
    again = bvbench.run(str(tiny_recipe), profile="smoke", rows="fp", out=str(out), device="cpu", quiet=True)
    assert again.rows == res.rows and (fp.path / "metrics.json").stat().st_mtime_ns == stamp  # reused
    seed1 = bvbench.run(tiny_recipe, profile="smoke", sets=["train.max_steps_per_epoch=1"], out=out, seed=1,
                        device="cpu", quiet=True)
    assert seed1.seed == 1 and seed1["fp"].run_id != fp.run_id and seed1["fp"].metrics["seed"] == 1
    with pytest.raises(BvbenchError, match="has no row 'fq'. Did you mean: fp"):
        bvbench.run(tiny_recipe, profile="smoke", rows=["fq"], out=out, quiet=True)


def test_apply_says_clearly_what_it_cannot_convert() -> None:
    with pytest.raises(BvbenchError, match=r"unknown method 'gbs'\. Did you mean: gsb"):
        bvbench.methods.apply(_tiny_vit(), "gbs")
    with pytest.raises(BvbenchError, match="unknown option 'katt'"):
        bvbench.methods.apply(_tiny_vit(), "gsb", katt=3)
    with pytest.raises(BvbenchError, match="cannot convert Sequential: it has no transformer blocks"):
        bvbench.methods.apply(nn.Sequential(nn.Linear(4, 4)), "bitnet")
    with pytest.raises(BvbenchError, match="converts a torch.nn.Module, not str"):
        bvbench.methods.apply("vit_tiny_patch16_224", "gsb")  # type: ignore[arg-type]
    model = bvbench.methods.apply(_tiny_vit(), "bitnet158")
    assert type(model.blocks[1].attn.qkv).__name__ == "QLinear"


def test_profile_counts_what_bvbench_profile_counts() -> None:
    from bvbench.evaluate.profile import converted_model, profile_row
    from bvbench.recipes import load_recipe

    rec = load_recipe("quickstart", "smoke", ["data.name=fake"])
    row = rec.row("gsb")
    cli = profile_row(rec, row)
    c = bvbench.profile(converted_model(row, 10), convention=row.eval.complexity)
    assert (c.params, c.bops, c.flops, c.ops, c.size_mb) == (cli["params"], cli["bops"], cli["flops"],
                                                             cli["ops"], cli["size_mb"])
    assert c.bops > 0 and c.as_dict()["blocks"] == cli["blocks"]
    with pytest.raises(BvbenchError, match="pass input_shape"):
        bvbench.profile(nn.Sequential(nn.Linear(4, 2)))
    assert bvbench.profile(nn.Sequential(nn.Linear(4, 2)), (4,)).macs == 8
    with pytest.raises(BvbenchError, match="unknown convention 'gbs'"):
        bvbench.profile(_tiny_vit(), convention="gbs")
    with pytest.raises(BvbenchError, match="takes a torch.nn.Module"):
        bvbench.profile("vit")  # type: ignore[arg-type]
