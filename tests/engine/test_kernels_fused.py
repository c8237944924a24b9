"""Fused kernel entry points (issue 15): `pack_matmul` (bit packing inside the GEMM call), the C absmax int8
quantizer and the int8 epilogue equal the unfused reference on every path this CPU supports, including K not
a multiple of 64 or 512, M = 1, odd N and batched operands."""

from __future__ import annotations

import pytest
import torch

import bvbench.engine as engine
from bvbench.engine import _lib
from bvbench.engine.gemm import pack_matmul
from bvbench.engine.int8 import absmax_codes, int8_epilogue
from bvbench.quant import SCALE_MIN, AbsMax

SHAPES = [(1, 64, 1), (1, 577, 33), (7, 1000, 17), (197, 1536, 40), (5, 513, 16), (3, 1, 3)]


@pytest.fixture(params=_lib.PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param not in engine.supported_paths():
        pytest.skip(f"this CPU has no {request.param} path")
    monkeypatch.setenv("BVBENCH_KERNEL", request.param)
    return request.param


@pytest.mark.parametrize("shape", SHAPES)
def test_pack_matmul_equals_pack_then_binary_matmul(path: str, shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    gen = torch.Generator().manual_seed(m * 7 + k)
    x, w = torch.randn(2, m, k, generator=gen), torch.randn(n, k, generator=gen)
    panels = engine.pack_panels(w)
    want = engine.binary_matmul(engine.pack_signs(x, strict=True), panels, k)
    assert torch.equal(pack_matmul(x, panels, strict=True), want)
    exact = torch.where(x > 0, 1, -1).float() @ torch.where(w >= 0, 1, -1).float().t()
    assert torch.equal(want.float(), exact)
    rs, cs, bias = torch.rand(2 * m, generator=gen), torch.rand(n, generator=gen), torch.randn(n, generator=gen)
    got = pack_matmul(x, panels, row_scale=rs, col_scale=cs, bias=bias, threads=2)
    ref = engine.binary_matmul(engine.pack_signs(x), panels, k, row_scale=rs, col_scale=cs, bias=bias)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_pack_matmul_masks_with_row_thresholds(path: str, shape: tuple[int, int, int]) -> None:
    """{0,1} x {+-1} and {0,1} x {0,1} products of a batched B (attention maps x V), per-row thresholds."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(k)
    a, v = torch.rand(3, m, k, generator=gen), torch.randn(3, n, k, generator=gen)
    t = a.amax(-1) * 0.5
    mask = (a > t.unsqueeze(-1)).int()
    vp = engine.pack_panels(v)
    signed = mask.float() @ torch.where(v >= 0, 1.0, -1.0).transpose(1, 2)
    assert torch.equal(pack_matmul(a, vp, mode="mask", threshold=t, strict=True).float(), signed)
    ones = mask.float() @ (v >= 0).float().transpose(1, 2)
    assert torch.equal(pack_matmul(a, vp, mode="mask01", threshold=t, strict=True).float(), ones)


@pytest.mark.parametrize("granularity", ["tensor", "token"])
@pytest.mark.parametrize("shape", [(1, 197, 384), (2, 5, 77), (3, 1), (1, 1000)])
def test_absmax_codes_reproduce_the_quantizer(path: str, granularity: str, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=gen) * 3
    gamma = x.abs().amax()
    x.view(-1)[-1] = gamma * (2.5 / 128)  # an exact .5 tie: round half to even
    q = AbsMax(bits=8, granularity=granularity)
    codes, g = absmax_codes(x, 128, granularity == "token", SCALE_MIN)
    assert codes.dtype == torch.int8 and codes.shape == x.shape
    assert torch.equal(codes.float() * (g / 128), q.quantize(x))
    assert torch.equal(absmax_codes(torch.zeros(2, 3), 128, False, SCALE_MIN)[0], torch.zeros(2, 3, dtype=torch.int8))


def test_int8_epilogue_follows_its_formula() -> None:
    gen = torch.Generator().manual_seed(3)
    r = torch.randint(-5000, 5000, (2, 7, 9), dtype=torch.int32, generator=gen)
    w_sum = torch.randint(-50, 50, (9,), dtype=torch.int32, generator=gen)
    step, eta = torch.rand(2, 7, 1, generator=gen), torch.randn(2, 7, 1, generator=gen)
    col, bias = torch.rand(9, generator=gen), torch.randn(9, generator=gen)
    got = int8_epilogue(r, shift=128, w_sum=w_sum, step=step, col_scale=col, eta=eta, bias=bias)
    want = (r + 128 * w_sum).float() * step * col + eta * (col * w_sum) + bias
    assert torch.equal(got, want)
    scalar = int8_epilogue(r, shift=0, w_sum=w_sum, step=torch.tensor(0.5), col_scale=col, eta=None, bias=None)
    assert torch.equal(scalar, r.float() * 0.5 * col)
