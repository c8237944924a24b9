"""The conversion engine: a `Plan` says which quantizer goes in each part of every transformer block (qkv, proj,
fc1, fc2 as weight / activation quantizers; q, k, V and the attention map), in the patch-merging reductions
between stages (Swin `layers.*.downsample.reduction`) and in the patch embedding and heads; `apply_plan`
converts a timm model in place, keeping every weight.

Re-applying a plan is a no-op; applying the next stage's plan upgrades the model: a quantizer whose recipe
(`Q`: class and resolved arguments) is unchanged is kept with its learned parameters, a new one is added, a part
the plan leaves full precision gets its quantizers removed (the Linear object and weights stay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bvbench.errors import BvbenchError
from bvbench.quant import QConv2d
from bvbench.quant.base import FULL, Precision
from bvbench.quant.linear import QLinear
from bvbench.quant.qattention import QAttention, attention_family, to_qattention

LINEAR_PARTS = ("qkv", "proj", "fc1", "fc2")
ATTN_PARTS = ("q", "k", "v", "attn")
HEAD_NAMES = ("head", "head_dist", "head.fc")


class Q:
    """A quantizer recipe: `Q(SignWeight, per_channel=True)`. String arguments starting with `$` are resolved
    per module at conversion time: $in / $out (Linear features), $heads, $head_dim, $tokens (attention)."""

    def __init__(self, cls: type[nn.Module], **kwargs: Any) -> None:
        self.cls, self.kwargs = cls, kwargs

    def resolve(self, ctx: dict[str, int]) -> dict[str, Any]:
        out = {}
        for k, v in self.kwargs.items():
            if isinstance(v, str) and v.startswith("$"):
                if v[1:] not in ctx:
                    raise BvbenchError(f"{self.cls.__name__} needs {v[1:]!r}, which this model part does not have")
                v = ctx[v[1:]]
            out[k] = v
        return out

    def key(self, ctx: dict[str, int]) -> tuple[Any, ...]:
        return (self.cls.__module__, self.cls.__qualname__, tuple(sorted(self.resolve(ctx).items())))

    def build(self, ctx: dict[str, int]) -> nn.Module:
        m = self.cls(**self.resolve(ctx))
        m._bv_key = self.key(ctx)  # type: ignore[assignment]
        return m


def reuse(current: nn.Module | None, want: Q | None, ctx: dict[str, int]) -> nn.Module | None:
    """`current` if it was built from the same recipe (keeps learned parameters), else a fresh one."""
    if want is None:
        return None
    if current is not None and getattr(current, "_bv_key", None) == want.key(ctx):
        return current
    return want.build(ctx)


@dataclass
class LinearPart:
    """Weight and input-activation quantizers of one Linear; `norm`: parameter-free LN before (BitNet)."""

    weight: Q | None = None
    act: Q | None = None
    norm: bool = False

    @property
    def quantized(self) -> bool:
        return self.weight is not None or self.act is not None


@dataclass
class AttnPart:
    """Quantizers of q, k, V and of the attention map; `attn_on`: 'scores' (pre-softmax) or 'probs'."""

    q: Q | None = None
    k: Q | None = None
    v: Q | None = None
    attn: Q | None = None
    attn_on: str = "probs"

    @property
    def quantized(self) -> bool:
        return any(x is not None for x in (self.q, self.k, self.v, self.attn))


@dataclass
class Plan:
    """Which quantizer goes where. Parts absent from `linears` stay full precision; `downsample`: the Linear of
    each patch merging between stages (Swin), None keeps it full precision."""

    linears: dict[str, LinearPart] = field(default_factory=dict)
    attention: AttnPart = field(default_factory=AttnPart)
    head: LinearPart | None = None
    patch_weight: Q | None = None
    downsample: LinearPart | None = None


@dataclass
class Report:
    """What `apply_plan` touched (qualified module names)."""

    linears: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def set_linear(parent: nn.Module, name: str, part: LinearPart | None, qualname: str) -> bool:
    """Make `parent.name` follow `part`; returns True when it is (now) quantized."""
    lin = getattr(parent, name)
    if part is None or not part.quantized:
        if isinstance(lin, QLinear):
            lin.weight_quant, lin.act_quant, lin.norm, lin.precision = None, None, False, FULL
        return False
    if not isinstance(lin, QLinear):
        if type(lin) is not nn.Linear:
            raise BvbenchError(f"{qualname} is a {type(lin).__name__}, not a Linear; cannot quantize it")
        lin = QLinear.from_linear(lin, None, None)  # type: ignore[arg-type]
        setattr(parent, name, lin)
    ctx = {"in": lin.in_features, "out": lin.out_features}
    lin.weight_quant = reuse(lin.weight_quant, part.weight, ctx)
    lin.act_quant = reuse(lin.act_quant, part.act, ctx)
    lin.norm = part.norm
    wp: Precision = getattr(lin.weight_quant, "precision", FULL)
    ap: Precision = getattr(lin.act_quant, "precision", FULL)
    lin.precision = Precision(wp.weight_bits if lin.weight_quant is not None else 32,
                              ap.act_bits if lin.act_quant is not None else 32)
    return True


def blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Transformer blocks: modules with children `attn` and `mlp` (timm ViT/DeiT, Swin, NesT)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "attn", None), nn.Module) and isinstance(getattr(m, "mlp", None), nn.Module)]


def downsamplers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Patch mergings between stages: modules named `downsample` with a Linear `reduction` (timm Swin)."""
    return [(n, m) for n, m in model.named_modules()
            if n.rpartition(".")[2] == "downsample" and isinstance(getattr(m, "reduction", None), nn.Linear)]


def token_count(model: nn.Module, attn_name: str, attn: nn.Module) -> int | None:
    """Tokens N of an attention module's [N, N] map: Swin window area, NesT block length, ViT patches + prefix."""
    if getattr(attn, "window_area", None):
        return int(attn.window_area)  # type: ignore[arg-type]
    mods = dict(model.named_modules())
    parts = attn_name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        anc = mods.get(".".join(parts[:i]))
        pos = getattr(anc, "pos_embed", None)
        if attention_family(attn) == "nest" and pos is not None and pos.dim() == 4:
            return int(pos.shape[2])
        pe = getattr(anc, "patch_embed", None)
        if attention_family(attn) == "vit" and pe is not None and getattr(pe, "num_patches", None):
            return int(pe.num_patches) + int(getattr(anc, "num_prefix_tokens", 1))
    return None


def apply_plan(model: nn.Module, plan: Plan, method: str) -> Report:
    """Convert `model` in place as `plan` says (idempotent; upgrades an earlier stage's conversion)."""
    found = blocks(model)
    if not found:
        raise BvbenchError(f"method {method!r} cannot convert {type(model).__name__}: it has no transformer blocks "
                           "(modules with `attn` and `mlp`); CNN rows (ResNet, VGG) support only method fp")
    rep = Report()
    for bname, block in found:
        attn, mlp = block.attn, block.mlp  # type: ignore[union-attr]
        if attention_family(attn) is None:
            raise BvbenchError(f"method {method!r}: attention {type(attn).__name__} at {bname}.attn is not supported "
                               "(supported: timm ViT/DeiT Attention, Swin WindowAttention, NesT Attention)")
        for part in LINEAR_PARTS:
            owner = attn if part in ("qkv", "proj") else mlp
            if not isinstance(getattr(owner, part, None), nn.Linear):
                raise BvbenchError(f"method {method!r}: {bname} has no Linear {part!r}")
            if set_linear(owner, part, plan.linears.get(part), f"{bname}.{part}"):
                rep.linears.append(f"{bname}.{'attn' if part in ('qkv', 'proj') else 'mlp'}.{part}")
        if plan.attention.quantized or isinstance(attn, QAttention):
            if not isinstance(attn, QAttention):
                (attn,) = to_qattention_single(block)
            ap = plan.attention
            ctx = {"heads": attn.num_heads, "head_dim": attn.head_dim}
            n = token_count(model, f"{bname}.attn", attn)
            if n is not None:
                ctx["tokens"] = n
            attn.set_quantizers(
                ap.attn_on,
                q_quant=reuse(attn.q_quant, ap.q, ctx), k_quant=reuse(attn.k_quant, ap.k, ctx),
                v_quant=reuse(attn.v_quant, ap.v, ctx), attn_quant=reuse(attn.attn_quant, ap.attn, ctx),
            )
            if ap.quantized:
                rep.attention.append(f"{bname}.attn")
    for dname, ds in downsamplers(model):
        if set_linear(ds, "reduction", plan.downsample, f"{dname}.reduction"):
            rep.other.append(f"{dname}.reduction")
    if plan.head is not None:
        for hname in HEAD_NAMES:
            parent_name, _, child = hname.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if isinstance(getattr(parent, child, None), nn.Linear) and set_linear(parent, child, plan.head, hname):
                rep.other.append(hname)
    if plan.patch_weight is not None:
        pe = getattr(model, "patch_embed", None)
        conv = getattr(pe, "proj", None)
        if isinstance(conv, nn.Conv2d):
            ctx = {"out": conv.out_channels, "in": conv.in_channels}
            if isinstance(conv, QConv2d):
                conv.weight_quant = reuse(conv.weight_quant, plan.patch_weight, ctx)
            else:
                pe.proj = QConv2d.from_conv(conv, plan.patch_weight.build(ctx))  # type: ignore[union-attr]
            rep.other.append("patch_embed.proj")
    return rep


def to_qattention_single(block: nn.Module) -> list[QAttention]:
    """Convert the `attn` child of one block."""
    q = QAttention.from_module(block.attn)  # type: ignore[arg-type]
    block.attn = q
    return [q]


__all__ = ["AttnPart", "LinearPart", "Plan", "Q", "Report", "apply_plan", "blocks", "downsamplers", "to_qattention"]
