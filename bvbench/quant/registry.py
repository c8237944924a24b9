"""The quantizer registry: `@QUANTIZERS.register(name, kind=..., bits=..., paper=...)` and `build_quantizer`."""

from __future__ import annotations

from typing import Any

from torch import nn

from bvbench.registry import Registry

QUANTIZERS: Registry[type[nn.Module]] = Registry("quantizer")
"""Quantizer classes by name; meta: kind ("weight" | "activation" | "attention"), bits, paper."""


def build_quantizer(name: str, **options: Any) -> nn.Module:
    """Instantiate the registered quantizer `name` with its keyword options."""
    return QUANTIZERS.get(name)(**options)
