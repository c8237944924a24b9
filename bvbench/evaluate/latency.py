"""Inference latency: warm-up, synchronised timing, median / p10 / p90 per batch size; several variants of a
model (fp32, simulated, packed) timed interleaved, one forward of each in turn, so that drifting machine load
falls on all of them alike."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["device_name", "measure_latency", "measure_variants"]


def device_name(device: torch.device | str) -> str:
    """Human-readable name of ``device`` (GPU model, or the CPU model from /proc/cpuinfo)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or device.type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Milliseconds of one synchronised forward pass."""
    _sync(device)
    start = time.perf_counter()
    model(x)
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _stats(times_ms: list[float], batch: int) -> dict[str, float]:
    median = statistics.median(times_ms)
    return {
        "median_ms": median,
        "p10_ms": float(np.percentile(times_ms, 10)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": statistics.fmean(times_ms),
        "min_ms": min(times_ms),
        "images_per_s": batch / (median / 1e3) if median > 0 else float("inf"),
    }


def _dtype(model: nn.Module) -> torch.dtype:
    ref = next(iter(model.parameters()), None)
    return ref.dtype if ref is not None and ref.is_floating_point() else torch.float32


@contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` for the block (None: unchanged), restored afterwards."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


def _one_sample(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    return shape[1:] if len(shape) == 4 else shape


def _interleaved(models: Mapping[str, nn.Module], x: torch.Tensor, device: torch.device, warmup: int,
                 iters: int) -> dict[str, list[float]]:
    """Per variant, `iters` timings of one forward each, the variants taking turns after `warmup` each."""
    for model in models.values():
        for _ in range(warmup):
            model(x)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(iters):
        for name, model in models.items():
            times[name].append(_time_once(model, x, device))
    return times


def measure_variants(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    batch_sizes: Sequence[int] = (1, 64),
    threads: Sequence[int | None] = (None,),
    warmup: int = 10,
    iters: int = 30,
) -> list[dict[str, Any]]:
    """Time every model of `models` (name -> model, e.g. fp32 / simulated / packed) on the same random inputs,
    interleaved, for each thread count and batch size; one row per (variant, threads, batch) with ``mode`` =
    the variant's name. Models run in eval mode under ``torch.inference_mode()`` (their mode is restored)."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = torch.device(device)
    shape, name = _one_sample(input_shape), device_name(device)
    training = {k: m.training for k, m in models.items()}
    for m in models.values():
        m.to(device).eval()
    rows: list[dict[str, Any]] = []
    try:
        for t in threads:
            with _threads(t) as used, torch.inference_mode():
                for batch in batch_sizes:
                    dtype = _dtype(next(iter(models.values())))
                    x = torch.randn((batch, *shape), device=device, dtype=dtype)
                    for mode, times in _interleaved(models, x, device, warmup, iters).items():
                        rows.append({"mode": mode, "device": str(device), "device_name": name, "threads": used,
                                     "batch_size": batch, "dtype": str(dtype).removeprefix("torch."),
                                     "warmup": warmup, "iters": iters, **_stats(times, batch)})
    finally:
        for k, m in models.items():
            m.train(training[k])
    return rows


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: torch.device | str,
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = 10,
    iters: int = 30,
    threads: int | None = None,
    mode: str = "fp32",
) -> list[dict[str, Any]]:
    """Time ``model`` on random inputs, one result dict per batch size.

    ``input_shape`` is one sample's shape ``(C, H, W)`` (a leading batch dimension is dropped). The model is
    moved to ``device`` and timed in eval mode under ``torch.inference_mode()``; on CUDA the device is
    synchronised before and after every iteration, so no asynchronous time is ever read. ``threads`` fixes
    ``torch.set_num_threads`` for the measurement (restored afterwards); the number used is reported.
    ``mode`` is a caller's label (e.g. ``"simulated"``, ``"packed"``) copied to every row.
    Rows hold median / p10 / p90 / mean / min ms per forward pass, images/s (from the median), device, threads.
    """
    return measure_variants({mode: model}, input_shape, device=device, batch_sizes=batch_sizes,
                            threads=(threads,), warmup=warmup, iters=iters)
