"""BiBERT, SAB (BiViT) and LSF (Bi-ViT) attention binarizers: forwards by hand, gradients by formula."""

import torch

from bvbench.quant import (
    BiBERTAttention,
    LearnableScaleBinarizer,
    SoftmaxAwareBinarizer,
    build_quantizer,
    optimal_threshold,
)


def test_bibert_bool_forward_and_clipped_ste() -> None:
    s = torch.tensor([[[[-1.5, -0.2, 0.0, 0.3, 2.0]]]])
    q = BiBERTAttention()
    torch.testing.assert_close(q(s), torch.tensor([[[[0.0, 0.0, 0.0, 1.0, 1.0]]]]))
    x = s.clone().requires_grad_(True)
    g = torch.randn_like(s)
    q(x).backward(g)
    torch.testing.assert_close(x.grad, g * (s.abs() <= 1).float())
    assert q.k == 0 and q.precision.act_bits == 1


def test_sab_forward_by_hand() -> None:
    p = torch.tensor([[0.6, 0.25, 0.1, 0.05], [0.4, 0.3, 0.2, 0.1]])
    scores = p.log().view(1, 1, 2, 4)
    # row 1: T = 0.25 * 0.6 = 0.15 -> [1, 1, 0, 0]; row 2: T = 0.1 -> [1, 1, 1, 0 (0.1 is not > ~0.1)]
    out = SoftmaxAwareBinarizer(beta=0.25)(scores + 0.0)
    assert out[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert out[0, 0, 1, :3].tolist() == [1.0, 1.0, 1.0]
    # beta = 0.5: T = [0.3, 0.2] -> [1, 0, 0, 0], [1, 1, 0, 0]; with scale v = mean of the kept entries
    out = SoftmaxAwareBinarizer(beta=0.5, scale=True)(scores)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.6, 0, 0, 0], [0.35, 0.35, 0, 0]]))


def test_sab_paper_vs_code_variant_on_ties() -> None:
    scores = torch.zeros(1, 1, 1, 4)  # uniform row: every P equals its max
    assert SoftmaxAwareBinarizer(beta=1.0)(scores).sum() == 0  # paper Eq. 10: P > T
    assert SoftmaxAwareBinarizer(beta=1.0, variant="code")(scores).sum() == 4  # code: P >= T


def test_sab_backward_is_softmax_gradient_eq12() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 3, 5, 5, requires_grad=True)
    g = torch.randn(2, 3, 5, 5)
    SoftmaxAwareBinarizer()(s).backward(g)
    p = s.detach().softmax(-1)
    expected = p * (g - (g * p).sum(-1, keepdim=True))  # written-out softmax Jacobian-vector product
    torch.testing.assert_close(s.grad, expected)
    s2 = s.detach().clone().requires_grad_(True)
    (s2.softmax(-1) * g).sum().backward()
    torch.testing.assert_close(s.grad, s2.grad)


def test_optimal_threshold_bcd_by_hand() -> None:
    # start T = .25 * .4 = .1 -> b = [1,1,1,0]: v = .95/3 (Eq. 8), T = v/2 (Eq. 9) -> b unchanged (Eq. 10)
    p = torch.tensor([[0.4, 0.35, 0.2, 0.05]])
    b, v, t = optimal_threshold(p, iters=5)
    assert b.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    torch.testing.assert_close(v, torch.tensor([[0.95 / 3]]))
    torch.testing.assert_close(t, torch.tensor([[0.95 / 6]]))
    # from b0 = [1, 0, 0, 0] (beta = .9): v = .4, T = .2 -> b = [1, 1, 0, 0]: v = .375, T = .1875 -> [1, 1, 1, 0]
    b, v, _ = optimal_threshold(p, iters=1, beta=0.9)
    assert b.tolist() == [[1.0, 1.0, 0.0, 0.0]] and abs(v.item() - 0.4) < 1e-6


def test_optimal_threshold_descends_towards_brute_force_minimum() -> None:
    torch.manual_seed(1)
    p = (torch.randn(256, 60, dtype=torch.float64) * 3).softmax(-1)

    def err(iters: int) -> torch.Tensor:
        b, v, _ = optimal_threshold(p, iters=iters)
        v = (p * b).sum(-1, keepdim=True) / b.sum(-1, keepdim=True)
        return ((v * b - p) ** 2).sum(-1)

    e0, e1, e5 = err(0), err(1), err(5)
    assert torch.all(e1 <= e0 + 1e-9) and torch.all(e5 <= e1 + 1e-9)  # block coordinate descent
    # brute force: the best {0, v} code keeps the top-m entries for some m, v = their mean
    srt = p.sort(-1, descending=True).values
    m = torch.arange(1, 61, dtype=torch.float64)
    best = ((p**2).sum(-1, keepdim=True) - srt.cumsum(-1) ** 2 / m).amin(-1)
    assert torch.all(e5 >= best * (1 - 1e-4))
    assert (e5 <= best * 1.0001).float().mean() > 0.6  # BCD is local: most rows reach the global optimum
    assert e5.sum() < 1.1 * best.sum()


def test_lsf_signed_forward_and_gradients_eq11() -> None:
    q = LearnableScaleBinarizer(num_heads=2)
    x = torch.tensor([[[[0.5, -2.0, 1.2]], [[-0.1, 0.3, 4.0]]]])  # [B=1, H=2, N=1, d=3]
    q(x)  # init alpha_h = 2 mean|x_h| = [2 * 3.7 / 3, 2 * 4.4 / 3]
    torch.testing.assert_close(q.alpha.detach(), torch.tensor([7.4 / 3, 8.8 / 3]))
    with torch.no_grad():
        q.alpha.copy_(torch.tensor([1.0, 0.5]))
    xr = x.clone().requires_grad_(True)
    out = q(xr)
    expected = torch.tensor([[[[1.0, -1.0, 1.0]], [[-0.5, 0.5, 0.5]]]])
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(x)
    out.backward(g)
    alpha = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    inside = x.abs() <= alpha  # clip range |x| <= alpha_h
    torch.testing.assert_close(xr.grad, g * inside.float())
    sgn = torch.where(x >= 0, 1.0, -1.0)
    dalpha = (g * torch.where(inside, sgn - x / alpha, sgn)).sum(dim=(0, 2, 3))
    torch.testing.assert_close(q.alpha.grad, dalpha)


def test_lsf_unsigned_attention_map() -> None:
    q = LearnableScaleBinarizer(num_heads=1, signed=False)
    a = torch.tensor([[[[0.7, 0.2, 0.1]]]])
    q(a)
    with torch.no_grad():
        q.alpha.fill_(0.5)
    ar = a.clone().requires_grad_(True)
    out = q(ar)
    torch.testing.assert_close(out, torch.tensor([[[[0.5, 0.0, 0.0]]]]))
    g = torch.randn_like(a)
    out.backward(g)
    torch.testing.assert_close(ar.grad, g * torch.tensor([[[[0.0, 1.0, 1.0]]]]))  # 0 <= A <= alpha


def test_lsf_code_variant_has_learnable_zero_point() -> None:
    q = build_quantizer("lsf", num_heads=3, variant="code")
    x = torch.randn(2, 3, 4, 8, requires_grad=True)
    q(x).sum().backward()
    assert q.zero_point is not None and q.zero_point.grad is not None and q.alpha.grad is not None
