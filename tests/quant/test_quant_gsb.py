"""GSB: baseline (Eq. 7-8), attention map (Eq. 9-25) and V (Eq. 26-34), forwards by hand and the papers'
gradient and initialisation formulas written out."""

import pytest
import torch

from bvbench.quant import GSBAttention, GSBBaseline, GSBValue, build_quantizer, gsb_coefficients

A = torch.tensor([[[[0.7, 0.2, 0.1], [0.4, 0.33, 0.27]]]])  # [B=1, H=1, N=2 rows, 3 keys]


def _set_initialized(q: torch.nn.Module, name: str, values: list[float]) -> None:
    with torch.no_grad():
        getattr(q, name).copy_(torch.tensor(values))
    q.initialized.fill_(True)


def test_gsb_coefficients_split_05_09() -> None:
    assert gsb_coefficients(2) == pytest.approx([0.7, 0.9])
    assert gsb_coefficients(4) == pytest.approx([0.6, 0.7, 0.8, 0.9])


def test_baseline_scales_by_hand() -> None:
    gamma2 = A.mean().item()  # Eq. 2: 2/6; A/gamma2 = [2.1, .6, .3], [1.2, .99, .81]
    out = GSBBaseline(stage=1)(A)
    torch.testing.assert_close(out, gamma2 * torch.tensor([[[[1.0, 1, 0], [1, 1, 1]]]]))
    # Eq. 8: entries > .5 -> gamma8 = .7; A/.7 > .5 holds for 2 entries < N = 3 -> switch back to Eq. 2
    torch.testing.assert_close(GSBBaseline(stage=2)(A), out)
    out8 = GSBBaseline(stage=2, min_count=2)(A)
    torch.testing.assert_close(out8, 0.7 * torch.tensor([[[[1.0, 0, 0], [1, 0, 0]]]]))
    assert GSBBaseline(scaled=False)(A).tolist() == [[[[1.0, 0, 0], [0, 0, 0]]]]


def test_baseline_ste_gradient_eq5() -> None:
    a = A.clone().requires_grad_(True)
    g = torch.randn_like(A)
    GSBBaseline(stage=1)(a).backward(g)
    u = A / A.mean()
    torch.testing.assert_close(a.grad, g * ((u >= 0) & (u <= 1)).float())


def test_gsb_attention_forward_by_hand() -> None:
    q = GSBAttention(num_heads=1, num_tokens=3, k=2)
    _set_initialized(q, "alpha", [0.2, 0.1, 0.05])
    # row 1: A/a0 = [3.5, 1, .5] -> [1, 1, 0]; Theta = .49, .63 -> M1 = M2 = [1, 0, 0]
    # row 2: A/a0 = [2, 1.65, 1.35] -> [1, 1, 1]; Theta = .28, .36 -> M1 = [1, 1, 0], M2 = [1, 0, 0]
    out = q(torch.cat([A, A[:, :, :1]], dim=2))  # rows: A1, A2, A1 (N = 3)
    expected = torch.tensor([[0.35, 0.2, 0.0], [0.35, 0.3, 0.2], [0.35, 0.2, 0.0]])
    torch.testing.assert_close(out[0, 0], expected)
    assert q.k == 2 and q.precision.act_bits == 1


def _gsb_attention_reference_grads(a_ret, alpha, g, coeffs):
    """Eq. 14-20 written out."""
    u = a_ret / alpha[0]
    a_bin = (u > 0.5).float()
    in0 = ((u > 0) & (u < 1)).float()
    d_ret = in0.clone()  # A_0, Eq. 17-18
    rowmax = a_ret.amax(-1, keepdim=True)
    hnn = a_ret[0].numel()
    d_alpha = [(g * (a_bin - u * in0)).sum() / hnn]  # Eq. 14
    for i, c in enumerate(coeffs, start=1):
        diff = a_ret - c * rowmax
        d_ret = d_ret + alpha[i] * ((diff > 0) & (diff < 1)).float()  # A_i, Eq. 20
        d_alpha.append((g * (diff > 0).float()).sum() / hnn)  # Eq. 15
    return g * d_ret, torch.stack(d_alpha)  # Eq. 16


@pytest.mark.parametrize("k,amp", [(1, 1.0), (2, 1.0), (3, 1.0), (2, 30.0)])
def test_gsb_attention_backward_eq14_to_20(k: int, amp: float) -> None:
    """amp = 30 pushes A_ret - Theta_i above 1, where Eq. 20's upper bound cuts the gradient."""
    torch.manual_seed(k)
    q = GSBAttention(num_heads=2, num_tokens=6, k=k)
    with torch.no_grad():
        q.phi.copy_(torch.randn(2, 6, 6) * 0.02)
    a = (torch.randn(3, 2, 6, 6) * 2).softmax(-1).mul(amp).requires_grad_(True)
    q(a)  # initialise (Eq. 25)
    out = q(a)
    g = torch.randn_like(out)
    out.backward(g)
    a_ret = a.detach() - q.phi.detach()
    d_ret, d_alpha = _gsb_attention_reference_grads(a_ret, q.alpha.detach(), g, gsb_coefficients(k))
    torch.testing.assert_close(a.grad, d_ret)
    torch.testing.assert_close(q.phi.grad, -d_ret.sum(0))  # A_ret = A - Phi
    torch.testing.assert_close(q.alpha.grad, d_alpha)


def test_gsb_attention_init_eq25_is_least_squares_of_eq24() -> None:
    torch.manual_seed(0)
    a = (torch.randn(2, 3, 16, 16) * 2).softmax(-1)
    q = GSBAttention(num_heads=3, num_tokens=16, k=2)
    q(a)
    alpha = q.alpha.detach().double()
    v = a.flatten().double()
    a0 = v.mean()
    torch.testing.assert_close(alpha[0], a0)  # alpha_0 = ||a_ret||_1 / n
    rowmax = a.amax(-1, keepdim=True)
    a_bin = (a / a0.float() > 0.5).flatten().double()
    m = [(a >= c * rowmax).flatten().double() for c in (0.7, 0.9)]
    # Eq. 24: least squares over (alpha_1, alpha_2) with alpha_0 fixed
    design = torch.stack(m, dim=1)
    sol = torch.linalg.lstsq(design, (v - a0 * a_bin).unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(alpha[1:], sol)
    # compared with the unconstrained 3-scale least squares of Eq. 21/23, Eq. 25 stays close
    full = torch.stack([a_bin] + m, dim=1)
    sol3 = torch.linalg.lstsq(full, v.unsqueeze(1)).solution
    j_full = ((full @ sol3).squeeze(1) - v).pow(2).sum()
    j_25 = ((full @ alpha.unsqueeze(1)).squeeze(1) - v).pow(2).sum()
    assert j_full <= j_25 <= 1.5 * j_full


def test_gsb_attention_code_variant_init_and_phi_sign() -> None:
    a = torch.randn(2, 1, 8, 8).softmax(-1)
    q = GSBAttention(num_heads=1, num_tokens=8, k=2, variant="code")
    q(a)
    rowmax = a.amax(-1, keepdim=True)
    band1 = (a >= 0.7 * rowmax) & (a < 0.9 * rowmax)
    band2 = a >= 0.9 * rowmax
    expected = torch.stack([4 * a.mean(), 4 * a[band1].mean(), 4 * a[band2].mean()])
    torch.testing.assert_close(q.alpha.detach(), expected)
    with torch.no_grad():
        q.phi.fill_(0.01)
    torch.testing.assert_close(q.retarget(a), a + 0.01)


def test_gsb_value_forward_by_hand() -> None:
    q = GSBValue(num_heads=1, head_dim=2, k=2)
    _set_initialized(q, "beta", [0.5, 0.3, 0.2])
    v = torch.tensor([[[[1.0, -0.2], [-2.0, 0.75]]]])
    # vmax 1, vmin -2: M1 = |.7 max / .7 min| -> [[1,0],[1,1]]; M2 (.9) -> [[1,0],[1,0]]
    out = q(v)
    torch.testing.assert_close(out, torch.tensor([[[[1.0, -0.5], [-1.0, 0.8]]]]))
    assert q.k == 2


def _gsb_value_reference_grads(v0, beta, g, coeffs):
    """Eq. 28-32 written out."""
    dims = (1, 2, 3)
    vmax, vmin = v0.amax(dims, keepdim=True), v0.amin(dims, keepdim=True)
    s = torch.where(v0 >= 0, 1.0, -1.0)
    hnc = v0[0].numel()
    d_v = ((v0 / beta[0]).abs() < 1).float()  # V_0, Eq. 31
    u0 = v0 / beta[0]
    d_beta = [(g * torch.where(u0.abs() < 1, s - u0, s)).sum() / hnc]  # Eq. 28-29, i = 0
    for i, c in enumerate(coeffs, start=1):
        m = ((v0 > c * vmax) | (v0 < c * vmin)).float()
        ui = v0 * m / beta[i]  # V_re^i / beta_i
        d_v = d_v + ((ui.abs() <= 1).float() * m)  # V_i, Eq. 32
        d_beta.append((g * m * torch.where(ui.abs() < 1, s - ui, s)).sum() / hnc)  # Eq. 29 masked by M_i
    return g * d_v, torch.stack(d_beta)  # Eq. 30


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gsb_value_backward_eq28_to_32(k: int) -> None:
    torch.manual_seed(10 + k)
    q = GSBValue(num_heads=2, head_dim=4, k=k)
    with torch.no_grad():
        q.omega.copy_(torch.randn(2, 1, 4) * 0.1)
    v = torch.randn(3, 2, 5, 4).requires_grad_(True)
    out = q(v)
    g = torch.randn_like(out)
    out.backward(g)
    v0 = v.detach() - q.omega.detach()
    d_v, d_beta = _gsb_value_reference_grads(v0, q.beta.detach(), g, gsb_coefficients(k))
    torch.testing.assert_close(v.grad, d_v)
    torch.testing.assert_close(q.omega.grad, -d_v.sum(dim=(0, 2), keepdim=True)[0])
    torch.testing.assert_close(q.beta.grad, d_beta)


@pytest.mark.parametrize("k", [2, 3])
def test_gsb_value_init_eq34_is_least_squares_of_eq33(k: int) -> None:
    torch.manual_seed(3)
    v = torch.randn(2, 3, 20, 8)
    q = GSBValue(num_heads=3, head_dim=8, k=k)
    q(v)
    s = torch.where(v >= 0, 1.0, -1.0).double()
    cols = [s.flatten()] + [(s * m.double()).flatten() for m in q.masks(v)]
    design = torch.stack(cols, dim=1)
    sol = torch.linalg.lstsq(design, v.double().flatten().unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(q.beta.detach().double(), sol, rtol=1e-5, atol=1e-6)


def test_gsb_registered_with_k() -> None:
    q = build_quantizer("gsb", num_heads=6, num_tokens=10, k=3)
    assert q.k == 3 and q.phi.shape == (6, 10, 10) and q.alpha.shape == (4,)
    qv = build_quantizer("gsb_v", num_heads=6, head_dim=64)
    assert qv.k == 2 and qv.omega.shape == (6, 1, 64)
    assert build_quantizer("gsb_baseline").k == 0
