"""Packed 1-bit matrix products: ±1 rows packed into uint64 words, ``A.B^T = K - 2 * popcount(a XOR b)``."""

from __future__ import annotations

import numpy as np

__all__ = ["HAS_BITWISE_COUNT", "binary_matmul", "pack_pm1", "packed_nbytes", "popcount"]

HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # NumPy >= 2.0
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(words: np.ndarray, *, use_lut: bool = False) -> np.ndarray:
    """Number of set bits of every uint64 word (``np.bitwise_count``, or a byte lookup table)."""
    words = np.asarray(words, dtype=np.uint64)
    if HAS_BITWISE_COUNT and not use_lut:
        return np.bitwise_count(words)
    as_bytes = words.reshape(*words.shape, 1).view(np.uint8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def pack_pm1(x: np.ndarray, *, check: bool = True) -> np.ndarray:
    """Pack a (rows, K) matrix of ±1 into (rows, ceil(K/64)) uint64 words (+1 -> bit 1, padding bits 0)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {x.shape}")
    if check and not np.all((x == 1) | (x == -1)):
        raise ValueError("pack_pm1 expects entries of exactly +1 or -1")
    rows, k = x.shape
    words = -(-k // 64)
    bits = np.zeros((rows, words * 64), dtype=bool)
    bits[:, :k] = x > 0
    packed = np.packbits(bits, axis=1, bitorder="little")  # (rows, words * 8) uint8
    return np.ascontiguousarray(packed).view(np.uint64)


def packed_nbytes(rows: int, k: int) -> int:
    """Bytes of a (rows, K) ±1 matrix once packed (K rounded up to 64 bits)."""
    return rows * -(-k // 64) * 8


def binary_matmul(a: np.ndarray, b: np.ndarray, k: int, *, use_lut: bool = False) -> np.ndarray:
    """``A @ B^T`` (int32, shape (M, N)) for ±1 matrices packed by :func:`pack_pm1` with K = ``k`` columns.

    Each dot product is ``K - 2 * popcount(a XOR b)``: equal bits multiply to +1, different bits to -1, and
    padding bits are 0 in both operands so they never count.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"packed operands must be (M, W) and (N, W), got {a.shape} and {b.shape}")
    if k < 0 or a.shape[1] != -(-k // 64):
        raise ValueError(f"k={k} columns do not pack into {a.shape[1]} words")
    m, n = a.shape[0], b.shape[0]
    a_words = np.ascontiguousarray(a.T)  # word-major: row w holds word w of every row
    b_words = np.ascontiguousarray(b.T)
    acc_dtype = np.uint16 if k < 2**16 else np.int64  # the count of differing bits never exceeds k
    differ = np.zeros((m, n), dtype=acc_dtype)
    xored = np.empty((m, n), dtype=np.uint64)
    counts = np.empty((m, n), dtype=np.uint8)
    for w in range(a.shape[1]):  # one (M, N) XOR + popcount per word: no (M, N, W) temporary
        np.bitwise_xor(a_words[w][:, None], b_words[w][None, :], out=xored)
        if HAS_BITWISE_COUNT and not use_lut:
            np.bitwise_count(xored, out=counts)
        else:
            counts[...] = popcount(xored, use_lut=True)
        differ += counts
    return k - 2 * differ.astype(np.int32)
