"""Packed 1-bit products equal the integer matmul exactly, for any K (multiples of 64 or not)."""

from __future__ import annotations

import numpy as np
import pytest

from bvbench.evaluate.binary_ops import HAS_BITWISE_COUNT, binary_matmul, pack_pm1, packed_nbytes, popcount


def pm1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)


@pytest.mark.parametrize("k", [1, 5, 63, 64, 65, 127, 128, 192, 200, 3 * 64 + 1])
@pytest.mark.parametrize("use_lut", [False, True])
def test_binary_matmul_is_exact(k: int, use_lut: bool) -> None:
    rng = np.random.default_rng(k)
    a, b = pm1(rng, (9, k)), pm1(rng, (13, k))
    pa, pb = pack_pm1(a), pack_pm1(b)
    assert pa.dtype == np.uint64 and pa.shape == (9, -(-k // 64))
    out = binary_matmul(pa, pb, k, use_lut=use_lut)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, a.astype(np.int32) @ b.astype(np.int32).T)


def test_extremes_and_layout() -> None:
    k = 70
    ones = np.ones((2, k), dtype=np.int8)
    np.testing.assert_array_equal(binary_matmul(pack_pm1(ones), pack_pm1(-ones), k), -k)
    np.testing.assert_array_equal(binary_matmul(pack_pm1(ones), pack_pm1(ones), k), k)
    x = -np.ones((1, k), dtype=np.int8)
    x[0, 0] = x[0, 65] = 1  # +1 -> bit set, little-endian within each 64-bit word
    words = pack_pm1(x)
    assert words[0, 0] == 1 and words[0, 1] == 2
    assert packed_nbytes(3, k) == words.itemsize * 2 * 3


def test_popcount_paths_agree() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, size=(5, 7), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    expected = np.array([[bin(int(w)).count("1") for w in row] for row in words])
    np.testing.assert_array_equal(popcount(words, use_lut=True), expected)
    np.testing.assert_array_equal(popcount(words), expected)
    assert HAS_BITWISE_COUNT == (np.lib.NumpyVersion(np.__version__) >= "2.0.0")


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        pack_pm1(np.array([[1, 0, -1]]))
    with pytest.raises(ValueError):
        pack_pm1(np.ones(4))
    a = pack_pm1(np.ones((2, 64)))
    with pytest.raises(ValueError):
        binary_matmul(a, a, 65)  # 65 columns need 2 words
    with pytest.raises(ValueError):
        binary_matmul(a, pack_pm1(np.ones((2, 65))), 64)
