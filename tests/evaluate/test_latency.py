"""Latency measurement: eval + inference mode, warm-up, iteration count, statistics, threads, CUDA sync."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from bvbench.evaluate import latency
from bvbench.evaluate.latency import measure_latency


class Probe(nn.Module):
    """Tiny model that records how it was called."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls: list[tuple[int, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], self.training, torch.is_inference_mode_enabled()))
        return self.conv(x).mean(dim=(1, 2, 3))


def test_rows_statistics_and_modes() -> None:
    model = Probe().train()
    threads_before = torch.get_num_threads()
    rows = measure_latency(
        model, (3, 8, 8), device="cpu", batch_sizes=(1, 4), warmup=2, iters=5, threads=1, mode="fake-quantized"
    )
    assert [r["batch_size"] for r in rows] == [1, 4]
    for row in rows:
        assert row["mode"] == "fake-quantized" and row["device"] == "cpu" and row["device_name"]
        assert row["threads"] == 1 and row["iters"] == 5 and row["warmup"] == 2
        assert 0 < row["min_ms"] <= row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["images_per_s"] == pytest.approx(row["batch_size"] / (row["median_ms"] / 1e3))
    # every forward ran in eval mode under inference_mode: 2 warm-up + 5 timed per batch size
    assert [c[0] for c in model.calls] == [1] * 7 + [4] * 7
    assert all(not training and inference for _, training, inference in model.calls)
    assert model.training  # restored
    assert torch.get_num_threads() == threads_before  # restored


def test_defaults_and_arguments() -> None:
    params = inspect.signature(measure_latency).parameters
    assert params["iters"].default >= 30 and params["warmup"].default == 10
    assert params["batch_sizes"].default == (1, 64)
    with pytest.raises(ValueError):
        measure_latency(Probe(), (3, 8, 8), device="cpu", iters=0)
    rows = measure_latency(Probe(), (2, 3, 8, 8), device="cpu", batch_sizes=(3,), warmup=0, iters=2)
    assert rows[0]["batch_size"] == 3 and rows[0]["threads"] == torch.get_num_threads()


def test_cuda_time_is_read_after_synchronising(monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    latency._sync(torch.device("cpu"))
    assert synced == []
    latency._sync(torch.device("cuda", 0))
    assert synced == [torch.device("cuda", 0)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_run() -> None:
    rows = measure_latency(Probe(), (3, 8, 8), device="cuda", batch_sizes=(2,), warmup=2, iters=3)
    assert rows[0]["device_name"] == torch.cuda.get_device_name(0)


def test_variants_are_timed_interleaved() -> None:
    from bvbench.evaluate.latency import measure_variants

    order: list[str] = []

    class Tag(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            order.append(self.name)
            return x

    rows = measure_variants({"a": Tag("a"), "b": Tag("b")}, (3, 4, 4), batch_sizes=(1, 2), threads=(1, 2),
                            warmup=1, iters=3)
    assert [(r["mode"], r["threads"], r["batch_size"]) for r in rows] == [
        (m, t, b) for t in (1, 2) for b in (1, 2) for m in ("a", "b")]
    assert order[:8] == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-up a, b, then a, b taking turns
