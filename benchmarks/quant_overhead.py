"""Forward+backward time of every quantizer relative to the full-precision op it replaces (DeiT-Small shapes,
CPU, median of repeated runs). Usage: `python benchmarks/quant_overhead.py [--batch 8] [--repeats 15]`."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bvbench.quant import QUANTIZERS, QLinear, build_quantizer

DIM, HEADS, TOKENS, MLP = 384, 6, 197, 1536  # DeiT-Small (GSB, Bi-ViT)
HEAD_DIM = DIM // HEADS


CLOCK: Callable[[], float] = time.perf_counter


def _run_once(fn: Callable[[], Tensor], params: list[Tensor]) -> float:
    for p in params:
        p.grad = None
    t0 = CLOCK()
    out = fn()
    out.backward(torch.ones_like(out))
    return CLOCK() - t0


def paired_times(
    base: Callable[[], Tensor], fn: Callable[[], Tensor], params: list[Tensor], repeats: int, warmup: int = 2
) -> tuple[float, float]:
    """Median seconds of one forward + backward of `base` and of `fn`, run alternately so that both see the
    same machine load (the CPU is shared)."""
    tb, tq = [], []
    for i in range(warmup + repeats):
        b, q = _run_once(base, params), _run_once(fn, params)
        if i >= warmup:
            tb.append(b)
            tq.append(q)
    return statistics.median(tb), statistics.median(tq)


def linear_cases(batch: int) -> dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]]:
    """name -> (make weight quantizer, make activation quantizer) for the qkv Linear 384 -> 1152."""
    none = lambda: None  # noqa: E731
    return {
        "sign": (lambda: build_quantizer("sign"), none),
        "sign (per-channel, learnable)": (
            lambda: build_quantizer("sign", learnable_scale=True, out_features=3 * DIM),
            none,
        ),
        "bireal": (lambda: build_quantizer("bireal"), none),
        "bitnet": (lambda: build_quantizer("bitnet"), none),
        "ternary": (lambda: build_quantizer("ternary"), none),
        "absmax (8b, tensor)": (none, lambda: build_quantizer("absmax")),
        "absmax (8b, token, LN)": (
            none,
            lambda: build_quantizer("absmax", granularity="token", layernorm=True),
        ),
        "sign_act": (none, lambda: build_quantizer("sign_act")),
        "approxsign": (none, lambda: build_quantizer("approxsign")),
        "rsign": (none, lambda: build_quantizer("rsign", num_features=DIM)),
        "elastic (signed)": (none, lambda: build_quantizer("elastic", num_features=DIM)),
        "elastic (unsigned)": (none, lambda: build_quantizer("elastic", signed=False, num_features=DIM)),
        "bitnet W1 + absmax A8 + LN": (lambda: build_quantizer("bitnet"), lambda: build_quantizer("absmax")),
    }


def bench_linear(batch: int, repeats: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    x = torch.randn(batch, TOKENS, DIM, requires_grad=True)
    lin = nn.Linear(DIM, 3 * DIM)
    rows = []
    for name, (mw, ma) in linear_cases(batch).items():
        q = QLinear.from_linear(lin, mw(), ma(), norm="LN" in name)
        q(x)  # lazy initialisation
        tb, tq = paired_times(lambda: lin(x), lambda q=q: q(x), [x, *q.parameters()], repeats)
        rows.append((name, tb, tq))
    return rows


def attention_core(bin_q=None, bin_k=None, bin_v=None, on_scores=None, on_probs=None):
    """softmax(q k^T / sqrt d) v with optional binarizers at each place a method puts one."""

    def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = bin_q(q) if bin_q else q
        k = bin_k(k) if bin_k else k
        v = bin_v(v) if bin_v else v
        s = q @ k.transpose(-1, -2) * HEAD_DIM**-0.5
        a = on_scores(s) if on_scores else s.softmax(-1)
        a = on_probs(a) if on_probs else a
        return a @ v

    return run


def bench_attention(batch: int, repeats: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, HEADS, TOKENS, HEAD_DIM, requires_grad=True) for _ in range(3))
    fp = attention_core()
    cases = {
        "bibert (Bool scores)": dict(on_scores=build_quantizer("bibert")),
        "sab (beta=0.25)": dict(on_scores=build_quantizer("sab")),
        "lsf (on q)": dict(bin_q=build_quantizer("lsf", num_heads=HEADS)),
        "lsf (unsigned, on A)": dict(on_probs=build_quantizer("lsf", num_heads=HEADS, signed=False)),
        "elastic (signed, on q)": dict(bin_q=build_quantizer("elastic")),
        "sign_act (on q)": dict(bin_q=build_quantizer("sign_act")),
        "gsb_baseline (stage 2)": dict(on_probs=build_quantizer("gsb_baseline", stage=2)),
        "gsb (k=2, on A)": dict(on_probs=build_quantizer("gsb", num_heads=HEADS, num_tokens=TOKENS)),
        "gsb_v (k=2, on V)": dict(bin_v=build_quantizer("gsb_v", num_heads=HEADS, head_dim=HEAD_DIM)),
        "[combined] lsf on q, k, v, A": dict(
            bin_q=build_quantizer("lsf", num_heads=HEADS),
            bin_k=build_quantizer("lsf", num_heads=HEADS),
            bin_v=build_quantizer("lsf", num_heads=HEADS),
            on_probs=build_quantizer("lsf", num_heads=HEADS, signed=False),
        ),
        "[combined] gsb + gsb_v (k=2)": dict(
            on_probs=build_quantizer("gsb", num_heads=HEADS, num_tokens=TOKENS),
            bin_v=build_quantizer("gsb_v", num_heads=HEADS, head_dim=HEAD_DIM),
        ),
    }
    rows = []
    for name, mods in cases.items():
        run = attention_core(**mods)
        params = [q, k, v] + [p for m in mods.values() for p in m.parameters()]
        run(q, k, v)  # lazy initialisation
        tb, tq = paired_times(lambda: fp(q, k, v), lambda run=run: run(q, k, v), params, repeats)
        rows.append((name, tb, tq))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process time")
    parser.add_argument("--only", choices=("all", "linear", "attention"), default="all")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    print(
        f"DeiT-Small shapes, batch {args.batch}, CPU threads {torch.get_num_threads()}, "
        f"{args.clock} clock, median of {args.repeats} forward+backward runs alternating with the fp op; "
        f"{len(QUANTIZERS)} quantizers registered"
    )
    worst = 0.0
    benches = (("fp op: Linear 384->1152 (qkv)", bench_linear), ("fp op: attention core", bench_attention))
    for title, bench in benches:
        if args.only != "all" and args.only not in title.lower():
            continue
        print(f"\n{title}\n{'quantizer':34s} {'fp ms':>8s} {'quant ms':>9s} {'ratio':>6s}")
        for name, tb, tq in bench(args.batch, args.repeats):
            print(f"{name:34s} {tb * 1e3:8.2f} {tq * 1e3:9.2f} {tq / tb:6.2f}")
            if not name.startswith("[combined]"):
                worst = max(worst, tq / tb)
    print(
        f"\nworst single-quantizer ratio {worst:.2f} (target <= 3; [combined] rows stack several quantizers)"
    )


if __name__ == "__main__":
    main()
