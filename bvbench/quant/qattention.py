"""QAttention: the quantized self-attention that replaces timm's `Attention` (ViT / DeiT), Swin's
`WindowAttention` and NesT's `Attention` in place, keeping their qkv / proj Linears and every other parameter
(same state_dict keys), with pluggable quantizers for q, k, V and the attention map (Bi-ViT Eq. 1-2, 9-10;
BiViT Eq. 5, 10-12; GSB Eq. 7, 9-13, 26-27), and the attention-map capture used by ranking-aware distillation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import Tensor, nn

from bvbench.errors import BvbenchError
from bvbench.quant.base import FULL, AttentionPrecision, Precision

SLOTS = ("q_quant", "k_quant", "v_quant", "attn_quant")


def attention_family(module: nn.Module) -> str | None:
    """'vit', 'swin' or 'nest' for the attention classes QAttention supports, else None."""
    from timm.layers import Attention
    from timm.models.nest import Attention as NestAttention
    from timm.models.swin_transformer import WindowAttention

    if isinstance(module, QAttention):
        return module.family
    if type(module) is Attention:
        return "vit"
    if type(module) is WindowAttention:
        return "swin"
    if type(module) is NestAttention:
        return "nest"
    return None


class QAttention(nn.Module):
    """Self-attention with quantizers, built from a timm attention module (`from_module`), sharing its modules.

    Forward, for q, k, v of shape [B, H, N, d] (NesT's blocks T are folded into the batch, Swin windows are
    already in it):
      q, k = q_quant(q), k_quant(k); v = v_quant(v)                    (Bi-ViT Eq. 2 / GSB Eq. 7, 26)
      S = (q * d^-0.5) k^T (+ Swin's relative position bias and shift mask)
      A = softmax(S) when no `attn_quant`; attn_quant(S) when `attn_on == "scores"` (BiBERT Bool, BiViT SAB
          take pre-softmax scores); attn_quant(softmax(S)) when `attn_on == "probs"` (GSB, LSF, BiT)
      out = proj(A v)
    With every slot None the output equals the original module's (same op order as timm's unfused path).
    `attn_precision` (quant.base.AttentionPrecision) describes q.k^T and A.V for the complexity counter;
    `capture`, when a list, receives softmax(S) of every forward (ranking-aware distillation, Bi-ViT Eq. 12).
    """

    def __init__(self, family: str) -> None:
        super().__init__()
        self.family = family
        self.q_quant: nn.Module | None = None
        self.k_quant: nn.Module | None = None
        self.v_quant: nn.Module | None = None
        self.attn_quant: nn.Module | None = None
        self.attn_on = "probs"
        self.capture: list[Tensor] | None = None
        self.attn_precision = AttentionPrecision()

    @classmethod
    def from_module(cls, orig: nn.Module) -> QAttention:
        """Adopt `orig`'s child modules, parameters and buffers under the same names (weights untouched)."""
        family = attention_family(orig)
        if family is None:
            raise BvbenchError(f"attention module {type(orig).__name__} is not supported by bvbench methods "
                               "(supported: timm ViT/DeiT Attention, Swin WindowAttention, NesT Attention)")
        if getattr(orig, "gate", None) is not None:
            raise BvbenchError("gated timm attention is not supported by bvbench methods")
        q = cls(family)
        for name, child in orig.named_children():
            q.add_module(name, child)
        for name, p in orig.named_parameters(recurse=False):
            q.register_parameter(name, p)
        non_persistent = getattr(orig, "_non_persistent_buffers_set", set())
        for name, b in orig.named_buffers(recurse=False):
            q.register_buffer(name, b, persistent=name not in non_persistent)
        q.num_heads = int(orig.num_heads)
        qkv: nn.Linear = orig.qkv  # type: ignore[assignment]
        q.head_dim = int(getattr(orig, "head_dim", qkv.out_features // (3 * q.num_heads)))
        q.scale = float(orig.scale)
        q.window_area = getattr(orig, "window_area", None)
        q.train(orig.training)
        return q

    # ------------------------------------------------------------------ quantizer slots
    def set_quantizers(self, attn_on: str = "probs", **slots: nn.Module | None) -> None:
        """Put quantizers in the slots (q_quant, k_quant, v_quant, attn_quant) and refresh `attn_precision`."""
        if attn_on not in ("probs", "scores"):
            raise ValueError(f"attn_on must be 'probs' or 'scores', not {attn_on!r}")
        self.attn_on = attn_on
        for name, mod in slots.items():
            if name not in SLOTS:
                raise ValueError(f"unknown quantizer slot {name!r}; slots are {SLOTS}")
            setattr(self, name, mod)
        self.attn_precision = self.precision()

    def precision(self) -> AttentionPrecision:
        """qk = (bits of k, bits of q), av = (bits of V, bits of A); k_att / k_v = GSB extra masks."""

        def bits(m: nn.Module | None) -> int:
            p: Precision = getattr(m, "precision", FULL) if m is not None else FULL
            return p.act_bits

        return AttentionPrecision(
            qk=Precision(bits(self.k_quant), bits(self.q_quant)),
            av=Precision(bits(self.v_quant), bits(self.attn_quant)),
            k_att=int(getattr(self.attn_quant, "k", 0) or 0),
            k_v=int(getattr(self.v_quant, "k", 0) or 0),
        )

    # ------------------------------------------------------------------ forward
    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """A v for q, k, v [B, H, N, d] with the quantizers in their slots."""
        if self.q_quant is not None:
            q = self.q_quant(q)
        if self.k_quant is not None:
            k = self.k_quant(k)
        if self.v_quant is not None:
            v = self.v_quant(v)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            scores = bias(scores)
        probs = None
        if self.attn_quant is None:
            attn = probs = scores.softmax(dim=-1)
        elif self.attn_on == "scores":
            attn = self.attn_quant(scores)
        else:
            probs = scores.softmax(dim=-1)
            attn = self.attn_quant(probs)
        if self.capture is not None:
            self.capture.append(probs if probs is not None else scores.softmax(dim=-1))
        return self.attn_drop(attn) @ v

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # type: ignore[return-value]

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        if self.family == "nest":
            return self._forward_nest(x)
        if self.family == "swin":
            return self._forward_swin(x, *args, **kwargs)  # type: ignore[arg-type]
        return self._forward_vit(x, *args, **kwargs)  # type: ignore[arg-type]

    def _forward_vit(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise BvbenchError("quantized attention does not support attention masks")
        b, n, _ = x.shape
        q, k, v = self._heads(x)
        q, k = self.q_norm(q), self.k_norm(k)
        out = self.attend(q, k, v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(self.norm(out)))

    def _forward_swin(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self._heads(x)
        rel = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        rel = rel.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, H, N, N]

        def bias(s: Tensor) -> Tensor:
            s = s + rel
            if mask is not None:
                nw = mask.shape[0]
                s = (s.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, n, n)
            return s

        out = self.attend(q, k, v, bias).transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(out))

    def _forward_nest(self, x: Tensor) -> Tensor:
        b, t, n, c = x.shape
        q, k, v = self._heads(x.reshape(b * t, n, c))
        # NesT orders the output channels (head_dim, heads), not (heads, head_dim): keep its proj's layout
        out = self.attend(q, k, v).permute(0, 2, 3, 1).reshape(b, t, n, c)
        return self.proj_drop(self.proj(out))


def attention_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, child name, module) of every supported attention module (converted or not), in order."""
    out = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if attention_family(child) is not None:
                out.append((parent, name, child))
    return out


def to_qattention(model: nn.Module) -> list[QAttention]:
    """Replace every supported attention module by a QAttention (no quantizers yet); returns all of them."""
    out = []
    for parent, name, child in attention_modules(model):
        if not isinstance(child, QAttention):
            child = QAttention.from_module(child)
            setattr(parent, name, child)
        out.append(child)
    return out


@contextlib.contextmanager
def attention_maps(model: nn.Module | None, enabled: bool = True) -> Iterator[list[Tensor]]:
    """Collect softmax(q k^T / sqrt(d)) of every QAttention of `model` during the block, in forward order.
    Disabled or no model: yields an empty list and records nothing."""
    maps: list[Tensor] = []
    mods = [m for m in model.modules() if isinstance(m, QAttention)] if (enabled and model is not None) else []
    if enabled and model is not None and not mods:
        raise BvbenchError("attention maps were requested but the model has no bvbench attention modules "
                           "(convert it with bvbench.quant.qattention.to_qattention)")
    for m in mods:
        m.capture = maps
    try:
        yield maps
    finally:
        for m in mods:
            m.capture = None


def capturable(model: nn.Module) -> nn.Module:
    """Make a full-precision model's attention maps visible to `attention_maps` (e.g. the teacher of
    ranking-aware distillation): its attention modules become QAttention with no quantizer, same outputs."""
    if not to_qattention(model):
        raise BvbenchError(f"{type(model).__name__} has no attention module bvbench can read attention maps from")
    return model


__all__ = ["QAttention", "attention_family", "attention_maps", "attention_modules", "capturable", "to_qattention"]
