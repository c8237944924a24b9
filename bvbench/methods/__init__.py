"""Methods: which quantizer goes where. `apply(model, spec)` converts a model in place, keeping weights."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bvbench.recipes import MethodSpec
from bvbench.registry import Registry

MethodFn = Callable[[nn.Module, dict], nn.Module]
METHODS: Registry[MethodFn] = Registry("method")


@METHODS.register("fp", paper="full precision", bits="32/32")
def _fp(model: nn.Module, options: dict) -> nn.Module:
    """Full precision: leaves the model as it is."""
    return model


def apply(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """Convert `model` in place as `spec` says and return it."""
    fn = METHODS.get(spec.name)
    return fn(model, spec.options)
