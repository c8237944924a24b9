"""Every method: the intended modules are replaced (and no others), weights are unchanged, forward and backward
run, `precision` / `attn_precision` are right; re-applying is a no-op; options are validated."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
from torch import nn

from bvbench import methods
from bvbench.errors import BvbenchError
from bvbench.quant import AttentionPrecision, QConv2d, QLinear
from bvbench.quant.base import Precision
from bvbench.quant.qattention import QAttention, attention_maps, capturable
from bvbench.recipes import MethodSpec

P = Precision
FP = None  # part left as a plain nn.Linear
BIN = P(1, 1)
ATT_BIN = AttentionPrecision(qk=BIN, av=BIN)


def deit(distilled: bool = True) -> nn.Module:
    name = "deit_tiny_distilled_patch16_224" if distilled else "deit_tiny_patch16_224"
    return timm.create_model(name, pretrained=False, img_size=32, patch_size=4, embed_dim=32, depth=2,
                             num_heads=2, num_classes=10)


def swin() -> nn.Module:
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, patch_size=2,
                             window_size=4, embed_dim=32, depths=(1, 1), num_heads=(2, 2), num_classes=10)


def nest() -> nn.Module:
    from timm.models.nest import Nest

    return Nest(img_size=32, patch_size=4, num_levels=3, embed_dims=(32, 32, 32), num_heads=(2, 2, 2),
                depths=(1, 1, 1), num_classes=10)


# method, options, precision of (qkv, proj, fc1, fc2), attention precision (None: attention untouched),
# 8-bit patch embedding and heads
CASES: list[tuple[str, dict[str, Any], tuple[Any, ...], AttentionPrecision | None, bool]] = [
    ("bitnet", {}, (P(1, 8),) * 4, None, False),
    ("bitnet158", {}, (P(2, 8),) * 4, None, False),
    ("bireal", {}, (BIN,) * 4, ATT_BIN, False),
    ("bi-vit", {"lsf": True}, (BIN,) * 4, ATT_BIN, False),
    ("bi-vit", {"lsf": False}, (BIN,) * 4, ATT_BIN, False),
    ("bibert", {}, (BIN,) * 4, ATT_BIN, False),
    ("bibert", {"mlp_bits": "1/32"}, (BIN, BIN, P(1, 32), P(1, 32)), ATT_BIN, False),
    ("bit", {}, (BIN,) * 4, ATT_BIN, False),
    ("bivit", {"mlp_bits": "1/1"}, (BIN,) * 4, ATT_BIN, False),
    ("bivit", {"mlp_bits": "1/32", "learnable_scale_mlp": True}, (BIN, BIN, P(1, 32), P(1, 32)), ATT_BIN, False),
    ("bivit", {"mlp_bits": "32/32"}, (BIN, BIN, FP, FP), ATT_BIN, False),
    ("bivit", {"attn_bits": "32/32", "mlp_bits": "1/1"}, (FP, FP, BIN, BIN), None, False),
    ("q-vit-1bit", {}, (BIN,) * 4, ATT_BIN, False),
    ("gsb-baseline", {}, (BIN,) * 4, ATT_BIN, True),
    ("gsb", {}, (BIN,) * 4, AttentionPrecision(BIN, BIN, 2, 2), True),
    ("gsb", {"k_att": 1, "k_v": 0}, (BIN,) * 4, AttentionPrecision(BIN, BIN, 1, 0), True),
    ("gsb", {"gsb_att": False, "gsb_v": False}, (BIN,) * 4, ATT_BIN, True),
    ("gsb", {"act_type_a": "sign"}, (BIN,) * 4, AttentionPrecision(BIN, BIN, 2, 2), True),
    ("gsb", {"stage": 1}, (P(1, 32),) * 4, None, True),  # GSB Sec. IV-D: every linear's weights
    ("gsb", {"stage": 1, "variant": "code"}, (FP, FP, P(1, 32), P(1, 32)), None, True),  # public code: MLP only
    ("gsb-baseline", {"stage": 1}, (P(1, 32),) * 4, None, True),
    ("gsb-baseline", {"stage": 1, "variant": "code"}, (FP, FP, P(1, 32), P(1, 32)), None, True),
]


def _types(model: nn.Module) -> dict[str, type]:
    return {n: type(m) for n, m in model.named_modules()}


def _run(model: nn.Module) -> None:
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    logits = torch.cat(out, 1) if isinstance(out, tuple) else out
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("name", "opts", "linears", "attn", "eight_bit"), CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES])
def test_method_replaces_exactly_its_parts(name: str, opts: dict[str, Any], linears: tuple[Any, ...],
                                           attn: AttentionPrecision | None, eight_bit: bool) -> None:
    torch.manual_seed(0)
    model = deit()
    before_types = _types(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = MethodSpec(name=name, **opts)
    assert methods.apply(model, spec) is model

    expected: set[str] = set()
    for i in range(2):
        blk = model.blocks[i]
        for part, prec, owner in zip(("qkv", "proj", "fc1", "fc2"), linears, ("attn", "attn", "mlp", "mlp"),
                                     strict=True):
            mod = getattr(getattr(blk, owner), part)
            if prec is FP:
                assert type(mod) is nn.Linear
            else:
                assert isinstance(mod, QLinear) and mod.precision == prec, (part, mod.precision)
                expected.add(f"blocks.{i}.{owner}.{part}")
        if attn is None:
            assert type(blk.attn) is not QAttention
        else:
            assert isinstance(blk.attn, QAttention) and blk.attn.attn_precision == attn
            expected.add(f"blocks.{i}.attn")
    if eight_bit:
        assert isinstance(model.patch_embed.proj, QConv2d) and model.patch_embed.proj.precision == P(8, 32)
        for h in (model.head, model.head_dist):
            assert isinstance(h, QLinear) and h.precision == P(8, 8)
        expected |= {"patch_embed.proj", "head", "head_dist"}
    # no other module is replaced (new quantizer sub-modules appear only inside replaced ones)
    after_types = _types(model)
    changed = {n for n, t in before_types.items() if after_types.get(n) is not t}
    assert changed == expected
    new = set(after_types) - set(before_types)
    assert all(any(n.startswith(e + ".") for e in expected) for n in new)
    # weights are unchanged and keep their names
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    _run(model)

    # applying the same spec again changes nothing: same module objects, same parameters
    mods = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    methods.apply(model, spec)
    assert all(dict(model.named_modules())[n] is m for n, m in mods.items())
    assert set(dict(model.named_modules())) == set(mods)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_fp_leaves_the_model_alone() -> None:
    model = deit()
    types = _types(model)
    methods.apply(model, MethodSpec(name="fp"))
    assert _types(model) == types


@pytest.mark.parametrize("build", [swin, nest], ids=["swin", "nest"])
@pytest.mark.parametrize(("name", "opts"), [("bivit", {"mlp_bits": "1/32"}), ("bibert", {}), ("bi-vit", {}),
                                            ("gsb", {}), ("bitnet158", {})])
def test_swin_and_nest_convert_and_train(build: Any, name: str, opts: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    methods.apply(model, MethodSpec(name=name, **opts))
    n_attn = sum(isinstance(m, QAttention) for m in model.modules())
    n_blocks = sum(1 for m in model.modules() if hasattr(m, "attn") and hasattr(m, "mlp"))
    assert n_attn == (0 if name == "bitnet158" else n_blocks) and n_blocks >= 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    _run(model)


@pytest.mark.parametrize("build", [deit, swin, nest], ids=["deit", "swin", "nest"])
def test_qattention_without_quantizers_matches_timm(build: Any) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    capturable(model)
    assert any(isinstance(m, QAttention) for m in model.modules())
    with attention_maps(model) as maps:
        out = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert maps and all(torch.allclose(a.sum(-1), torch.ones(())) for a in maps)


def test_unknown_option_names_method_option_and_suggestion() -> None:
    with pytest.raises(BvbenchError, match=r"method 'gsb': unknown option 'k_attn'.*Did you mean: k_att"):
        methods.apply(deit(), MethodSpec(name="gsb", k_attn=2))
    with pytest.raises(BvbenchError, match=r"method 'bivit': option 'mlp_bits'"):
        methods.apply(deit(), MethodSpec(name="bivit", mlp_bits="2/2"))
    with pytest.raises(BvbenchError, match=r"unknown method 'gbs'.*gsb"):
        methods.apply(deit(), MethodSpec(name="gbs"))
    with pytest.raises(BvbenchError, match="unknown option"):
        methods.apply(deit(), MethodSpec(name="fp", lsf=True))


def test_cnn_rows_support_only_fp() -> None:
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    methods.apply(net, MethodSpec(name="fp"))
    with pytest.raises(BvbenchError, match="no transformer blocks.*only method fp"):
        methods.apply(net, MethodSpec(name="bireal"))


def test_registry_meta_lists_paper_bits_and_options() -> None:
    for name in ("fp", "bitnet", "bitnet158", "bireal", "bibert", "bit", "q-vit-1bit", "bi-vit", "bivit",
                 "gsb-baseline", "gsb"):
        meta = methods.METHODS.meta(name)
        assert meta["paper"] and meta["bits"] and "options" in meta
    assert {"gsb_att", "gsb_v", "k_att", "k_v", "act_type_a", "stage"} <= set(methods.METHODS.meta("gsb")["options"])


def test_bitnet_keeps_pretrained_weight_and_bias_in_the_product() -> None:
    model = deit(distilled=False).eval()
    methods.apply(model, MethodSpec(name="bitnet"))
    fc = model.blocks[0].mlp.fc2
    x = torch.randn(3, 5, fc.in_features)
    w = fc.weight.detach()
    wq = torch.where(w - w.mean() > 0, 1.0, -1.0) * w.abs().mean()  # beta Sign(W - alpha), Sign(0) = -1
    xn = nn.functional.layer_norm(x, x.shape[-1:])
    gamma = xn.abs().max()
    xq = (xn * 128 / gamma).round().clamp(-128, 127) * gamma / 128
    torch.testing.assert_close(fc(x), xq @ wq.T + fc.bias.detach())


def test_bivit_32_1_binarizes_inputs_but_keeps_real_weights() -> None:
    """BiViT Table 4's traditional two-stage scheme, stage 1: binary activations, real-valued weights."""
    model = deit()
    w = model.blocks[0].attn.qkv.weight.detach().clone()
    methods.apply(model, MethodSpec(name="bivit", attn_bits="32/1", mlp_bits="32/1"))
    for lin in (model.blocks[0].attn.qkv, model.blocks[0].mlp.fc1):
        assert isinstance(lin, QLinear) and lin.weight_quant is None and lin.act_quant is not None
        assert lin.precision == Precision(32, 1)
    assert torch.equal(model.blocks[0].attn.qkv.weight, w)
    _run(model)
    with pytest.raises(BvbenchError, match="bibert and bivit only"):
        methods.apply(deit(), MethodSpec(name="bit", attn_bits="32/1"))
