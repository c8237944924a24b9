"""Methods: which quantizer goes where. `apply(model, spec)` converts a model in place, keeping weights.

Registered methods (options in `bvbench.recipes.options`, plans in `bvbench.methods.specs`): fp, bitnet,
bitnet158, bireal, bi-vit, bibert, bivit, bit, q-vit-1bit, gsb-baseline, gsb. Calling `apply` again with the
same spec is a no-op; with the next stage's spec it upgrades the converted model (see `bvbench.methods.convert`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bvbench.errors import BvbenchError
from bvbench.methods import specs  # noqa: F401  (registers the paper methods)
from bvbench.methods.base import METHODS, OPTIONS, MethodFn, register_method
from bvbench.recipes.options import check_method
from bvbench.recipes.schema import MethodSpec


def _fp(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """Full precision: leaves the model as it is."""
    check_method("fp", options)
    return model


METHODS.add("fp", _fp, paper="full precision", bits="32-32", options=[])


def apply(model: nn.Module, spec: MethodSpec | str, **options: Any) -> nn.Module:
    """Convert `model` in place as `spec` says and return it, keeping its weights: a MethodSpec, or a method name
    with keyword options, validated like a recipe's. Works on timm ViT/DeiT, Swin and NesT models (any module
    whose blocks have `attn` and `mlp`); an unknown method or option, or another model, is a BvbenchError.

    >>> import timm, bvbench
    >>> model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    >>> model = bvbench.methods.apply(model, "gsb", k_att=3)
    >>> attn = model.blocks[0].attn
    >>> type(attn).__name__, type(model.blocks[0].mlp.fc1).__name__, attn.attn_quant.k
    ('QAttention', 'QLinear', 3)
    >>> bvbench.methods.apply(timm.create_model("resnet18"), "gsb")
    Traceback (most recent call last):
    bvbench.errors.BvbenchError: method 'gsb' cannot convert ResNet: it has no transformer blocks ...
    """
    if not isinstance(model, nn.Module):
        raise BvbenchError(f"methods.apply converts a torch.nn.Module, not {type(model).__name__}; build one first "
                           "(timm.create_model(...))")
    if isinstance(spec, str):
        spec = MethodSpec(name=spec, **options)
    elif options:
        spec = MethodSpec(name=spec.name, **{**spec.options, **options})
    return METHODS.get(spec.name)(model, spec.options)


__all__ = ["METHODS", "OPTIONS", "MethodFn", "apply", "check_method", "register_method"]
