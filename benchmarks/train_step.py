"""Training-step time (forward + backward + AdamW step) of every method relative to `fp` on the same model:
DeiT-Tiny dims (dim 192, 3 heads, depth 12, MLP 768) at 32x32 with patch 4 (65 tokens), batch 64, CPU.

Each method is timed against a fresh `fp` model in interleaved pairs (the order inside a pair alternates), after
warm-up steps (the first forward initialises the lazy quantizer scales; compiled models compile there); the
figure is the median of the per-pair ratios, so load from other processes that hits both alike cancels.
`--clock cpu` times each step in process CPU time (all of this process's threads; other processes on a shared
machine do not count), which holds under load where wall time does not.
With `--compile`, a second column times both models under `torch.compile` (target: <= 1.15x fp, eager <= 1.3x).

Usage: `python benchmarks/train_step.py [--pairs 7] [--warmup 2] [--batch 64] [--threads 2] [--only gsb,bivit]
[--compile] [--clock cpu]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import timm
import torch
from torch import nn

from bvbench import methods
from bvbench.recipes import MethodSpec

CLOCK = [time.perf_counter]  # --clock cpu: time.process_time

CASES: list[tuple[str, dict[str, Any]]] = [
    ("fp", {}),
    ("bitnet", {}),
    ("bitnet158", {}),
    ("bireal", {}),
    ("bi-vit", {"lsf": True}),
    ("bibert", {}),
    ("bit", {}),
    ("bivit", {"mlp_bits": "1/1"}),
    ("bivit", {"mlp_bits": "1/32"}),
    ("q-vit-1bit", {}),
    ("gsb-baseline", {}),
    ("gsb", {"stage": 1}),
    ("gsb", {}),
]


def build(distilled: bool = False) -> nn.Module:
    name = "deit_tiny_distilled_patch16_224" if distilled else "deit_tiny_patch16_224"
    return timm.create_model(name, pretrained=False, img_size=32, patch_size=4, num_classes=10)


class Stepper:
    """One model + optimizer + fixed batch; `step()` runs one timed training step."""

    def __init__(self, name: str, opts: dict[str, Any], batch: int, compiled: bool = False) -> None:
        torch.manual_seed(0)
        self.model = build()
        methods.apply(self.model, MethodSpec(name=name, **opts))
        self.model.train()
        self.net = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x, self.y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step(self) -> float:
        t0 = CLOCK[0]()
        loss = nn.functional.cross_entropy(self.net(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return CLOCK[0]() - t0


def compare(name: str, opts: dict[str, Any], batch: int, pairs: int, warmup: int,
            compiled: bool = False) -> tuple[float, float, float]:
    """(fp median s, method median s, median of the per-pair ratios method / fp)."""
    fp, other = Stepper("fp", {}, batch, compiled), Stepper(name, opts, batch, compiled)
    for _ in range(warmup):
        fp.step()
        other.step()
    t_fp, t_m = [], []
    for i in range(pairs):
        if i % 2:
            t_m.append(other.step())
            t_fp.append(fp.step())
        else:
            t_fp.append(fp.step())
            t_m.append(other.step())
    ratios = [m / f for f, m in zip(t_fp, t_m, strict=True)]
    return statistics.median(t_fp), statistics.median(t_m), statistics.median(ratios)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=7, help="interleaved (fp, method) step pairs per case")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated method names (each is compared with fp)")
    ap.add_argument("--compile", action="store_true", help="also time both models under torch.compile")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: process CPU time (robust to other load on a shared machine)")
    a = ap.parse_args(argv)
    if a.clock == "cpu":
        CLOCK[0] = time.process_time
    torch.set_num_threads(a.threads)
    only = set(filter(None, a.only.split(",")))
    cases = [c for c in CASES if (not only or c[0] in only) and c[0] != "fp"]
    extra = " | fp compiled (ms) | method compiled (ms) | compiled x fp" if a.compile else ""
    print(f"| method | options | fp step (ms) | method step (ms) | x fp{extra} |   (batch {a.batch}, {a.threads} "
          f"threads, {a.clock} clock, medians of {a.pairs} interleaved pairs)")
    print("|---|---|---:|---:|---:|" + ("---:|---:|---:|" if a.compile else ""))
    for name, opts in cases:
        t_fp, t, r = compare(name, opts, a.batch, a.pairs, a.warmup)
        o = ", ".join(f"{k}={v}" for k, v in opts.items())
        line = f"| {name} | {o} | {1000 * t_fp:.0f} | {1000 * t:.0f} | {r:.2f} |"
        if a.compile:
            c_fp, c, cr = compare(name, opts, a.batch, a.pairs, a.warmup + 1, compiled=True)
            line += f" {1000 * c_fp:.0f} | {1000 * c:.0f} | {cr:.2f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
