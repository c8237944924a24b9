"""Weight quantizers: hand-computed forwards and gradients against the papers' STE formulas."""

import pytest
import torch

from bvbench.quant import BiRealWeight, BitNetWeight, Precision, SignWeight, TernaryWeight, build_quantizer

W = torch.tensor([[1.0, -3.0, 2.0], [4.0, 0.0, -1.0]])


def _grad(q: torch.nn.Module, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = w.clone().requires_grad_(True)
    q(w).backward(g)
    return w.grad


def test_sign_per_tensor_forward_by_hand() -> None:
    # mean W = 0.5 -> W - mu = [[.5,-3.5,1.5],[3.5,-.5,-1.5]]; mean|W| = 11/6 (GSB Eq. 2)
    out = SignWeight()(W)
    expected = torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, -1.0]]) * (11 / 6)
    torch.testing.assert_close(out, expected)


def test_sign_per_channel_forward_by_hand() -> None:
    # row 0: mu 0, sign [1,-1,1], scale 2; row 1: mu 1, sign [1,-1,-1], scale 5/3
    out = SignWeight(per_channel=True)(W)
    expected = torch.tensor([[2.0, -2.0, 2.0], [5 / 3, -5 / 3, -5 / 3]])
    torch.testing.assert_close(out, expected)


def test_sign_identity_ste_gradient_gsb_eq6() -> None:
    g = torch.randn(2, 3)
    torch.testing.assert_close(_grad(SignWeight(), W, g), g * (11 / 6))  # dW = g * alpha * 1


def test_sign_clipped_ste_gradient() -> None:
    w = torch.tensor([[0.3, -0.2, 1.7], [-1.4, 0.05, 0.1]])
    g = torch.randn(2, 3)
    mu, alpha = w.mean(), w.abs().mean()
    expected = g * alpha * ((w - mu).abs() <= 1).float()
    torch.testing.assert_close(_grad(SignWeight(ste="clipped"), w, g), expected)


def test_learnable_channel_scale_init_and_gradient() -> None:
    q = SignWeight(learnable_scale=True, out_features=2)
    assert q.scale is not None and not bool(q.initialized)
    w = W.clone().requires_grad_(True)
    out = q(w)
    torch.testing.assert_close(q.scale.detach().squeeze(1), W.abs().mean(dim=1))  # BiViT: rowmean|W|
    g = torch.randn(2, 3)
    out.backward(g)
    signs = torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, -1.0]])
    torch.testing.assert_close(q.scale.grad.squeeze(1), (g * signs).sum(dim=1))
    torch.testing.assert_close(w.grad, g * q.scale.detach())
    assert q.precision == Precision(1, 32)


def test_learnable_scale_requires_out_features() -> None:
    with pytest.raises(ValueError):
        SignWeight(learnable_scale=True)


def test_bireal_forward_and_clamp_gradient() -> None:
    w = torch.tensor([[0.5, -2.0], [1.5, 0.25]])
    out = BiRealWeight()(w)
    torch.testing.assert_close(out, torch.tensor([[1.25, -1.25], [0.875, 0.875]]))
    g = torch.randn(2, 2)
    scale = torch.tensor([[1.25], [0.875]])
    torch.testing.assert_close(_grad(BiRealWeight(), w, g), g * scale * (w.abs() <= 1).float())


def test_bitnet_forward_sign_of_zero_is_minus_one() -> None:
    # alpha = mean W = 1 -> W - alpha = [[0, 2], [1, -3]] -> Sign = [[-1, 1], [1, -1]]; beta = 8/4 = 2
    w = torch.tensor([[1.0, 3.0], [2.0, -2.0]])
    torch.testing.assert_close(BitNetWeight()(w), torch.tensor([[-2.0, 2.0], [2.0, -2.0]]))
    g = torch.randn(2, 2)
    torch.testing.assert_close(_grad(BitNetWeight(), w, g), g)  # identity STE


def test_ternary_absmean_forward_and_identity_gradient() -> None:
    w = torch.tensor([[0.1, -0.5], [0.9, 0.02]])
    gamma = 0.38  # mean|W|; W/gamma = [.26, -1.32, 2.37, .05] -> round-clip [0, -1, 1, 0]
    expected = torch.tensor([[0.0, -1.0], [1.0, 0.0]]) * gamma
    torch.testing.assert_close(TernaryWeight()(w), expected)
    g = torch.randn(2, 2)
    torch.testing.assert_close(_grad(TernaryWeight(), w, g), g)
    assert TernaryWeight().precision.weight_bits == 2


@pytest.mark.parametrize("name", ["sign", "bireal", "bitnet", "ternary"])
def test_weight_quantizers_are_registered_and_low_bit(name: str) -> None:
    q = build_quantizer(name)
    w = torch.randn(8, 16)
    levels = q(w).unique().numel()
    assert levels <= (3 if name == "ternary" else 2) * (8 if name == "bireal" else 1)
    assert q.precision.weight_bits in (1, 2) and q.k == 0
