"""`bvbench profile`: parameters, MACs, BOPs, FLOPs, OPs, sizes and latency of each row, without training."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from bvbench.build import build_row_model
from bvbench.data import dataset_info
from bvbench.engine import cpu_flags, cpu_model, kernel_path
from bvbench.engine.convert import compile_model
from bvbench.errors import BvbenchError
from bvbench.evaluate.complexity import count_complexity, count_macs
from bvbench.evaluate.export import freeze_weights, packed_file_bytes
from bvbench.evaluate.latency import measure_variants
from bvbench.models import unfused_attention
from bvbench.recipes.schema import MethodSpec, Recipe, Row


def input_shape(row: Row) -> tuple[int, int, int]:
    size = row.data.img_size or dataset_info(row.data.name).img_size
    return (3, size, size)


def converted_model(row: Row, num_classes: int, checkpoint: str | None = None) -> nn.Module:
    """The row's model, every stage's method applied, random weights (no download) or `checkpoint`'s."""
    return build_row_model(row, num_classes, checkpoint, unfused=True).eval()


def _fp_row(row: Row) -> Row:
    return row.model_copy(update={"stages": [], "method": MethodSpec()})


def fp_macs(row: Row, num_classes: int) -> int:
    """fvcore MACs of the row's full-precision model (the papers' "computational complexity" column)."""
    fp = converted_model(_fp_row(row), num_classes)
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


def packed_engine(model: nn.Module) -> nn.Module:
    """A copy of `model` with its weights frozen to their codes and compiled into the packed engine."""
    frozen = copy.deepcopy(model).eval()
    return compile_model(frozen, freeze_weights(frozen))


def latency_variants(row: Row, num_classes: int, checkpoint: str | None, device: torch.device
                     ) -> tuple[dict[str, nn.Module], str | None]:
    """fp32 (the timm model, random weights), simulated (fake-quantized) and packed (the engine, CPU) models
    of the row, fused attention; and why packed is missing, if it is."""
    variants: dict[str, nn.Module] = {"fp32": build_row_model(_fp_row(row), num_classes).eval()}
    if row.method.name == "fp" and not row.stages:
        return variants, None
    simulated = build_row_model(row, num_classes, checkpoint).eval()
    variants["simulated"] = simulated
    if device.type != "cpu":
        return variants, "the packed engine runs on the CPU only"
    try:
        variants["packed"] = packed_engine(simulated)
    except BvbenchError as e:
        return variants, str(e)
    return variants, None


def thread_counts(threads: int | None) -> tuple[int, ...]:
    """1 thread and all threads (`threads`, default torch's current count)."""
    most = threads or torch.get_num_threads()
    return (1,) if most <= 1 else (1, most)


def latency_metrics(row: Row, num_classes: int, checkpoint: str | None, device: torch.device,
                    threads: int | None) -> dict[str, Any]:
    """`profile --latency`: fp32 / simulated / packed at batch 1 and 64, 1 and all threads, interleaved;
    `latency_ms` (the papers' column) is the packed engine's batch-1 median at all threads where it runs."""
    variants, note = latency_variants(row, num_classes, checkpoint, device)
    rows = measure_variants(variants, input_shape(row), device=device, batch_sizes=(1, 64),
                            threads=thread_counts(threads))
    source = "packed" if "packed" in variants else "simulated" if "simulated" in variants else "fp32"
    b1 = [r for r in rows if r["mode"] == source and r["batch_size"] == 1]
    return {"latency": rows, "latency_ms": b1[-1]["median_ms"], "latency_source": source,
            "packed_note": note, "kernel_path": kernel_path(), "cpu": cpu_model(), "cpu_flags": list(cpu_flags())}


def profile_row(recipe: Recipe, row: Row, *, checkpoint: str | None = None, latency: bool = False,
                device: torch.device | None = None, threads: int | None = None) -> dict[str, Any]:
    """Everything `bvbench profile` reports for one row."""
    info = dataset_info(row.data.name)
    model = converted_model(row, info.num_classes, checkpoint or None)
    out = {"row": row.name, "label": row.label, "model": row.model.name, "method": row.method.name,
           "input": list(input_shape(row)), **complexity_metrics(model, row, fp_macs(row, info.num_classes))}
    out["bvb_bytes"] = packed_file_bytes(model, {"row": row.model_dump(mode="json")})
    out["bvb_vs_fp32"] = out["bvb_bytes"] / (out["size_fp32_mib"] * 2**20)
    if latency:
        out.update(latency_metrics(row, info.num_classes, checkpoint or None, device or torch.device("cpu"),
                                   threads))
    return out
