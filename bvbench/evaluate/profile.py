"""`bvbench profile`: parameters, MACs, BOPs, FLOPs, OPs, sizes and latency of each row, without training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bvbench.build import build_row_model
from bvbench.data import dataset_info
from bvbench.evaluate.complexity import count_complexity, count_macs
from bvbench.evaluate.latency import measure_latency
from bvbench.models import unfused_attention
from bvbench.recipes.schema import MethodSpec, Recipe, Row


def input_shape(row: Row) -> tuple[int, int, int]:
    size = row.data.img_size or dataset_info(row.data.name).img_size
    return (3, size, size)


def converted_model(row: Row, num_classes: int, checkpoint: str | None = None) -> nn.Module:
    """The row's model, every stage's method applied, random weights (no download) or `checkpoint`'s."""
    return build_row_model(row, num_classes, checkpoint, unfused=True).eval()


def fp_macs(row: Row, num_classes: int) -> int:
    """fvcore MACs of the row's full-precision model (the papers' "computational complexity" column)."""
    fp = converted_model(row.model_copy(update={"stages": [], "method": MethodSpec()}), num_classes)
    with unfused_attention(fp):
        return count_macs(fp, input_shape(row))


def complexity_metrics(model: nn.Module, row: Row, fp_macs: int | None = None) -> dict[str, Any]:
    """Flat metrics.json keys (and the per-block list) for one model; per-block keys are block means."""
    shape = input_shape(row)
    with unfused_attention(model):
        c = count_complexity(model, shape, convention=row.eval.complexity, first_last=row.eval.count_first_last)
    out: dict[str, Any] = {
        "params": c.params, "macs": fp_macs if fp_macs is not None else c.macs, "bops": c.bops, "flops": c.flops,
        "ops": c.ops, "size_fp32_mib": c.size_fp32_mib, "size_mb": c.size_mb, "size_mib": c.size_mib,
        "complexity_convention": c.convention, "count_first_last": row.eval.count_first_last,
        "blocks": c.blocks,
    }
    if c.blocks:
        n = len(c.blocks)
        for k in ("attn_bops", "attn_flops", "mlp_bops", "mlp_flops"):
            out[k] = sum(b[k] for b in c.blocks) / n
        out["block_ops"] = sum(b["attn_bops"] / 64 + b["attn_flops"] + b["mlp_bops"] / 64 + b["mlp_flops"]
                               for b in c.blocks) / n
    return out


def profile_row(recipe: Recipe, row: Row, *, checkpoint: str | None = None, latency: bool = False,
                device: torch.device | None = None, threads: int | None = None) -> dict[str, Any]:
    """Everything `bvbench profile` reports for one row."""
    info = dataset_info(row.data.name)
    model = converted_model(row, info.num_classes, checkpoint or None)
    out = {"row": row.name, "label": row.label, "model": row.model.name, "method": row.method.name,
           "input": list(input_shape(row)), **complexity_metrics(model, row, fp_macs(row, info.num_classes))}
    if latency:
        dev = device or torch.device("cpu")
        out["latency"] = measure_latency(model.to(dev), input_shape(row), device=dev, threads=threads,
                                         mode="fake-quantized" if row.method.name != "fp" else "fp32")
        out["latency_ms"] = out["latency"][0]["median_ms"]
    return out
