"""Packed 1-bit GEMM against fp32 ``torch.mm`` on ViT shapes: bf16 ``torch.mm``, int8 ``torch._int_mm``, the
NumPy XOR-popcount reference (`bvbench.evaluate.binary_ops`) and bvbench's C kernel on every path this CPU has.

For every M in ``--m`` and K, N in ``--sizes``: random ±1 matrices A (M, K) and B (N, K). The packed kernel's
int32 product is first checked to equal the fp32 product exactly (sums of ±1 are integers below 2^24, so fp32 is
exact here), and so is int8 ``_int_mm`` on the same ±1 values; then every candidate is timed in interleaved
rounds (one call of each per round, the order rotating, so a busy machine slows all of them alike) and the table
shows the median fp32 time and each candidate's speed-up, the median over rounds of ``fp32 time / candidate
time`` in that round (> 1: faster than fp32).
``packed`` columns time the GEMM on pre-packed operands (B packed once, like weights); ``+pack`` also packs A
from floats on every call (activations). The NumPy reference is skipped above ``--numpy-max-m`` rows.

Run: ``.venv/bin/python benchmarks/binary_gemm.py [--threads 1] [--rounds 15] [--big-rounds 3]``.
Targets (M = 197, 1 thread): AVX-512 >= 15x fp32 at K = N = 768 and 3072, AVX2 >= 5x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

import bvbench.engine as engine
from bvbench.evaluate import binary_ops

CLOCK = [time.perf_counter]  # --clock cpu: time.thread_time (this thread's CPU time: a shared machine's other
# processes do not count; valid with one thread only, the kernels then run on the calling thread)
TARGETS = {"avx512": 15.0, "avx2": 5.0}
TARGET_M, TARGET_SIZES = 197, (768, 3072)


def candidates(a: torch.Tensor, b: torch.Tensor, threads: int, numpy: bool) -> dict[str, Callable[[], object]]:
    """name -> zero-argument call for ±1 float matrices A (M, K) and B (N, K); exactness checked here."""
    k = a.shape[1]
    bt, a16, bt16 = b.t(), a.to(torch.bfloat16), b.t().to(torch.bfloat16)
    a8, bt8 = a.to(torch.int8), b.to(torch.int8).t()
    exact = torch.mm(a, bt)
    if not torch.equal(torch._int_mm(a8, bt8).float(), exact):
        raise AssertionError(f"_int_mm differs from the exact product at K={k}")
    calls: dict[str, Callable[[], object]] = {
        "fp32": lambda: torch.mm(a, bt),
        "bf16": lambda: torch.mm(a16, bt16),
        "int8": lambda: torch._int_mm(a8, bt8),
    }
    if numpy:
        an, bn = binary_ops.pack_pm1(a.numpy()), binary_ops.pack_pm1(b.numpy())
        calls["numpy"] = lambda: binary_ops.binary_matmul(an, bn, k)
    best = engine.supported_paths()[-1]
    for path in engine.supported_paths():
        ap, bp = engine.pack_signs(a, path=path), engine.pack_panels(b, path=path)
        got = engine.binary_matmul(ap, bp, k, threads=threads, path=path)
        if not torch.equal(got.float(), exact):
            raise AssertionError(f"{path} kernel differs from the exact product at K={k}")
        calls[path] = lambda ap=ap, bp=bp, p=path: engine.binary_matmul(ap, bp, k, threads=threads, path=p)
        if path == best:
            calls[f"{path}+pack"] = lambda bp=bp, p=path: engine.binary_matmul(
                engine.pack_signs(a, threads=threads, path=p), bp, k, threads=threads, path=p
            )
    return calls


def interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int,
                        warmup: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds per call, median of the per-round ratios fp32 / candidate): each round runs every
    candidate once, in a rotated order, so a ratio compares calls made moments apart."""
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = CLOCK[0]()
            calls[name]()
            if r >= warmup:
                times[name].append(CLOCK[0]() - t0)
    ratios = {n: statistics.median(f / max(t, 1e-12) for f, t in zip(times["fp32"], times[n], strict=True))
              for n in names if n != "fp32"}
    return {n: statistics.median(t) for n, t in times.items()}, ratios


def run(ms: Sequence[int], sizes: Sequence[int], rounds: int, big_rounds: int, threads: int,
        numpy_max_m: int, seed: int = 0) -> list[dict[str, object]]:
    """One row per (M, K, N): fp32 median ms and every candidate's speed-up over it."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for m in ms:
        for k in sizes:
            for n in sizes:
                a = torch.randint(0, 2, (m, k), generator=gen).float() * 2 - 1
                b = torch.randint(0, 2, (n, k), generator=gen).float() * 2 - 1
                calls = candidates(a, b, threads, numpy=m <= numpy_max_m)
                med, ratios = interleaved_medians(calls, rounds if m <= 1024 else big_rounds)
                row: dict[str, object] = {"M": m, "K": k, "N": n, "fp32 ms": med["fp32"] * 1e3}
                row.update({f"{name} x": x for name, x in ratios.items()})
                rows.append(row)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table (missing cells: —)."""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    fmt = lambda v: "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def verdicts(rows: list[dict[str, object]]) -> list[str]:
    """One line per target: measured speed-up and met / missed."""
    out = []
    for r in rows:
        if r["M"] == TARGET_M and r["K"] == r["N"] and r["K"] in TARGET_SIZES:
            for path, target in TARGETS.items():
                got = r.get(f"{path} x")
                if isinstance(got, float):
                    state = "met" if got >= target else "MISSED"
                    out.append(f"- {path}, M={TARGET_M}, K=N={r['K']}: {got:.1f}x fp32 (target >= {target:g}x): {state}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: print the table and the target verdicts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="+", default=[1, 197, 64 * 197], help="rows of A (tokens)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 768, 1536, 3072], help="K and N values")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds for M <= 1024")
    parser.add_argument("--big-rounds", type=int, default=3, help="timed rounds for larger M")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and kernel threads")
    parser.add_argument("--numpy-max-m", type=int, default=1024, help="skip the NumPy reference above this M")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: this thread's CPU time (--threads 1 only), for a busy machine")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu measures one thread: use it with --threads 1")
        CLOCK[0] = time.thread_time
    rows = run(args.m, args.sizes, args.rounds, args.big_rounds, args.threads, args.numpy_max_m)
    print(
        f"{engine.cpu_model()}; kernel paths {', '.join(engine.supported_paths())}; torch {torch.__version__}, "
        f"{args.threads} thread(s); {args.clock} clock; {args.rounds} interleaved rounds ({args.big_rounds} for M > 1024); "
        "cells: median per-round speed-up over fp32 torch.mm (x); every packed and int8 product equals the exact one.\n"
    )
    print(markdown(rows))
    print("\n" + "\n".join(verdicts(rows)))


if __name__ == "__main__":
    main()
