"""End-to-end latency of bvbench's packed engine against the fp32 timm model and the fake-quantized
(`simulated`) model, per method, on DeiT-Tiny and DeiT-Small at 224 px and the cpu-profile ViT.

Each model has random weights (latency does not depend on them), is converted by the method and frozen to its
weight codes as a .bvb file stores them (`evaluate.export.freeze_weights`), then compiled into the engine
(`engine.convert.compile_model`). fp32, simulated and packed are timed in interleaved rounds (one forward of
each per round, the order rotating) under ``torch.inference_mode()``; the table gives medians and the speed-up,
the median over rounds of fp32 / packed in the same round. The
packed forward is split into the time spent in the engine's kernels (bit packing, popcount GEMMs, int8
``_int_mm``: wall-clock timers around every call) and the rest (LayerNorm, softmax, GELU, residuals, the
quantizers' elementwise parts and the fp32 layers the method keeps: patch embedding, head).

Run: ``.venv/bin/python benchmarks/engine_latency.py [--threads 1] [--batch 1] [--rounds 10]``.
Targets (DeiT-Small 224 px, batch 1, 1 thread): W1A1 rows (bibert, gsb-baseline, bivit) >= 4x faster than
fp32; W1A8 BitNet rows >= 2.5x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import timm
import torch
from torch import nn

import bvbench.engine as engine
import bvbench.engine.layers as layers
from bvbench import methods
from bvbench.engine.convert import compile_model
from bvbench.evaluate.export import freeze_weights
from bvbench.recipes.schema import MethodSpec

MODELS: dict[str, dict[str, object]] = {
    "deit-tiny-224": {"name": "deit_tiny_patch16_224", "img_size": 224},
    "deit-small-224": {"name": "deit_small_patch16_224", "img_size": 224},
    "cpu-vit-32": {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 4, "embed_dim": 128,
                   "depth": 4, "num_heads": 4, "mlp_ratio": 2.0},
}  # fmt: skip
METHODS = {"bibert": "W1A1", "gsb-baseline": "W1A1", "bivit": "W1A1", "bitnet": "W1A8", "bitnet158": "W1.58A8"}
CLOCK = [time.perf_counter]  # --clock cpu: time.thread_time (this thread's CPU time: a shared machine's other
# processes do not count; valid with one thread only, the kernels then run on the calling thread)
TARGETS = {"W1A1": 4.0, "W1A8": 2.5}
TARGET_MODEL = "deit-small-224"
KERNELS = ("pack_matmul", "binary_matmul", "mask_matmul", "int8_matmul", "int8_epilogue", "pack_signs", "pack_panels",
           "pack_bool_panels")  # those of them the engine's layers call


def build(model: str, method: str) -> tuple[nn.Module, nn.Module, nn.Module, int]:
    """(fp32, simulated, packed, image size) for one model and method, random weights."""
    cfg = dict(MODELS[model])
    name = str(cfg.pop("name"))
    torch.manual_seed(0)
    fp = timm.create_model(name, pretrained=False, num_classes=10, **cfg).eval()  # type: ignore[arg-type]
    sim = timm.create_model(name, pretrained=False, num_classes=10, **cfg)  # type: ignore[arg-type]
    sim.load_state_dict(fp.state_dict())
    methods.apply(sim, MethodSpec(name=method))
    sim.eval()
    size = int(cfg["img_size"])  # type: ignore[call-overload]
    with torch.inference_mode():
        sim(torch.randn(2, 3, size, size))  # learnable scales initialise on a first batch
    packed = copy.deepcopy(sim)
    return fp, sim, compile_model(packed, freeze_weights(packed)), size


@contextmanager
def kernel_timer() -> Iterator[list[float]]:
    """Accumulates the seconds spent in the engine's kernel calls (as the layers call them) into acc[0]."""
    acc = [0.0]
    saved = {k: getattr(layers, k) for k in KERNELS if hasattr(layers, k)}

    def timed(fn: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            t = CLOCK[0]()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[0] += CLOCK[0]() - t

        return call

    for k, fn in saved.items():
        setattr(layers, k, timed(fn))
    try:
        yield acc
    finally:
        for k, fn in saved.items():
            setattr(layers, k, fn)


def time_row(fp: nn.Module, sim: nn.Module, packed: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Interleaved medians (ms) of fp32, simulated and packed, packed's median kernel share (ms) and `speedup`,
    the median over rounds of fp32 / packed in the same round (the order inside a round rotates)."""
    times: dict[str, list[float]] = {"fp32": [], "simulated": [], "packed": [], "kernels": []}
    models = [("fp32", fp), ("simulated", sim), ("packed", packed)]
    with torch.inference_mode(), kernel_timer() as acc:
        for _, m in models:
            m(x)
        for r in range(rounds):
            for name, m in models[r % 3:] + models[:r % 3]:
                acc[0] = 0.0
                t = CLOCK[0]()
                m(x)
                times[name].append((CLOCK[0]() - t) * 1e3)
                if name == "packed":
                    times["kernels"].append(acc[0] * 1e3)
    speedup = statistics.median(f / p for f, p in zip(times["fp32"], times["packed"], strict=True))
    return {**{k: statistics.median(v) for k, v in times.items()}, "speedup": speedup}


def run(models: Sequence[str], names: Sequence[str], batch: int, rounds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for model in models:
        for method in names:
            fp, sim, packed, size = build(model, method)
            t = time_row(fp, sim, packed, torch.randn(batch, 3, size, size), rounds)
            rows.append({"model": model, "method": method, "bits": METHODS[method], **t})
            print(f"  {model} {method}: fp32 {t['fp32']:.2f} ms, simulated {t['simulated']:.2f} ms, packed "
                  f"{t['packed']:.2f} ms (kernels {t['kernels']:.2f} ms)", flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    head = ("| model | method | bits | fp32 (ms) | simulated (ms) | packed (ms) | kernels (ms) | rest (ms) "
            "| packed vs fp32 | target | verdict |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        fp, pk, kern = float(r["fp32"]), float(r["packed"]), float(r["kernels"])  # type: ignore[arg-type]
        target = TARGETS.get(str(r["bits"])) if r["model"] == TARGET_MODEL else None
        speed = float(r["speedup"])  # type: ignore[arg-type]
        verdict = "—" if target is None else "met" if speed >= target else "missed"
        out.append(f"| {r['model']} | {r['method']} | {r['bits']} | {fp:.2f} | {float(r['simulated']):.2f} "  # type: ignore[arg-type]
                   f"| {pk:.2f} | {kern:.2f} | {pk - kern:.2f} | {speed:.2f}x "
                   f"| {f'≥ {target:.1f}x' if target else '—'} | {verdict} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Time every model and method, print the Markdown table and the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the kernels follow them)")
    parser.add_argument("--rounds", type=int, default=10, help="timed interleaved rounds")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: perf_counter; cpu: this thread's CPU time (--threads 1 only), for a busy machine")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu measures one thread: use it with --threads 1")
        CLOCK[0] = time.thread_time
    torch.set_num_threads(args.threads)
    rows = run(args.models, args.methods, args.batch, args.rounds)
    print(f"\nbatch {args.batch}, {torch.get_num_threads()} thread(s), {args.clock} clock, {args.rounds} interleaved rounds (order rotating), medians; speed-up = median of per-round ratios; "
          f"kernel path {engine.kernel_path()}; CPU {engine.cpu_model()} ({', '.join(engine.cpu_flags())})\n")
    print(markdown(rows))
    print("\nkernels = bit packing + popcount GEMMs + int8 _int_mm inside the packed forward; rest = everything "
          "else (LayerNorm, softmax, GELU, residuals, quantizers' elementwise parts, fp32 layers).")


if __name__ == "__main__":
    main()
