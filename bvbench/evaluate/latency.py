"""Inference latency: warm-up, synchronised timing, median / p10 / p90 per batch size."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["device_name", "measure_latency"]


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
    ``mode`` is a caller's label (e.g. ``"fake-quantized"``, ``"packed-unpacked"``) copied to every row.
    Rows hold median / p10 / p90 / mean / min ms per forward pass, images/s (from the median), device, threads.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = torch.device(device)
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    used_threads = torch.get_num_threads()
    was_training = model.training
    model.to(device).eval()
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    name = device_name(device)
    rows: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                x = torch.randn((batch, *shape), device=device, dtype=dtype)
                for _ in range(warmup):
                    model(x)
                _sync(device)
                times_ms = []
                for _ in range(iters):
                    _sync(device)
                    start = time.perf_counter()
                    model(x)
                    _sync(device)
                    times_ms.append((time.perf_counter() - start) * 1e3)
                median = statistics.median(times_ms)
                rows.append(
                    {
                        "mode": mode,
                        "device": str(device),
                        "device_name": name,
                        "threads": used_threads,
                        "batch_size": batch,
                        "dtype": str(dtype).removeprefix("torch."),
                        "warmup": warmup,
                        "iters": iters,
                        "median_ms": median,
                        "p10_ms": float(np.percentile(times_ms, 10)),
                        "p90_ms": float(np.percentile(times_ms, 90)),
                        "mean_ms": statistics.fmean(times_ms),
                        "min_ms": min(times_ms),
                        "images_per_s": batch / (median / 1e3) if median > 0 else float("inf"),
                    }
                )
    finally:
        model.train(was_training)
        torch.set_num_threads(saved_threads)
    return rows
