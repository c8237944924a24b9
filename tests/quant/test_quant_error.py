"""Quantization error utility and the papers' analyses: BiViT Table 1 and GSB Fig. 4/6 failure modes."""

import torch

from bvbench.quant import (
    BiBERTAttention,
    Elastic,
    GSBAttention,
    GSBBaseline,
    SignAct,
    SoftmaxAwareBinarizer,
    quant_error,
)


def test_quant_error_by_hand() -> None:
    x = torch.tensor([2.0, -0.5])  # sign -> [1, -1]: (1 + .25) / (4 + .25)
    assert abs(quant_error(SignAct(), x) - 1.25 / 4.25) < 1e-6
    assert abs(quant_error(SignAct(), x, target=torch.tensor([1.0, -1.0]))) < 1e-12


def test_quant_error_uses_softmax_target_for_score_binarizers() -> None:
    s = torch.tensor([[0.0, 0.0]])  # softmax [.5, .5]; Bool(0) = 0 -> error (.25 + .25) / .5 = 1
    assert abs(quant_error(BiBERTAttention(), s) - 1.0) < 1e-6


def test_bivit_table1_shape_on_long_tailed_softmax_rows() -> None:
    """BiViT Table 1: BiBERT >> no-scale SAB >> approximate T ~ optimal T (N = 5, beta = 0.25)."""
    torch.manual_seed(0)
    scores = torch.randn(2, 6, 197, 197) * 3  # softmax of random logits: long-tailed rows (Fig. 2)
    p = scores.softmax(-1)
    assert (p < 0.05).float().mean() > 0.95
    bibert = quant_error(BiBERTAttention(), scores)
    optimal = quant_error(SoftmaxAwareBinarizer(threshold="optimal", iters=5, scale=True), scores)
    approx = quant_error(SoftmaxAwareBinarizer(beta=0.25, scale=True), scores)
    no_scale = quant_error(SoftmaxAwareBinarizer(beta=0.25), scores)
    assert bibert > 1000 * optimal  # orders of magnitude
    assert optimal <= approx < 1.3 * optimal  # the beta * max approximation stays close
    assert no_scale > 10 * approx  # dropping the scale raises it
    assert no_scale < bibert


def _init_attention(n: int = 197, dim: int = 384, heads: int = 6) -> torch.Tensor:
    """Softmax attention of a GSB baseline block at initialisation: LN'd tokens, DeiT-init weights (std .02),
    q and k binarized by the signed elastic rule (alpha = 2 mean|x|), scores / sqrt(d) (GSB Fig. 4a)."""
    torch.manual_seed(0)
    x = torch.nn.functional.layer_norm(torch.randn(2, n, dim), (dim,))
    wq, wk = torch.randn(dim, dim) * 0.02, torch.randn(dim, dim) * 0.02
    d = dim // heads
    q = (x @ wq).view(2, n, heads, d).transpose(1, 2)
    k = (x @ wk).view(2, n, heads, d).transpose(1, 2)
    with torch.no_grad():
        qb, kb = Elastic()(q), Elastic()(k)
    return (qb @ kb.transpose(-1, -2) / d**0.5).softmax(-1)


def test_gsb_fig4_failure_modes_at_initialisation() -> None:
    a = _init_attention()
    assert (a < 0.5).all()  # Fig. 4a: concentrated, all below the round threshold
    ones_eq2 = (GSBBaseline(stage=1)(a) > 0).float().mean()
    ones_none = (GSBBaseline(scaled=False)(a) > 0).float().mean()
    assert ones_eq2 > 0.9  # Eq. 2 scale: almost every entry becomes 1
    assert ones_none < 0.01  # no scale: almost every entry becomes 0
    gsb = GSBAttention(num_heads=6, num_tokens=197)
    with torch.no_grad():
        assert ((gsb(a) > 0).sum(-1) >= 1).all()  # no vanishing features: every row keeps an entry


def test_gsb_fig6_vanishing_features_with_eq8_scale() -> None:
    torch.manual_seed(1)
    a = (torch.randn(2, 6, 197, 197) * 3).softmax(-1)  # trained-like long-tailed rows (Fig. 6a)
    eq8 = GSBBaseline(stage=2, min_count=0)(a)  # Eq. 8 scale without the switch
    assert (eq8 == 0).float().mean() > 0.98  # ~99 % of the entries round to 0
    assert ((eq8 > 0).sum(-1) == 0).any()  # some rows vanish entirely (Fig. 7)
    # the paper's switch counts survivors over the whole H x N x N map (here > N), so it does not fire
    # and rows still vanish; at initialisation (no entry > .5) it falls back to Eq. 2
    assert torch.equal(GSBBaseline(stage=2)(a), eq8)
    a0 = _init_attention()
    torch.testing.assert_close(GSBBaseline(stage=2)(a0), GSBBaseline(stage=1)(a0))
    gsb = GSBAttention(num_heads=6, num_tokens=197)
    with torch.no_grad():
        out = gsb(a)
    assert ((out > 0).sum(-1) >= 1).all()
    assert quant_error(gsb, a) < quant_error(GSBBaseline(stage=2), a)
