"""Packed 1-bit GEMM (XOR + popcount on uint64 words) against fp32 ``torch.mm`` on ViT shapes.

For every K, N in ``--sizes`` (M = 197 tokens): random ±1 matrices A (M, K) and B (N, K); the packed product
``K - 2 * popcount(a XOR b)`` is first checked to equal the integer matmul ``A @ B^T`` exactly, then both are
timed (median of ``--repeats`` runs after warm-up). Columns: fp32 ms, packed ms (B pre-packed, like weights),
pack+GEMM ms (A packed on every call, like activations), time ratios packed / fp32, and the memory ratio of
the packed weight matrix to its fp32 storage.

Run: ``.venv/bin/python benchmarks/binary_gemm.py [--threads 2] [--repeats 15]``.
The packed kernel is plain NumPy (one vectorised XOR + popcount pass per 64-bit word, single thread); it shows
the bit-level arithmetic, not the speed of a tuned XNOR-popcount kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tabulate import tabulate

from bvbench.evaluate.binary_ops import HAS_BITWISE_COUNT, binary_matmul, pack_pm1, packed_nbytes


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(m: int, sizes: Sequence[int], repeats: int, threads: int, seed: int = 0) -> list[dict[str, float]]:
    """Check and time every (K, N) pair; one row per pair."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    rows = []
    for k in sizes:
        for n in sizes:
            a = rng.choice(np.array([-1, 1], dtype=np.int8), size=(m, k))
            b = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, k))
            a_packed, b_packed = pack_pm1(a), pack_pm1(b)
            exact = a.astype(np.int32) @ b.astype(np.int32).T
            if not np.array_equal(binary_matmul(a_packed, b_packed, k), exact):
                raise AssertionError(f"packed product differs from the integer matmul at K={k}, N={n}")

            x = torch.from_numpy(a.astype(np.float32))
            w = torch.from_numpy(b.astype(np.float32))
            fp32_ms = _median_ms(lambda x=x, w=w: torch.mm(x, w.t()), repeats)
            packed_ms = _median_ms(lambda ap=a_packed, bp=b_packed, k=k: binary_matmul(ap, bp, k), repeats)
            pack_gemm_ms = _median_ms(
                lambda a=a, bp=b_packed, k=k: binary_matmul(pack_pm1(a, check=False), bp, k), repeats
            )
            rows.append(
                {
                    "K": k,
                    "N": n,
                    "fp32_ms": fp32_ms,
                    "packed_ms": packed_ms,
                    "pack+gemm_ms": pack_gemm_ms,
                    "time_ratio": packed_ms / fp32_ms,
                    "time_ratio_with_pack": pack_gemm_ms / fp32_ms,
                    "memory_ratio": packed_nbytes(n, k) / (n * k * 4),
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=197, help="rows of A (tokens)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 384, 768, 3072], help="K and N values")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for fp32 (the packed kernel uses 1)")
    args = parser.parse_args(argv)
    rows = run(args.m, args.sizes, args.repeats, args.threads)
    print(
        f"M={args.m}; torch {torch.__version__} with {args.threads} thread(s); numpy {np.__version__} "
        f"({'np.bitwise_count' if HAS_BITWISE_COUNT else 'lookup-table'} popcount, 1 thread); "
        f"median of {args.repeats}; all packed products equal the integer matmul exactly."
    )
    print(tabulate(rows, headers="keys", floatfmt=".4g"))


if __name__ == "__main__":
    main()
