"""Methods: which quantizer goes where. `apply(model, spec)` converts a model in place, keeping weights.

Registered methods (options in `bvbench.methods.specs`): fp, bitnet, bitnet158, bireal, bi-vit, bibert, bivit,
bit, q-vit-1bit, gsb-baseline, gsb. Calling `apply` again with the same spec is a no-op; with the next stage's
spec it upgrades the converted model (see `bvbench.methods.convert`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from bvbench.methods.base import METHODS, OPTIONS, MethodFn, register_method, validate_options
from bvbench.recipes.schema import MethodSpec


class FPOptions(BaseModel):
    model_config = {"extra": "forbid"}


def _fp(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Full precision: leaves the model as it is."""
    validate_options("fp", FPOptions, options)
    return model


METHODS.add("fp", _fp, paper="full precision", bits="32-32", options=[])
OPTIONS["fp"] = FPOptions

from bvbench.methods import specs  # noqa: E402,F401  (registers the paper methods)


def apply(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Convert `model` in place as `spec` says and return it."""
    fn = METHODS.get(spec.name)
    return fn(model, spec.options)


__all__ = ["METHODS", "OPTIONS", "MethodFn", "apply", "register_method", "validate_options"]
