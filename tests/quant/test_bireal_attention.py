"""Bi-ViT's Bi-Real baseline attention (Sec. 3.1, Eq. 2): b_A = sign(A) with XNOR-Net's row scale, STE 1[|A| <= 1]."""

from __future__ import annotations

import timm
import torch

from bvbench import methods
from bvbench.quant import QAttention, SignScaledAttention
from bvbench.recipes.schema import MethodSpec


def test_forward_backward_match_the_formula() -> None:
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 7, 7) * 3
    a = scores.softmax(-1).requires_grad_(True)
    a2 = torch.cat([a.detach()[..., :6], torch.full_like(a.detach()[..., :1], 1.5)], -1).requires_grad_(True)
    g = torch.randn(2, 3, 7, 7)
    for x in (a, a2):
        out = SignScaledAttention()(x)
        xd = x.detach()
        alpha = xd.abs().sum(-1, keepdim=True) / xd.shape[-1]  # ||A_row||_1 / N
        expected = alpha * torch.where(xd >= 0, 1.0, -1.0)  # sign, sign(0) = +1
        torch.testing.assert_close(out, expected)
        out.backward(g)
        torch.testing.assert_close(x.grad, g * alpha * (xd.abs() <= 1).float())
    assert bool((a2.grad[..., 6] == 0).all())  # |A| > 1: the STE blocks the gradient


def _rows_all_zero(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    fractions: list[float] = []

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        fractions.append(float((out == 0).all(-1).float().mean()))

    handles = [m.attn_quant.register_forward_hook(hook) for m in model.modules() if isinstance(m, QAttention)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return fractions


def test_converted_random_models_have_no_all_zero_attention_row() -> None:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=4,
                            embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=56,
                             embed_dim=32, depths=(2, 2), num_heads=(2, 4))
    for model, size in ((vit, 32), (swin, 56)):
        methods.apply(model, MethodSpec(name="bireal"))
        model.eval()
        fractions = _rows_all_zero(model, torch.randn(4, 3, size, size))
        assert len(fractions) == sum(isinstance(m, QAttention) for m in model.modules()) > 0
        assert fractions == [0.0] * len(fractions)  # every block, every query row attends somewhere
