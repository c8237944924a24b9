"""The method registry: `@register_method(name, OptionsModel, paper=..., bits=...)` on a function that turns
validated options into a conversion `Plan`; the registered callable converts a model in place. The options
models are declared in `bvbench.recipes.options` (validated when a recipe loads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from torch import nn

from bvbench.methods.convert import apply_plan
from bvbench.recipes.options import METHOD_OPTIONS, check_method
from bvbench.registry import Registry

MethodFn = Callable[[nn.Module, dict[str, Any]], nn.Module]
METHODS: Registry[MethodFn] = Registry("method")
OPTIONS = METHOD_OPTIONS


def register_method(name: str, options: type[BaseModel], **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(model, opts) -> Plan` as method `name` (its options model must be the one
    `bvbench.recipes.options.METHOD_OPTIONS` declares); the stored callable validates the options, applies the
    plan in place and returns the model."""
    if METHOD_OPTIONS.get(name) is not options:
        raise ValueError(f"method {name!r}: declare its options model in bvbench.recipes.options.METHOD_OPTIONS")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def convert(model: nn.Module, opts: dict[str, Any]) -> nn.Module:
            apply_plan(model, fn(model, check_method(name, opts)), name)
            return model

        convert.__doc__ = fn.__doc__
        METHODS.add(name, convert, options=sorted(options.model_fields), **meta)
        return fn

    return deco
