"""The one build layer: a row's model with every stage's method applied (and optionally its checkpoint), the
device choice and the version of what the methods compute (part of every run id)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bvbench import methods
from bvbench.errors import BvbenchError
from bvbench.models import build_model, load_state, unfused_attention
from bvbench.recipes.schema import Row

METHODS_VERSION = "f13a5c2e"
"""The version of what the quantizers and methods compute, part of every run's identity. It began as a hash of
their sources; change it (to any new string) with every change that alters their numbers, and leave it as it
is for changes that do not (speed, refactoring), so finished runs stay valid and are reused."""


FP_METHODS_VERSION = "d6e30f6b"
"""The version in the identity of a row that runs no quantizer (method fp in every stage): a change of the
quantizers alters none of its numbers, so it keeps the ids it had (fp teachers are not rerun for it)."""


def methods_version(row: Row | None = None) -> str:
    """The code version of the methods in a run's identity (see `METHODS_VERSION`; `FP_METHODS_VERSION` for a
    `row` that is full precision in every stage)."""
    if row is not None and all(s.method is None or s.method.name == "fp" for s in row.resolved_stages()):
        return FP_METHODS_VERSION
    return METHODS_VERSION


def pick_device(name: str) -> torch.device:
    """`--device auto|cpu|cuda` as a torch device; cuda without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BvbenchError("--device cuda: no CUDA device is available on this machine (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise BvbenchError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def apply_stages(model: nn.Module, row: Row) -> nn.Module:
    """Convert `model` in place with every stage's method, in order (the row's final architecture)."""
    for stage in row.resolved_stages():
        assert stage.method is not None
        methods.apply(model, stage.method)
    return model


def build_row_model(row: Row, num_classes: int, checkpoint: str | Path | dict[str, torch.Tensor] | None = None, *,
                    stages: bool = True, unfused: bool = False) -> nn.Module:
    """The row's model from random weights (no download, no `model.checkpoint`), every stage's method applied
    (`stages`), the weights of `checkpoint` (a file or a state_dict) loaded. `unfused`: timm attention built
    unfused, so a complexity counter sees q k^T and A V."""
    cfg = row.model.model_copy(update={"pretrained": False, "checkpoint": None})
    if unfused:
        with unfused_attention():
            model = build_model(cfg, num_classes)
    else:
        model = build_model(cfg, num_classes)
    if stages:
        apply_stages(model, row)
    if checkpoint is not None:
        state = checkpoint if isinstance(checkpoint, dict) else load_state(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            where = f"checkpoint {checkpoint}" if not isinstance(checkpoint, dict) else "the checkpoint"
            raise BvbenchError(f"{where} does not match row {row.name!r}: {str(e).splitlines()[0]}") from None
    return model


__all__ = ["METHODS_VERSION", "apply_stages", "build_row_model", "methods_version", "pick_device"]
