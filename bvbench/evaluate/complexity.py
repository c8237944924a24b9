"""Model complexity: parameters, sizes, MACs (fvcore) and a precision-aware BOPs / FLOPs / OPs counter.

Conventions (checked against the papers' tables, see ``tests/evaluate/test_complexity.py``):

* **MACs.** One multiply-add is one MAC; fvcore calls it one "flop", so :func:`count_macs` returns fvcore's
  total (it also counts LayerNorm/BatchNorm/pooling, < 0.5 % of a ViT). ViT-B/16 = 17.58 G, ResNet-18 =
  1.82 G, VGG16 = 15.47 G (paper 1 Table 1: 17.59 / 1.82 / 15.52).
* **OPs = BOPs / 64 + FLOPs** (Bi-Real Net, ReActNet; GSB Table IX; Bi-ViT Table 2). A product counts as
  BOPs when *both* operands are 1-bit (``Precision(1, 1)``: XNOR + popcount). A product with one real operand
  (W1A32, BiViT's binary-weight MLP) stays in FLOPs: its multiplies become additions, and the papers count
  them as FLOPs. A product with both operands low-bit (e.g. W4A4) counts ``macs * f(b_w, b_a)`` BOPs:
  ``f = b_w * b_a`` by default (the usual BOPs definition), or, in the ``"bi-vit"`` convention,
  ``f = 2 ** (max(b_w, b_a) - 1)``, which is what Bi-ViT Table 2's Q-ViT rows imply (their 4-4 / 3-3 / 2-2 OPs
  are the real-valued OPs / 8 / 16 / 32; ``b_w * b_a / 64`` would give / 4 / 7.1 / 16 and does not match).
* **FLOPs** = MACs of the real-valued products + the element-wise real work that quantized products need,
  priced by a :class:`CostModel` (named presets in :data:`CONVENTIONS`). Work common to real and binary models
  (LayerNorm, GELU, residual adds, and the softmax of real attention) is never counted, exactly like GSB Eq. 37 and
  the real-valued rows of both tables, which count only the products.

  - ``"bi-vit"`` (default): 1 FLOP per activation element quantized at the input of a quantized Linear/Conv,
    nothing else. With every Linear/Conv (patch embedding and head included, although the paper says they are
    kept real-valued) and the attention matmuls at 1-1, this reproduces Bi-ViT Table 2's 1-1 OPs at the
    printed precision (DeiT-T 0.229e8 prints as 0.2; the others within 2.4 %), its real-valued OPs within 2 % and
    its Q-ViT rows within 6 % (the plain ``MACs / 64`` is 10-12 % low for DeiT-S and Swin-T 1-1).
  - ``"gsb"`` (GSB Table IX, per DeiT-S block, n = 198 tokens incl. the distillation token, d = 384, H = 6). The
    paper prints only the totals of each cell; they are exactly (unique small-integer fit to the printed digits)
    baseline attention 27 nd + 3 H n^2, MLP 20 nd; GSB attention 30 nd + 7 H n^2, MLP 15 nd. The MLP drop is the
    paper's own remark (Sec. IV-B): learned activation scale/offset "avoid the calculation of the mean and the norm".
    Prices per element: a quantized Linear input 3 with XNOR statistics (mean, L1 norm, shift; a quantizer with
    ``statistics = True``) or 2 learned (shift, scale); its output 1 (rescale); q, k, V operands as the inputs;
    the map A 3 per score (scale, divide, round-clip; q.k^T / sqrt(d) and the softmax are the real model's too);
    the A.V output 1; GSB on A 2 per score (row max, learned q.k^T rescale) + 1 per mask; GSB on V 2 per element
    (max, min) + 3 per mask (two comparisons, applying it); the (k+1)^2 A.V products' accumulation is not
    charged (the paper's cells leave no room for it). The attention cells of both rows hold 7 nd that no
    operation the paper names explains: ``attn_tokens = 7`` charges them per element of the attention input, so
    baseline 10.22e6 OPs (paper 10.21e6), GSB k = 2: 12.89e6 (paper 12.88e6), every cell within 0.2 %.
  - ``"plain"``: products only (OPs = BOPs / 64 + real MACs), the textbook Bi-Real Net count.

  ``first_last="like_body"`` (recipe ``eval.count_first_last``) counts the full-precision first and last layers
  (patch embedding, heads) at the blocks' bits, for tables that count them so (Bi-ViT Table 2's 1-1 rows).

Protocol read by the counter (it only reads attributes, it never changes the model):

* A Linear/Conv (``nn.Linear``, ``nn.Conv1d/2d/3d`` or subclasses) takes its bits from its own ``precision``
  attribute (:class:`bvbench.quant.base.Precision`), else from the nearest enclosing module that has one (a
  wrapper around a plain ``nn.Linear``), else it is full precision.
* An attention module is any module with an ``attn_precision`` attribute, or with an int ``num_heads`` and a
  ``qkv`` attribute (timm ``Attention``, Swin ``WindowAttention``, NesT ``Attention``). It must take the
  tokens ``(B, N, C)`` as its first forward argument (NesT's ``(B, T, N, C)``: T is folded into the batch);
  it has ``num_heads`` heads of ``head_dim`` channels (``head_dim`` attribute, else
  ``qkv.out_features // (3 * num_heads)``, else ``C // num_heads``). ``q.k^T`` and ``A.V`` each cost
  ``B * H * N * N * head_dim`` MACs. Their precision is ``attn_precision`` (an :class:`AttentionPrecision` or
  any object with the same attribute names); no attribute means full precision.
* A transformer block is any module with children named ``attn`` and ``mlp``; ``Complexity.blocks`` splits
  every block's BOPs / FLOPs between the two.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from bvbench.models import unfused_attention
from bvbench.quant.base import FULL, AttentionPrecision, Precision

__all__ = [
    "CONVENTIONS",
    "AttentionPrecision",
    "Complexity",
    "CostModel",
    "count_complexity",
    "count_macs",
    "count_params",
    "size_fp32_mib",
    "theoretical_size",
    "unfused_attention",
]

_MIB = 2**20
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------------------------------------- sizes


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters once)."""
    return sum(p.numel() for p in model.parameters())


def size_fp32_mib(model: nn.Module) -> float:
    """Size of all parameters stored at 4 bytes each, in MiB (2^20 bytes)."""
    return count_params(model) * 4 / _MIB


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, *_CONV))


def _as_precision(value: object) -> Precision | None:
    """``value`` as a Precision when it has ``weight_bits`` and ``act_bits`` (not e.g. a method), else None."""
    if isinstance(value, Precision):
        return value
    weight_bits, act_bits = getattr(value, "weight_bits", None), getattr(value, "act_bits", None)
    if isinstance(weight_bits, (int, float)) and isinstance(act_bits, (int, float)):
        return Precision(weight_bits, act_bits)  # type: ignore[arg-type]
    return None


def _precisions(model: nn.Module) -> dict[nn.Module, Precision]:
    """Precision of every Linear/Conv: its own ``precision``, else the nearest ancestor's, else FULL."""
    out: dict[nn.Module, Precision] = {}

    def visit(module: nn.Module, inherited: Precision | None) -> None:
        own = _as_precision(getattr(module, "precision", None))
        current = own if own is not None else inherited
        if _is_weight_layer(module):
            out[module] = current if current is not None else FULL
        for child in module.children():
            visit(child, current)

    visit(model, None)
    return out


def _block_names(model: nn.Module) -> list[str]:
    """Names of the transformer blocks: modules with children named ``attn`` and ``mlp``."""
    return [name for name, m in model.named_modules() if {"attn", "mlp"} <= {n for n, _ in m.named_children()}]


FIRST_LAST = ("patch_embed", "head", "head_dist")
"""Top-level modules holding a model's first (patch embedding) and last (classifier heads) layers."""


def _like_body(model: nn.Module, precisions: dict[nn.Module, Precision]) -> dict[nn.Module, Precision]:
    """``precisions`` with every full-precision Linear/Conv of the first and last layers (:data:`FIRST_LAST`:
    patch embedding, heads) set to the most common quantized precision inside the transformer blocks;
    unchanged for a model whose blocks hold no quantized layer. Bi-ViT Table 2 counts its 1-1 rows this way
    although its text keeps the first and last layers real-valued (Sec. 5.1). Any other real layer (a patch
    merging a method leaves real, NesT's pooling conv) is counted as it runs: nothing real the run has is hidden."""
    blocks = _block_names(model)
    names = {m: n for n, m in model.named_modules()}

    def inside(m: nn.Module) -> bool:
        n = names.get(m, "")
        return any(n == b or n.startswith(b + ".") for b in blocks if b)

    def first_or_last(m: nn.Module) -> bool:
        return names.get(m, "").split(".")[0] in FIRST_LAST

    body = [p for m, p in precisions.items() if inside(m) and p != FULL]
    if not body:
        return precisions
    common = max(set(body), key=body.count)
    return {m: (common if p == FULL and first_or_last(m) else p) for m, p in precisions.items()}


def theoretical_size(model: nn.Module, *, include_buffers: bool = False,
                     first_last: Literal["as_run", "like_body"] = "as_run") -> dict[str, float]:
    """Storage if every Linear/Conv weight is kept at its ``weight_bits`` and everything else at 32 bits.

    This is the Bi-ViT Table 2 convention (MB = 10^6 bytes there). ``include_buffers`` also counts buffers
    at 32 bits (Bi-ViT's real-valued Swin sizes include the attention-mask and position-index buffers).
    ``first_last="like_body"`` counts the layers outside the blocks at the blocks' bits (:func:`_like_body`).
    """
    precisions = _precisions(model)
    if first_last == "like_body":
        precisions = _like_body(model, precisions)
    weights = {id(m.weight): p.weight_bits for m, p in precisions.items() if m.weight is not None}
    bits = 0.0
    for param in model.parameters():
        bits += param.numel() * weights.get(id(param), 32)
    if include_buffers:
        bits += sum(b.numel() for b in model.buffers()) * 32
    nbytes = bits / 8
    return {"bytes": nbytes, "mb": nbytes / 1e6, "mib": nbytes / _MIB}


# ------------------------------------------------------------------------------------------- fvcore


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    return torch.zeros(shape, device=device, dtype=dtype)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """fvcore's total for one forward pass (one multiply-add = 1), with timm's fused attention disabled.

    ``input_shape`` is ``(C, H, W)`` (batch 1) or ``(B, C, H, W)``. fvcore's warnings are silenced.
    """
    was_training = model.training
    model.eval()
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with unfused_attention(model), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, _example_input(model, input_shape))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            return int(analysis.total())
    finally:
        logger.setLevel(level)
        model.train(was_training)


# --------------------------------------------------------------------------------- precision-aware


@dataclass(frozen=True)
class CostModel:
    """FLOPs charged for the element-wise real work around quantized products (see the module docstring).

    A price with a ``_stats`` twin applies to quantizers that learn their scale and offset; the twin to those that
    compute them as statistics of the input (a quantizer with ``statistics = True``, e.g. XNOR-Net's mean and
    L1 norm; GSB Sec. IV-B: learnable factors "avoid the calculation of the mean and the norm")."""

    name: str
    input_quant: float = 0.0  # per activation element quantized at a quantized Linear/Conv input
    input_quant_stats: float | None = None  # the same for a statistics quantizer (None: as input_quant)
    output_rescale: float = 0.0  # per output element of a quantized Linear/Conv (scale, bias)
    attn_operand: float = 0.0  # per element of a quantized attention operand (q, k, V)
    attn_operand_stats: float | None = None  # the same for a statistics quantizer (None: as attn_operand)
    attn_map: float = 0.0  # per score of a quantized attention map A (operand of A.V)
    attn_output: float = 0.0  # per output element of a quantized A.V (its rescale)
    attn_combine: float = 0.0  # per output element per extra GSB product (accumulating them)
    attn_tokens: float = 0.0  # per element of the attention input (n x d) of a binary attention: see "gsb"
    softmax: float = 0.0  # per attention score, when an attention product is quantized
    gsb_mask: float = 0.0  # per score per GSB mask on A (comparison)
    gsb_att: float = 0.0  # per score once GSB masks A (row max, rescale of the learned q.k^T)
    gsb_v_mask: float = 0.0  # per element of V per GSB mask on V (two comparisons, applying the mask)
    gsb_v: float = 0.0  # per element of V once GSB masks V (max and min)
    low_bit: Literal["bwba", "bi-vit"] = "bwba"  # BOPs of a low-bit (not 1-1) product: see module doc

    def low_bit_factor(self, p: Precision) -> float:
        """BOPs per MAC of a product whose two operands are both quantized."""
        if self.low_bit == "bi-vit":
            return float(2 ** (max(p.weight_bits, p.act_bits) - 1))
        return float(p.weight_bits * p.act_bits)

    def input_price(self, statistics: bool) -> float:
        """FLOPs per quantized Linear/Conv input element."""
        return self.input_quant_stats if statistics and self.input_quant_stats is not None else self.input_quant

    def operand_price(self, statistics: bool) -> float:
        """FLOPs per element of a quantized attention operand."""
        return self.attn_operand_stats if statistics and self.attn_operand_stats is not None else self.attn_operand


CONVENTIONS: dict[str, CostModel] = {
    "plain": CostModel("plain"),
    "bi-vit": CostModel("bi-vit", input_quant=1.0, low_bit="bi-vit"),
    "gsb": CostModel(
        "gsb",
        input_quant=2.0,
        input_quant_stats=3.0,
        output_rescale=1.0,
        attn_operand=2.0,
        attn_operand_stats=3.0,
        attn_map=3.0,
        attn_output=1.0,
        attn_tokens=7.0,
        gsb_mask=1.0,
        gsb_att=2.0,
        gsb_v_mask=3.0,
        gsb_v=2.0,
    ),
}


@dataclass
class Complexity:
    """Result of :func:`count_complexity` (counts for the batch of ``input_shape``)."""

    params: int
    macs: int  # products only: Linear/Conv + attention matmuls, each counted once as if real-valued
    bops: float
    flops: float
    ops: float  # bops / 64 + flops
    size_fp32_mib: float
    size_mb: float  # theoretical size, 10^6 bytes
    size_mib: float  # theoretical size, 2^20 bytes
    blocks: list[dict[str, float]] = field(default_factory=list)  # attn_bops, attn_flops, mlp_bops, mlp_flops
    convention: str = "bi-vit"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for reports)."""
        return asdict(self)


def _is_quantized(bits: float) -> bool:
    return bits < 32


class _Tally:
    """Accumulates BOPs/FLOPs/MACs, split per (block, part)."""

    def __init__(self, costs: CostModel) -> None:
        self.costs = costs
        self.macs = 0
        self.bops = 0.0
        self.flops = 0.0
        self.parts: dict[str, list[float]] = {}

    def add(self, part: str | None, bops: float, flops: float) -> None:
        self.bops += bops
        self.flops += flops
        if part is not None:
            entry = self.parts.setdefault(part, [0.0, 0.0])
            entry[0] += bops
            entry[1] += flops

    def product(self, p: Precision, macs: int, products: int = 1) -> tuple[float, float]:
        """(BOPs, FLOPs) of ``products`` products of ``macs`` MACs each at precision ``p``."""
        if p.binary:
            return float(macs * products), 0.0
        if _is_quantized(p.weight_bits) and _is_quantized(p.act_bits):
            return macs * products * self.costs.low_bit_factor(p), 0.0
        return 0.0, float(macs * products)


def _attention_dims(module: nn.Module, x: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, H, N, d) of a self-attention module called on tokens ``x`` of shape (..., N, C)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"attention module {type(module).__name__} must take tokens (B, N, C), got {shape}")
    batch, tokens, channels = math.prod(x.shape[:-2]), x.shape[-2], x.shape[-1]
    heads = int(module.num_heads)
    head_dim = getattr(module, "head_dim", None)
    if not isinstance(head_dim, int):
        qkv = getattr(module, "qkv", None)
        out_features = getattr(qkv, "out_features", None)
        head_dim = out_features // (3 * heads) if isinstance(out_features, int) else channels // heads
    return batch, heads, tokens, head_dim


def _is_attention(module: nn.Module) -> bool:
    if hasattr(module, "attn_precision"):
        return True
    return isinstance(getattr(module, "num_heads", None), int) and hasattr(module, "qkv")


def _uses_statistics(module: nn.Module) -> bool:
    """Whether a quantizer in ``module``'s subtree computes its scale/offset as statistics of its input."""
    return any(getattr(m, "statistics", False) is True for m in module.modules())


def _part_keys(model: nn.Module) -> tuple[list[str], list[tuple[str, str]]]:
    """Block names and (module prefix, part key) pairs of every block's ``attn`` and ``mlp``."""
    blocks = _block_names(model)
    parts: list[tuple[str, str]] = []
    for index, name in enumerate(blocks):
        prefix = f"{name}." if name else ""
        parts += [(f"{prefix}attn", f"{index}.attn"), (f"{prefix}mlp", f"{index}.mlp")]
    return blocks, parts


class _Counter:
    """Forward hooks that price every Linear/Conv and attention module into a :class:`_Tally`."""

    def __init__(self, model: nn.Module, costs: CostModel, precisions: dict[nn.Module, Precision]) -> None:
        self.tally = _Tally(costs)
        self.costs = costs
        self.precisions = precisions
        self.names = {module: name for name, module in model.named_modules()}
        self.blocks, self.parts = _part_keys(model)

    def part_of(self, module: nn.Module) -> str | None:
        name = self.names.get(module, "")
        for prefix, key in self.parts:
            if name == prefix or name.startswith(prefix + "."):
                return key
        return None

    def weight_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        p = self.precisions[module]
        if isinstance(module, nn.Linear):
            macs = output.numel() * module.in_features
        else:
            macs = output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        self.tally.macs += macs
        bops, flops = self.tally.product(p, macs)
        if _is_quantized(p.act_bits):
            flops += self.costs.input_price(_uses_statistics(module)) * inputs[0].numel()
        if _is_quantized(p.weight_bits) or _is_quantized(p.act_bits):
            flops += self.costs.output_rescale * output.numel()
        self.tally.add(self.part_of(module), bops, flops)

    def attention_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        batch, heads, tokens, head_dim = _attention_dims(module, inputs[0])
        ap = getattr(module, "attn_precision", None)
        qk = _as_precision(getattr(ap, "qk", None)) or FULL
        av = _as_precision(getattr(ap, "av", None)) or FULL
        k_att = int(getattr(ap, "k_att", 0) or 0)
        k_v = int(getattr(ap, "k_v", 0) or 0)
        operand = batch * heads * tokens * head_dim  # elements of q, k or V, and of the A.V output
        scores = batch * heads * tokens * tokens  # elements of the attention map
        macs = scores * head_dim
        self.tally.macs += 2 * macs
        a_quant, v_quant = _is_quantized(av.act_bits), _is_quantized(av.weight_bits)
        products = (k_att + 1 if a_quant else 1) * (k_v + 1 if v_quant else 1) if a_quant and v_quant else 1
        b1, f1 = self.tally.product(qk, macs)
        b2, f2 = self.tally.product(av, macs, products)
        flops = f1 + f2 + self._attention_flops(module, qk, av, products, k_att, k_v, operand, scores)
        self.tally.add(self.part_of(module), b1 + b2, flops)

    def _attention_flops(self, module: nn.Module, qk: Precision, av: Precision, products: int,
                         k_att: int, k_v: int, operand: int, scores: int) -> float:
        """Element-wise FLOPs of one attention module's quantized products (module docstring, ``"gsb"``)."""
        c = self.costs
        a_quant, v_quant = _is_quantized(av.act_bits), _is_quantized(av.weight_bits)
        q_quant, k_quant = _is_quantized(qk.act_bits), _is_quantized(qk.weight_bits)
        operand_price = c.operand_price(_uses_statistics(module))
        flops = operand_price * operand * (q_quant + k_quant + v_quant) + c.attn_map * scores * a_quant
        if a_quant or v_quant:
            flops += c.attn_output * operand + c.attn_combine * operand * (products - 1)
        if q_quant or k_quant or a_quant or v_quant:
            flops += c.softmax * scores + c.attn_tokens * operand
        if a_quant and k_att > 0:
            flops += (c.gsb_att + c.gsb_mask * k_att) * scores
        if v_quant and k_v > 0:
            flops += (c.gsb_v + c.gsb_v_mask * k_v) * operand
        return flops

    def blocks_split(self) -> list[dict[str, float]]:
        """Per-block BOPs / FLOPs of ``attn`` and ``mlp``."""
        out = []
        for index in range(len(self.blocks)):
            attn = self.tally.parts.get(f"{index}.attn", [0.0, 0.0])
            mlp = self.tally.parts.get(f"{index}.mlp", [0.0, 0.0])
            out.append({"attn_bops": attn[0], "attn_flops": attn[1], "mlp_bops": mlp[0], "mlp_flops": mlp[1]})
        return out


def _run_hooked(model: nn.Module, counter: _Counter, input_shape: Sequence[int]) -> None:
    """One eval forward pass of ``model`` with ``counter``'s hooks on every Linear/Conv and attention module."""
    handles = []
    for module in model.modules():
        if module in counter.precisions:
            handles.append(module.register_forward_hook(counter.weight_hook))
        elif _is_attention(module):
            handles.append(module.register_forward_hook(counter.attention_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_example_input(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def count_complexity(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    convention: str | CostModel = "bi-vit",
    include_buffers: bool = False,
    first_last: Literal["as_run", "like_body"] = "as_run",
) -> Complexity:
    """Precision-aware complexity of one forward pass of ``model`` on ``input_shape`` ((C,H,W) or (B,C,H,W)).

    Reads ``precision`` / ``attn_precision`` attributes (module docstring); works on models built on the
    ``meta`` device (no compute). ``convention`` names a :data:`CONVENTIONS` preset or is a :class:`CostModel`.
    """
    costs = CONVENTIONS[convention] if isinstance(convention, str) else convention
    precisions = _precisions(model)
    if first_last == "like_body":
        precisions = _like_body(model, precisions)
    counter = _Counter(model, costs, precisions)
    _run_hooked(model, counter, input_shape)
    tally = counter.tally
    size = theoretical_size(model, include_buffers=include_buffers, first_last=first_last)
    return Complexity(
        params=count_params(model),
        macs=tally.macs,
        bops=tally.bops,
        flops=tally.flops,
        ops=tally.bops / 64 + tally.flops,
        size_fp32_mib=size_fp32_mib(model),
        size_mb=size["mb"],
        size_mib=size["mib"],
        blocks=counter.blocks_split(),
        convention=costs.name,
    )
