"""Multi-stage protocols: stage 2 starts from stage 1's weights (by value) with the stage-2 quantizers (GSB
two-stage training through the Trainer; BiViT cross-layer binarization), and a 2-row recipe (fp teacher +
binarized student with ranking-aware distillation) runs end to end through `bvbench run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bvbench import methods
from bvbench.data import build_dataset
from bvbench.models import build_model
from bvbench.quant import GSBAttention, GSBValue, QLinear
from bvbench.quant.base import Precision
from bvbench.quant.qattention import QAttention
from bvbench.recipes import MethodSpec, load_recipe
from bvbench.train.trainer import Trainer

RECIPE = {
    "name": "stages",
    "title": "two-stage and distillation test recipe",
    "paper": {"citation": "test", "file": "none.txt",
              "tables": [{"name": "Table 1", "columns": [{"key": "top1", "label": "Top-1 (%)", "unit": "percent"}]}]},
    "data": {"name": "fake", "img_size": 16, "num_workers": 0},
    "model": {"name": "vit_tiny_patch16_224", "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2,
              "num_heads": 2},
    "train": {"epochs": 1, "batch_size": 16, "lr": 2.0e-3, "warmup_epochs": 0, "amp": False,
              "max_steps_per_epoch": 2, "augment": {"hflip": False, "random_crop": False}},
    "eval": {"batch_size": 128},
    "rows": [
        {"name": "teacher", "label": "FP teacher", "method": "fp"},
        {"name": "gsb2", "label": "GSB two-stage", "teacher": "teacher", "distill": {"kind": "hard", "alpha": 0.5},
         "stages": [{"name": "weights", "method": {"name": "gsb", "stage": 1}},
                    {"name": "all", "lr": 1.0e-3, "method": {"name": "gsb"}}]},
        {"name": "bi-vit", "label": "Bi-ViT + RD", "teacher": "teacher", "init_from": "teacher",
         "method": {"name": "bi-vit", "lsf": True}, "distill": {"kind": "ranking", "alpha": 0.5, "lam": 10.0}},
    ],
}


def _write(tmp_path: Path, rows: list[str]) -> Path:
    raw = dict(RECIPE, rows=[r for r in RECIPE["rows"] if r["name"] in rows])  # type: ignore[index]
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_gsb_stage_two_starts_from_stage_one_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(str(_write(tmp_path, ["teacher", "gsb2"])))
    row = recipe.row("gsb2")
    ds, info = build_dataset(row.data, tmp_path, "train")
    torch.manual_seed(0)
    model = build_model(row.model, info.num_classes)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    seen: dict[str, object] = {}
    original = Trainer._enter_stage

    def spy(self: Trainer, i: int) -> None:
        if i == 1:  # end of stage 1: snapshot the weights and stage-1 quantizers, then enter stage 2
            seen["state"] = {k: v.clone() for k, v in self.model.state_dict().items()}
            seen["fc1_wq"] = self.model.blocks[0].mlp.fc1.weight_quant
            seen["patch_wq"] = self.model.patch_embed.proj.weight_quant
            blk0 = self.model.blocks[0]  # stage 1 (GSB Sec. IV-D): every linear's weights binary, activations real
            assert type(blk0.attn) is not QAttention  # attention products real
            for lin in (blk0.attn.qkv, blk0.attn.proj, blk0.mlp.fc1, blk0.mlp.fc2):
                assert lin.precision == Precision(1, 32)
        original(self, i)
        if i == 1:
            seen["after"] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(Trainer, "_enter_stage", spy)
    tr = Trainer(row, model, ds, None, info.num_classes, torch.device("cpu"), tmp_path, seed=0, log=lambda s: None)
    tr.fit()
    s1, s2 = seen["state"], seen["after"]
    assert isinstance(s1, dict) and isinstance(s2, dict)
    # stage 1 trained (weights moved), stage 2 starts from exactly those values (every stage-1 tensor kept)
    assert not torch.equal(s1["blocks.0.mlp.fc1.weight"], initial["blocks.0.mlp.fc1.weight"])
    for k, v in s1.items():
        assert torch.equal(s2[k], v), k
    # stage-1 quantizers carry over (same objects), stage-2 quantizers were added
    blk = tr.model.blocks[0]
    assert blk.mlp.fc1.weight_quant is seen["fc1_wq"] and tr.model.patch_embed.proj.weight_quant is seen["patch_wq"]
    assert isinstance(blk.attn, QAttention) and isinstance(blk.attn.attn_quant, GSBAttention)
    assert isinstance(blk.attn.v_quant, GSBValue)
    assert isinstance(blk.attn.qkv, QLinear) and blk.attn.qkv.precision == Precision(1, 1)
    assert blk.mlp.fc1.precision == Precision(1, 1) and blk.mlp.fc2.precision == Precision(1, 1)
    assert set(s2) > set(s1)  # new learnable quantizer parameters (Phi, scales, biases)
    assert [h["stage"] for h in tr.state.history] == ["weights", "all"]


def test_bivit_cross_layer_attention_then_mlp() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, embed_dim=32,
                              depth=2, num_heads=2, num_classes=10)
    methods.apply(model, MethodSpec(name="bivit", mlp_bits="32/32"))  # stage 1: attention binarized only
    assert type(model.blocks[0].mlp.fc1) is torch.nn.Linear
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model(torch.randn(4, 3, 32, 32))
    out.square().mean().backward()
    opt.step()
    qkv_wq = model.blocks[0].attn.qkv.weight_quant
    assert qkv_wq.scale is not None and bool(qkv_wq.initialized)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    methods.apply(model, MethodSpec(name="bivit", mlp_bits="1/32"))  # stage 2: MLP binary weights
    assert model.blocks[0].attn.qkv.weight_quant is qkv_wq  # learned channel scales carry over
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.blocks[0].mlp.fc1.precision == Precision(1, 32)
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_run_teacher_and_distilled_binary_student_end_to_end(cli, tmp_path: Path) -> None:
    path = _write(tmp_path, ["teacher", "bi-vit"])
    out = tmp_path / "res"
    code, stdout, stderr = cli("run", str(path), "--out", str(out), "--device", "cpu")
    assert code == 0, stderr + stdout
    for row in ("teacher", "bi-vit"):
        (rd,) = list((out / "stages" / row).iterdir())
        m = json.loads((rd / "metrics.json").read_text())
        assert 0.0 <= m["top1"] <= 1.0
        hist = (rd / "history.csv").read_text().strip().splitlines()
        assert len(hist) == 2 and "nan" not in hist[1]
    state = torch.load(rd / "checkpoint.pt", weights_only=True)
    state = state.get("model", state)
    assert any(k.endswith("attn.q_quant.alpha") for k in state)  # the student was trained with LSF quantizers
