"""The model families `methods.apply` converts: timm architectures whose attention module QAttention wraps."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    attention: str  # the timm attention class `methods.apply` replaces
    patterns: tuple[str, ...]  # timm model names of the family
    note: str = ""


FAMILIES = (
    Family("ViT / DeiT", "timm.layers.Attention", ("vit_*", "deit_*", "deit3_*"),
           "plain VisionTransformer variants; relpos, SAM and other attention classes are not converted"),
    Family("Swin", "swin_transformer.WindowAttention", ("swin_*",), "Swin v1 (not swinv2_*)"),
    Family("NesT", "nest.Attention", ("nest_*", "jx_nest_*")),
    Family("torchvision CNN", "—", ("resnet18", "resnet50", "vgg16", "vgg16_bn"),
           "full precision only: the CNN baselines of the tables"),
)


def family_of(model_name: str) -> Family | None:
    """The family whose patterns match `model_name`, or None."""
    return next((f for f in FAMILIES if any(fnmatch.fnmatch(model_name, p) for p in f.patterns)), None)
