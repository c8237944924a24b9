"""The method registry: `@register_method(name, OptionsModel, paper=..., bits=...)` on a function that turns
validated options into a conversion `Plan`; the registered callable converts a model in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from bvbench.errors import BvbenchError
from bvbench.methods.convert import apply_plan
from bvbench.registry import Registry, suggest

MethodFn = Callable[[nn.Module, dict[str, Any]], nn.Module]
METHODS: Registry[MethodFn] = Registry("method")
OPTIONS: dict[str, type[BaseModel]] = {}


def validate_options(name: str, model: type[BaseModel], options: dict[str, Any]) -> BaseModel:
    """`model(**options)`, or a BvbenchError naming the method, the option and the closest valid names."""
    try:
        return model(**options)
    except ValidationError as e:
        fields = list(model.model_fields)
        lines = []
        for err in e.errors():
            opt = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                valid = ", ".join(fields) or "none"
                lines.append(f"method {name!r}: unknown option {opt!r}.{suggest(opt, fields)} (options: {valid})")
            else:
                lines.append(f"method {name!r}: option {opt!r}: {err['msg']}")
        raise BvbenchError("; ".join(lines)) from None


def register_method(name: str, options: type[BaseModel], **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(model, opts) -> Plan` as method `name`; the stored callable validates the options,
    applies the plan in place and returns the model."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def convert(model: nn.Module, opts: dict[str, Any]) -> nn.Module:
            o = validate_options(name, options, opts)
            apply_plan(model, fn(model, o), name)
            return model

        convert.__doc__ = fn.__doc__
        METHODS.add(name, convert, options=sorted(options.model_fields), **meta)
        OPTIONS[name] = options
        return fn

    return deco
