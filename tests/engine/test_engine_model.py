"""The packed engine runs every method's ViT from its weight codes with the fake-quantized model's predictions.

Models are small timm ViTs (head dim 64) converted by each method, with non-zero biases and offsets and
power-of-two learnable scales, as a trained model has them: then no pre-activation sits exactly on a
binarization threshold, where the fake-quantized model's own fp32 rounding (not the engine) would decide."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from bvbench import methods
from bvbench.engine.convert import compile_model
from bvbench.errors import BvbenchError
from bvbench.evaluate.export import Dequantized, _weight_modules, split_weight
from bvbench.recipes.schema import MethodSpec

SPECS = [
    {"name": "bitnet"}, {"name": "bitnet158"}, {"name": "bireal"}, {"name": "bi-vit"}, {"name": "bibert"},
    {"name": "bivit"}, {"name": "bit"}, {"name": "q-vit-1bit"}, {"name": "gsb-baseline"}, {"name": "gsb"},
    {"name": "bivit", "mlp_bits": "1/32"}, {"name": "bivit", "attn_bits": "32/1"},
    {"name": "gsb", "gsb_att": False, "gsb_v": False},
]  # fmt: skip
INT8_ROWS = {"bitnet", "bitnet158"}  # 8-bit codes: an fp32 ulp upstream can move one code by one step


def packed_codes(model: torch.nn.Module) -> dict[str, tuple[str, torch.Tensor, torch.Tensor]]:
    """Weight codes as a .bvb file stores them; the model's weights become their dequantized values."""
    out = {}
    for name, m in _weight_modules(model):
        split = split_weight(m.weight_quant, m.weight)
        assert split is not None, name
        kind, codes, scale = split
        with torch.no_grad():
            m.weight.copy_(torch.where(codes, scale, -scale) if kind == "bits1" else codes.float() * scale)
        m.weight_quant = Dequantized(m.weight_quant.precision)
        out[name] = split
    return out


def build(spec: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                              patch_size=4, embed_dim=128, depth=2, num_heads=2)
    methods.apply(model, MethodSpec(**spec))
    model.eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "offset", "threshold", "omega")):
                torch.nn.init.normal_(p, std=0.1)
        model(x)  # learnable scales initialise on the first batch
        for name, p in model.named_parameters():
            if name.endswith("alpha") or name.endswith("beta"):
                p.copy_(2.0 ** p.clamp_min(1e-5).log2().round())
    return model, x


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_engine_matches_the_fake_quantized_model(spec: dict) -> None:
    model, x = build(spec)
    with torch.no_grad():
        codes = packed_codes(model)
        want = model(x)
        got = compile_model(copy.deepcopy(model), codes)(x)
    assert torch.equal(got.argmax(1), want.argmax(1))
    tol = 5e-2 if spec["name"] in INT8_ROWS else 1e-4
    assert (got - want).abs().max() <= tol * want.abs().max()


def test_binary_layers_run_on_the_kernels() -> None:
    from bvbench.engine.layers import PackedAttention, PackedLinear

    model, _ = build({"name": "bibert"})
    eng = compile_model(model, packed_codes(model))
    modes = {m.mode for m in eng.modules() if isinstance(m, PackedLinear)}
    assert modes == {"binary"}
    assert all(m.binary for m in eng.modules() if isinstance(m, PackedAttention))


def test_other_families_and_missing_codes_are_refused() -> None:
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=32,
                             patch_size=2, window_size=4, embed_dim=32, depths=(1, 1), num_heads=(1, 2))
    with pytest.raises(BvbenchError, match="engine does not support SwinTransformer yet"):
        compile_model(swin, {})
    model, _ = build({"name": "bibert"})
    with pytest.raises(BvbenchError, match=r"layer blocks\.0\.attn\.qkv .*stored as fp32"):
        compile_model(model, {})
