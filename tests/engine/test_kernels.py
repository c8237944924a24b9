"""Packed bit kernels: every path this CPU supports (forced with BVBENCH_KERNEL) equals an integer torch
reference bit for bit, for odd K, M = 1, batched operands and 1 or 2 threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bvbench.engine as engine
from bvbench.engine import _lib
from bvbench.errors import BvbenchError

REPO = Path(__file__).resolve().parents[2]
SHAPES = [(1, 1, 1), (1, 100, 3), (5, 64, 16), (197, 384, 40), (37, 1000, 33), (70, 129, 17)]


@pytest.fixture(params=_lib.PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each kernel path, forced through the environment switch; skipped where the CPU lacks it."""
    if request.param not in engine.supported_paths():
        pytest.skip(f"this CPU has no {request.param} path")
    monkeypatch.setenv("BVBENCH_KERNEL", request.param)
    assert engine.kernel_path() == request.param
    return request.param


def ref_pack(bits: torch.Tensor) -> torch.Tensor:
    """Reference packing: bit j of word w = element 64 w + j (little-endian bit order), zero padding."""
    b = bits.reshape(-1, bits.shape[-1]).numpy()
    words = -(-b.shape[1] // 64)
    padded = np.zeros((b.shape[0], words * 64), dtype=bool)
    padded[:, : b.shape[1]] = b
    packed = np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.int64)
    return torch.from_numpy(packed).reshape(*bits.shape[:-1], words)


def as_i64(words: torch.Tensor) -> torch.Tensor:
    return words.view(torch.int64)


def pm1(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1, -1).to(torch.int32)


def test_kernel_path_names_the_fastest_supported_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BVBENCH_KERNEL", raising=False)
    assert engine.kernel_path() == engine.supported_paths()[-1]
    assert "portable" in engine.supported_paths()


def test_forcing_an_unknown_or_missing_path_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BVBENCH_KERNEL", "sse9")
    with pytest.raises(BvbenchError, match="not a kernel path"):
        engine.kernel_path()
    monkeypatch.setattr(_lib, "supported_paths", lambda: ("portable",))
    monkeypatch.setenv("BVBENCH_KERNEL", "avx512")
    with pytest.raises(BvbenchError, match="supports only portable"):
        engine.kernel_path()


def test_environment_switch_reaches_a_fresh_process() -> None:
    env = {**os.environ, "BVBENCH_KERNEL": "portable", "PYTHONPATH": str(REPO)}
    code = "import bvbench.engine as e; print(e.kernel_path())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "portable"


@pytest.mark.parametrize("k", [1, 63, 64, 65, 200, 768])
def test_pack_signs_matches_reference(path: str, k: int) -> None:
    x = torch.randn(7, k)
    x[0, :: 3] = 0.0  # sign(0): +1 by default, -1 when strict
    assert torch.equal(as_i64(engine.pack_signs(x)), ref_pack(x >= 0))
    assert torch.equal(as_i64(engine.pack_signs(x, strict=True)), ref_pack(x > 0))
    t = torch.rand(7)
    assert torch.equal(as_i64(engine.pack_signs(x, threshold=t, strict=True)), ref_pack(x > t[:, None]))
    mask = torch.rand(3, 2, k) > 0.7
    assert torch.equal(as_i64(engine.pack_bool(mask)), ref_pack(mask))


def test_panels_from_floats_equal_panelized_rows(path: str) -> None:
    x = torch.randn(2, 37, 130)
    direct = engine.pack_panels(x)
    via_rows = engine.to_panels(engine.pack_signs(x), 130)
    assert direct.n == 37 and direct.batch == 2
    assert torch.equal(as_i64(direct.words), as_i64(via_rows.words))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_binary_matmul_is_exact(path: str, shape: tuple[int, int, int], threads: int) -> None:
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(n, k)
    expected = pm1(a) @ pm1(b).t()
    got = engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(b), k, threads=threads)
    assert got.dtype == torch.int32 and torch.equal(got, expected)
    assert torch.equal(engine.binary_matmul(engine.pack_signs(a), engine.pack_signs(b), k), expected)


def test_binary_matmul_shared_weight_flattens_leading_dims(path: str) -> None:
    a, w = torch.randn(3, 11, 96), torch.randn(24, 96)
    got = engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(w), 96)
    assert got.shape == (3, 11, 24) and torch.equal(got, pm1(a) @ pm1(w).t())


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_attention_products_are_exact(path: str, threads: int) -> None:
    q, k_, v = torch.randn(2, 3, 65, 64), torch.randn(2, 3, 65, 64), torch.randn(2, 3, 65, 40)
    scores = engine.binary_matmul(engine.pack_signs(q), engine.pack_panels(k_), 64, threads=threads)
    assert torch.equal(scores, pm1(q) @ pm1(k_).transpose(-1, -2))
    attn = torch.rand(2, 3, 65, 65) > 0.6  # a {0, 1} map (BiBERT / SAB / GSB masks)
    vt = v.transpose(-1, -2)  # V^T rows: the columns of V packed along the token axis
    signed = engine.mask_matmul(engine.pack_bool(attn), engine.pack_panels(vt), 65, threads=threads)
    assert torch.equal(signed, attn.int() @ pm1(v))
    unsigned = engine.mask_matmul(engine.pack_bool(attn), engine.pack_bool_panels(vt > 0.5), 65, signed=False)
    assert torch.equal(unsigned, attn.int() @ (v > 0.5).int())


def test_float_epilogue_follows_its_formula(path: str) -> None:
    m, k, n = 9, 150, 21
    a, b = torch.randn(m, k), torch.randn(n, k)
    rs, cs, bias = torch.rand(m), torch.rand(n), torch.randn(n)
    r = (pm1(a) @ pm1(b).t()).float()
    got = engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(b), k, row_scale=rs, col_scale=cs, bias=bias)
    assert torch.equal(got, r * rs[:, None] * cs + bias)
    out = torch.ones(m, n)
    engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(b), k, col_scale=cs, out=out, accumulate=True)
    assert torch.equal(out, r * cs + 1.0)


def test_int32_accumulate_into_a_strided_view(path: str) -> None:
    a, b = torch.randn(6, 70), torch.randn(10, 70)
    buf = torch.zeros(6, 30, dtype=torch.int32)
    view = buf[:, 10:20]
    engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(b), 70, out=view)
    engine.binary_matmul(engine.pack_signs(a), engine.pack_panels(b), 70, out=view, accumulate=True)
    assert torch.equal(buf[:, 10:20], 2 * (pm1(a) @ pm1(b).t()))
    assert not buf[:, :10].any() and not buf[:, 20:].any()


def test_row_popcount_counts_set_bits() -> None:
    mask = torch.rand(4, 5, 130) > 0.5
    assert torch.equal(engine.row_popcount(engine.pack_bool(mask)), mask.sum(-1).int())


def test_mismatched_operands_are_rejected() -> None:
    a = engine.pack_signs(torch.randn(4, 100))
    with pytest.raises(ValueError, match="K=200"):
        engine.binary_matmul(a, engine.pack_panels(torch.randn(3, 200)), 200)
    with pytest.raises(ValueError, match="batches"):
        engine.binary_matmul(engine.pack_signs(torch.randn(2, 4, 64)), engine.pack_panels(torch.randn(3, 5, 64)), 64)
