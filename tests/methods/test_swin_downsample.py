"""Swin's patch merging (`layers.*.downsample.reduction`) is body, not first or last layer (Bi-ViT Sec. 5.1): every
method that binarizes the blocks binarizes it; `count_first_last: like_body` restates only the patch embedding and
head, never a real layer the run has."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from bvbench import methods
from bvbench.evaluate.complexity import count_complexity
from bvbench.quant import QLinear
from bvbench.quant.base import FULL, Precision
from bvbench.recipes import MethodSpec
from tests.methods.test_methods_convert import CASES, FP, _run, swin

# BiViT's methods (bibert, bivit, bit) give the reduction the MLP's bits (a channel-mixing 1x1 linear, BiViT
# Fig. 5); the others have one precision for every block linear reading a LayerNorm output (qkv's).
LIKE_MLP = ("bibert", "bivit", "bit")


def _layers(model: nn.Module) -> dict[str, Precision | None]:
    """Every Linear/Conv of the model: its precision, None for a plain (unconverted) layer."""
    return {n: (m.precision if hasattr(m, "precision") else None) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


def _expected(name: str, linears: tuple[Any, ...], eight_bit: bool) -> dict[str, Precision | None]:
    body = dict(zip(("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"), linears, strict=True))
    out: dict[str, Precision | None] = {"patch_embed.proj": Precision(8, 32) if eight_bit else FP}
    for stage in (0, 1):
        if stage:
            out["layers.1.downsample.reduction"] = body["mlp.fc1" if name in LIKE_MLP else "attn.qkv"]
        out |= {f"layers.{stage}.blocks.0.{k}": v for k, v in body.items()}
    out["head.fc"] = Precision(8, 8) if eight_bit else FP
    return out


@pytest.mark.parametrize(("name", "opts", "linears", "attn", "eight_bit"), CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES])
def test_layer_list_of_a_converted_swin(name: str, opts: dict[str, Any], linears: tuple[Any, ...],
                                        attn: Any, eight_bit: bool) -> None:
    """The layer list per method: the reduction at the blocks' bits, only the first and last layers real."""
    torch.manual_seed(0)
    model = swin()
    methods.apply(model, MethodSpec(name=name, **opts))
    assert _layers(model) == _expected(name, linears, eight_bit)
    _run(model)


def test_reduction_follows_the_stages() -> None:
    """GSB TSTS: stage 1 binarizes the reduction's weights, stage 2 adds its activation quantizer (same weights)."""
    model = swin()
    red = model.layers[1].downsample.reduction
    w = red.weight.detach().clone()
    methods.apply(model, MethodSpec(name="gsb", stage=1))
    assert model.layers[1].downsample.reduction.precision == Precision(1, 32)
    methods.apply(model, MethodSpec(name="gsb"))
    red = model.layers[1].downsample.reduction
    assert isinstance(red, QLinear) and red.precision == Precision(1, 1) and torch.equal(red.weight, w)


def test_binary_reduction_is_sign_of_weights_and_inputs() -> None:
    """Bi-Real baseline (Bi-ViT Eq. 1 / Bi-Real Net): y = (sign(x)) (alpha_o sign(W))^T with alpha_o = mean|W_o|."""
    torch.manual_seed(0)
    model = swin()
    methods.apply(model, MethodSpec(name="bireal"))
    red = model.layers[1].downsample.reduction
    x = torch.randn(2, 4, 4, red.in_features)
    alpha = red.weight.abs().mean(1, keepdim=True)
    want = torch.where(x > 0, 1.0, -1.0) @ (alpha * torch.where(red.weight > 0, 1.0, -1.0)).t()
    torch.testing.assert_close(red(x), want)


def test_like_body_restates_first_and_last_only() -> None:
    """`like_body` counts the patch embedding and head at the body's bits; a reduction left real stays real."""
    shape = (3, 32, 32)
    model = swin()
    methods.apply(model, MethodSpec(name="bireal"))
    red = model.layers[1].downsample.reduction
    run, like = count_complexity(model, shape), count_complexity(model, shape, first_last="like_body")
    first_last_macs = 16 * 16 * 3 * 2 * 2 * 32 + 64 * 10  # patch embedding (16x16 positions) + head
    assert like.bops - run.bops == pytest.approx(first_last_macs)
    red.weight_quant, red.act_quant, red.precision = None, None, FULL  # as a method keeping it real would
    run2, like2 = count_complexity(model, shape), count_complexity(model, shape, first_last="like_body")
    red_macs = 8 * 8 * red.in_features * red.out_features
    assert run.bops - run2.bops == pytest.approx(red_macs) and like.bops - like2.bops == pytest.approx(red_macs)
