"""Training-step time (forward + backward + AdamW step) of every method relative to `fp` on the same model:
DeiT-Tiny dims (dim 192, 3 heads, depth 12, MLP 768) at 32x32 with patch 4 (65 tokens), batch 64, CPU.
Each method is timed against a fresh `fp` model with the steps of the two interleaved (fastest step of each),
after warm-up steps (the first forward initialises the lazy quantizer scales).

Usage: `python benchmarks/train_step.py [--steps 5] [--warmup 2] [--batch 64] [--threads 2] [--only gsb,bivit]`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import timm
import torch
from torch import nn

from bvbench import methods
from bvbench.recipes import MethodSpec

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

    def __init__(self, name: str, opts: dict[str, Any], batch: int) -> None:
        torch.manual_seed(0)
        self.model = build()
        methods.apply(self.model, MethodSpec(name=name, **opts))
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x, self.y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step(self) -> float:
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def compare(name: str, opts: dict[str, Any], batch: int, steps: int, warmup: int) -> tuple[float, float]:
    """(fp seconds, method seconds): fastest step of each, the two models' steps interleaved so that load
    from other processes on the machine hits both alike (the minimum is the least disturbed step)."""
    fp, other = Stepper("fp", {}, batch), Stepper(name, opts, batch)
    for _ in range(warmup):
        fp.step()
        other.step()
    t_fp, t_m = [], []
    for _ in range(steps):
        t_fp.append(fp.step())
        t_m.append(other.step())
    return min(t_fp), min(t_m)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated method names (each is compared with fp)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    only = set(filter(None, a.only.split(",")))
    cases = [c for c in CASES if (not only or c[0] in only) and c[0] != "fp"]
    print(f"| method | options | fp step (ms) | method step (ms) | x fp |   (batch {a.batch}, {a.threads} threads, "
          f"fastest of {a.steps} interleaved steps)")
    print("|---|---|---:|---:|---:|")
    for name, opts in cases:
        t_fp, t = compare(name, opts, a.batch, a.steps, a.warmup)
        o = ", ".join(f"{k}={v}" for k, v in opts.items())
        print(f"| {name} | {o} | {1000 * t_fp:.0f} | {1000 * t:.0f} | {t / t_fp:.2f} |", flush=True)


if __name__ == "__main__":
    main()
