"""int8 x int8 -> int32 through torch._int_mm: exact for 8-bit activations against binary, ternary and int8
weight codes (BitNet W1A8, BitNet b1.58 W1.58A8, GSB's 8-bit patch embedding)."""

from __future__ import annotations

import pytest
import torch

from bvbench.engine import int8_matmul


def codes(shape: tuple[int, ...], lo: int, hi: int) -> torch.Tensor:
    return torch.randint(lo, hi + 1, shape, dtype=torch.int8)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 100, 3), (197, 384, 40), (13, 1001, 17)])
@pytest.mark.parametrize("weights", ["binary", "ternary", "int8"])
def test_int8_matmul_is_exact(m: int, k: int, n: int, weights: str) -> None:
    a = codes((m, k), -128, 127)
    if weights == "binary":
        w = (codes((n, k), 0, 1) * 2 - 1).to(torch.int8)
    else:
        w = codes((n, k), -1, 1) if weights == "ternary" else codes((n, k), -128, 127)
    got = int8_matmul(a, w)
    assert got.dtype == torch.int32 and torch.equal(got, a.int() @ w.int().t())


def test_int8_matmul_leading_dims_and_scales() -> None:
    a, w = codes((2, 5, 48), -128, 127), codes((6, 48), -1, 1)
    rs, cs, bias = torch.rand(2, 5), torch.rand(6), torch.randn(6)
    exact = a.int() @ w.int().t()
    assert torch.equal(int8_matmul(a, w), exact)
    assert torch.equal(int8_matmul(a, w, row_scale=rs, col_scale=cs, bias=bias),
                       exact.float() * rs.unsqueeze(-1) * cs + bias)


def test_int8_matmul_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match="int8"):
        int8_matmul(torch.zeros(2, 3), torch.zeros(4, 3, dtype=torch.int8))
