"""QLinear: built in place from nn.Linear keeping weight and bias bit-exact; gradients reach every parameter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bvbench.quant import (
    QUANTIZERS,
    AbsMax,
    Elastic,
    Precision,
    QLinear,
    SignWeight,
    TernaryWeight,
    build_quantizer,
    layer_norm,
    quantize_linears,
)


def test_from_linear_keeps_weight_and_bias_bit_exact() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    q = QLinear.from_linear(lin, SignWeight(), Elastic())
    assert q.weight is lin.weight and q.bias is lin.bias
    assert torch.equal(q.weight, w0) and torch.equal(q.bias, b0)
    q(torch.randn(4, 16))
    assert torch.equal(q.weight, w0) and torch.equal(q.bias, b0)  # quantizing never writes the weight
    no_bias = QLinear.from_linear(nn.Linear(16, 8, bias=False), SignWeight(), None)
    assert no_bias.bias is None


def test_forward_combines_quantizers_and_keeps_bias() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(12, 5)
    x = torch.randn(3, 7, 12)
    q = QLinear.from_linear(lin, TernaryWeight(), AbsMax(bits=8, granularity="token"), norm=True)
    expected = F.linear(
        AbsMax(bits=8, granularity="token")(layer_norm(x)), TernaryWeight()(lin.weight), lin.bias
    )
    torch.testing.assert_close(q(x), expected)
    assert q.precision == Precision(2, 8)
    plain = QLinear.from_linear(lin, None, None)
    torch.testing.assert_close(plain(x), lin(x))
    assert plain.precision == Precision(32, 32)


def test_gradients_reach_every_learnable_parameter() -> None:
    lin = nn.Linear(10, 6)
    q = QLinear.from_linear(lin, SignWeight(learnable_scale=True, out_features=6), Elastic(num_features=10))
    q(torch.randn(5, 10)).pow(2).sum().backward()
    for name, p in q.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert q.precision == Precision(1, 1)


def test_quantize_linears_in_place_on_a_model() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.Linear(16, 4)))
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    names = quantize_linears(model, lambda name, lin: QLinear.from_linear(lin, SignWeight(), None))
    assert names == ["0", "2.0"]
    assert isinstance(model[0], QLinear) and isinstance(model[2][0], QLinear)
    assert model[0].weight is weights[0] and model[2][0].weight is weights[1]


ATTN_OPTIONS = {
    "lsf": dict(num_heads=2),
    "gsb": dict(num_heads=2, num_tokens=5),
    "gsb_v": dict(num_heads=2, head_dim=5),
    "head_elastic": dict(num_heads=2, head_dim=5),
    "lsf_rectified": dict(num_heads=2),
}


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_every_registered_quantizer_has_precision_and_trains(name: str) -> None:
    meta = QUANTIZERS.meta(name)
    assert meta["kind"] in ("weight", "activation", "attention") and meta["paper"] and meta["bits"]
    options = dict(ATTN_OPTIONS.get(name, {}))
    if name == "sign":
        options = dict(learnable_scale=True, out_features=2)
    q = build_quantizer(name, **options)
    assert isinstance(q.precision, Precision) and isinstance(q.k, int)
    x = torch.randn(2, 5) if meta["kind"] == "weight" else torch.randn(2, 2, 5, 5)
    if name in ("gsb", "gsb_baseline"):
        x = x.softmax(-1)
    x.requires_grad_(True)
    out = q(x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None
    for pname, p in q.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
