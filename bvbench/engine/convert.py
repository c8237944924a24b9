"""Turn a loaded model (a .bvb file's, or a freshly built row's) into the packed engine: every QLinear becomes
a PackedLinear fed by its stored weight codes and every ViT/DeiT QAttention a PackedAttention. Whatever the
kernels cannot run exactly is refused with a one-line BvbenchError naming the layer; nothing silently falls
back to fake quantization."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from bvbench.engine import acts
from bvbench.engine.layers import PackedAttention, PackedLinear, WeightCodes
from bvbench.errors import BvbenchError
from bvbench.quant import QAttention, QLinear

__all__ = ["compile_model", "engine_family"]

SUPPORTED_FAMILIES = ("vit",)
_BINARY_INPUT = {acts.SIGNED: "binary", acts.MASK: "mask"}


def engine_family(model: nn.Module) -> str:
    """'vit' for timm VisionTransformer models (ViT, DeiT), else the model's class name."""
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return "vit"
    attn = next((m for m in model.modules() if isinstance(m, QAttention)), None)
    return attn.family if attn is not None else type(model).__name__


def _linear_mode(name: str, q: QLinear, codes: WeightCodes | None) -> str:
    kind = acts.kind_of(q.act_quant)
    if kind is None:
        raise BvbenchError(f"engine does not support the activation quantizer {type(q.act_quant).__name__} "
                           f"of layer {name} yet")
    if kind == "none" or q.weight_quant is None:
        return "float"  # real inputs (W1A32) or real weights (W32A1): the method's own arithmetic is fp32
    stored = codes.kind if codes is not None else "fp32 (dequantized)"
    if kind in _BINARY_INPUT and stored == "bits1":
        return _BINARY_INPUT[kind]
    if kind == acts.INT8 and stored in ("bits1", "bits2", "bits8"):
        return "int8"
    raise BvbenchError(f"engine does not support layer {name} yet: {kind} inputs with weights stored as {stored}")


def _attention_binary(name: str, q: QAttention) -> bool:
    kinds = {s: acts.kind_of(getattr(q, s)) for s in ("q_quant", "k_quant", "v_quant", "attn_quant")}
    if all(k == "none" for k in kinds.values()):
        return False
    if (kinds["q_quant"] == kinds["k_quant"] == acts.SIGNED and kinds["v_quant"] in (acts.SIGNED, acts.GSB_V)
            and kinds["attn_quant"] in (acts.MASK, acts.GSB_ATT)):
        return True
    parts = ", ".join(f"{s.removesuffix('_quant')}={type(getattr(q, s)).__name__}" for s in kinds)
    raise BvbenchError(f"engine does not support the attention quantizers of {name} yet ({parts})")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def compile_model(model: nn.Module, weights: Mapping[str, tuple[str, Tensor, Tensor]]) -> nn.Module:
    """`model` (eval mode, CPU) with its layers replaced in place by the engine's. `weights` maps a layer name
    to (kind, codes, scale) of its stored weight (bits1 / bits2 / bits8, see evaluate.export); a quantized
    layer missing from it was stored dequantized and can only run where the method keeps fp32 arithmetic."""
    family = engine_family(model)
    if family not in SUPPORTED_FAMILIES:
        raise BvbenchError(f"engine does not support {family} yet (supported: ViT / DeiT)")
    model.eval()
    for name, m in list(model.named_modules()):
        if isinstance(m, QLinear):
            entry = weights.get(name)
            codes = WeightCodes(*entry) if entry is not None else None
            _replace(model, name, PackedLinear(m, _linear_mode(name, m, codes), codes))
    for name, m in list(model.named_modules()):
        if isinstance(m, QAttention):
            _replace(model, name, PackedAttention(m, m.qkv, m.proj, _attention_binary(name, m)))
    return model
