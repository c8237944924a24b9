"""Activation quantizers: hand-computed forwards; STE, clipped STE, ApproxSign and elastic gradients."""

import torch

from bvbench.quant import AbsMax, ApproxSign, Elastic, Precision, RSign, SignAct, layer_norm


def _x_grad(q: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    q(x).backward(g)
    return x.grad


def test_absmax_per_tensor_by_hand() -> None:
    # gamma = 1, Qb = 128: x*128 = [64, -128, 32, 12.8] -> round [64, -128, 32, 13] -> /128
    x = torch.tensor([0.5, -1.0, 0.25, 0.1])
    out = AbsMax(bits=8)(x)
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0, 0.25, 13 / 128]))
    g = torch.randn(4)
    torch.testing.assert_close(_x_grad(AbsMax(bits=8), x, g), g)  # identity STE
    assert AbsMax(bits=8).precision == Precision(32, 8)


def test_absmax_clips_to_b_bits_and_per_token_uses_row_max() -> None:
    x = torch.tensor([[1.0, -0.3], [0.1, 0.04]])
    # 2 bits: Qb = 2, levels -2..1. Per tensor gamma = 1: [2, -0.6, 0.2, 0.08] -> [1 (clipped), -1, 0, 0] / 2
    torch.testing.assert_close(AbsMax(bits=2)(x), torch.tensor([[0.5, -0.5], [0.0, 0.0]]))
    # per token: row 2 gamma = 0.1 -> [2, 0.8] -> [1, 1] * 0.05
    out = AbsMax(bits=2, granularity="token")(x)
    torch.testing.assert_close(out, torch.tensor([[0.5, -0.5], [0.05, 0.05]]))


def test_absmax_min_shifted_variant_by_hand() -> None:
    # eta = -1, z = [0, 1.3, 2], gamma = 2, Qb = 2 -> round(z) = [0, 1, 2] -> z_q + eta = [-1, 0, 1]
    x = torch.tensor([-1.0, 0.3, 1.0])
    torch.testing.assert_close(AbsMax(bits=2, shifted=True)(x), torch.tensor([-1.0, 0.0, 1.0]))


def test_absmax_layernorm_option() -> None:
    x = torch.randn(3, 16) * 5 + 2
    torch.testing.assert_close(AbsMax(layernorm=True)(x), AbsMax()(layer_norm(x)))
    ln = layer_norm(x)
    torch.testing.assert_close(ln.mean(-1), torch.zeros(3), atol=1e-5, rtol=0)


def test_sign_clipped_ste() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5])
    torch.testing.assert_close(SignAct()(x), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    g = torch.randn(5)
    torch.testing.assert_close(_x_grad(SignAct(), x, g), g * (x.abs() <= 1).float())


def test_approxsign_gradient_bireal() -> None:
    x = torch.tensor([-1.5, -0.75, -0.25, 0.0, 0.25, 0.75, 1.5])
    g = torch.randn(7)
    expected = torch.where(
        (x >= -1) & (x < 0), 2 + 2 * x, torch.where((x >= 0) & (x < 1), 2 - 2 * x, torch.zeros_like(x))
    )
    torch.testing.assert_close(_x_grad(ApproxSign(), x, g), g * expected)
    torch.testing.assert_close(ApproxSign()(x), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))


def test_rsign_learnable_threshold() -> None:
    q = RSign(num_features=3)
    with torch.no_grad():
        q.threshold.copy_(torch.tensor([0.5, -0.5, 2.0]))
    x = torch.tensor([[0.2, -0.2, 1.0], [0.8, -1.0, 3.5]], requires_grad=True)
    out = q(x)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]]))
    g = torch.randn(2, 3)
    out.backward(g)
    mask = ((x.detach() - q.threshold.detach()).abs() <= 1).float()
    torch.testing.assert_close(x.grad, g * mask)
    torch.testing.assert_close(q.threshold.grad, -(g * mask).sum(0))


def test_elastic_signed_init_forward_and_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    q = Elastic(signed=True, num_features=6)
    q(x)  # first forward initialises alpha = 2 mean|x|
    torch.testing.assert_close(q.alpha.detach(), 2 * x.abs().mean())
    with torch.no_grad():
        q.offset.copy_(torch.linspace(-0.3, 0.3, 6))
    xr = x.clone().requires_grad_(True)
    out = q(xr)
    alpha, xs = q.alpha.detach(), x - q.offset.detach()
    sgn = torch.where(xs >= 0, 1.0, -1.0)
    torch.testing.assert_close(out, alpha * sgn)
    g = torch.randn(4, 6)
    out.backward(g)
    inside = (xs / alpha).abs() <= 1
    torch.testing.assert_close(xr.grad, g * inside.float())
    dalpha = torch.where(inside, sgn - xs / alpha, sgn)  # GSB Eq. 29 form
    torch.testing.assert_close(q.alpha.grad, (g * dalpha).sum())
    torch.testing.assert_close(q.offset.grad, -(g * inside.float()).sum(0))


def test_elastic_unsigned_init_forward_and_gradients() -> None:
    x = torch.tensor([0.0, 0.1, 0.3, 0.5, 2.0, -0.2])
    q = Elastic(signed=False)
    xr = x.clone().requires_grad_(True)
    out = q(xr)
    alpha = 4 * x.abs().mean()  # = 4 * 3.1 / 6
    torch.testing.assert_close(q.alpha.detach(), alpha)
    u = x / alpha
    b = (u > 0.5).float()
    torch.testing.assert_close(out, alpha * b)
    g = torch.randn(6)
    out.backward(g)
    inside = (u >= 0) & (u <= 1)
    torch.testing.assert_close(xr.grad, g * inside.float())
    torch.testing.assert_close(q.alpha.grad, (g * torch.where(inside, b - u, b)).sum())  # GSB Eq. 14 form


def test_lazy_init_round_trips_through_state_dict() -> None:
    q = Elastic()
    q(torch.randn(10) * 3)
    q2 = Elastic()
    q2.load_state_dict(q.state_dict())
    assert bool(q2.initialized)
    q2(torch.randn(10) * 100)  # must not re-initialise from this batch
    torch.testing.assert_close(q2.alpha, q.alpha)
    assert q.alpha.item() >= 1e-5
