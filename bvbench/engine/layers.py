"""The engine's layers: a linear layer run from its packed weight codes (binary x binary or mask x binary
popcount GEMMs, int8 x int8 through torch._int_mm, or plain fp32 where the method keeps it real), and ViT/DeiT
self-attention whose products q.k^T and A.V run on the popcount kernels. LayerNorm, softmax, GELU and the
quantizers' elementwise parts run in torch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bvbench.engine import acts
from bvbench.engine.gemm import mask_matmul, pack_matmul
from bvbench.engine.int8 import int8_epilogue, int8_matmul
from bvbench.engine.kernels import Panels, pack_bool_panels, pack_panels, pack_signs
from bvbench.errors import BvbenchError
from bvbench.quant import SCALE_MIN, QAttention, QLinear, layer_norm

__all__ = ["PackedAttention", "PackedLinear", "WeightCodes"]


@dataclass
class WeightCodes:
    """A weight as stored in a .bvb file: `kind` bits1 (bool codes, True = +1), bits2 (int8 in {-1, 0, 1}) or
    bits8 (int8 LSQ codes), shape [out, in]; `scale` fp32, one value or one per output channel."""

    kind: str
    codes: Tensor
    scale: Tensor


def _col_scale(scale: Tensor, n: int) -> Tensor:
    return scale.detach().float().reshape(-1).expand(n).contiguous()


class PackedLinear(nn.Module):
    """``act(LN?(x)) W^T + b`` with W from its codes. `mode`: "binary" (XNOR-popcount, 1-bit inputs),
    "mask" ({0,1} inputs x +-1 weights), "int8" (8-bit input codes x int8 weight codes) or "float"."""

    def __init__(self, q: QLinear, mode: str, codes: WeightCodes | None) -> None:
        super().__init__()
        self.mode, self.norm, self.act = mode, q.norm, q.act_quant
        self.k, self.n = q.in_features, q.out_features
        self.bias = None if q.bias is None else q.bias.detach().float().contiguous()
        self.weight: Tensor | None = None
        if mode == "float":
            self.weight = q.weight.detach()
            return
        assert codes is not None
        self.col_scale = _col_scale(codes.scale, self.n)
        if mode in ("binary", "mask"):
            self.panels = pack_bool_panels(codes.codes)
        else:
            w = codes.codes.to(torch.int8) * 2 - 1 if codes.kind == "bits1" else codes.codes
            self.w8 = w.to(torch.int8).contiguous()
            self.w_sum = self.w8.sum(dim=1, dtype=torch.int32)

    def forward(self, x: Tensor) -> Tensor:
        if self.norm:
            x = layer_norm(x)
        if self.mode == "float":
            return F.linear(self.act(x) if self.act is not None else x, self.weight, self.bias)  # type: ignore[arg-type]
        if self.mode == "int8":
            return self._int8(x)
        b = acts.binarize(self.act, x, acts.SIGNED if self.mode == "binary" else acts.MASK)  # type: ignore[arg-type]
        scale = None if b.scale is None else b.scale.reshape(-1)
        return pack_matmul(b.source, self.panels, mode=self.mode, threshold=b.threshold, strict=b.strict,
                           row_scale=scale, col_scale=self.col_scale, bias=self.bias)

    def _int8(self, x: Tensor) -> Tensor:
        """y = s_w ((codes + shift) . w) step + s_w eta sum(w) + b, the integer part exact."""
        c = acts.int8_codes(self.act, x)  # type: ignore[arg-type]
        r = int8_matmul(c.codes, self.w8)
        return int8_epilogue(r, shift=c.shift, w_sum=self.w_sum, step=c.step, col_scale=self.col_scale, eta=c.eta,
                             bias=self.bias)


@dataclass
class _Side:
    """One binary operand of A.V: packed rows (A) or panels (V^T), a per-row scale, a coefficient, and for V
    whether its bits are +-1 (signed) or {0, 1}."""

    packed: Tensor | Panels
    scale: Tensor | None
    coef: Tensor | float = 1.0
    signed: bool = True


class PackedAttention(nn.Module):
    """ViT / DeiT self-attention (a QAttention of family "vit") with its two products on the kernels: q.k^T as
    an XNOR-popcount GEMM of binarized q, k, and A.V as {0,1} x {+-1} products summed over GSB's masks and
    value levels (GSB Eq. 10, 26); with no quantizer at all the products stay fp32 (BitNet rows)."""

    def __init__(self, q: QAttention, qkv: nn.Module, proj: nn.Module, binary: bool) -> None:
        super().__init__()
        self.qkv, self.proj, self.binary = qkv, proj, binary
        self.q_norm, self.k_norm, self.norm, self.proj_drop = q.q_norm, q.k_norm, q.norm, q.proj_drop
        self.q_quant, self.k_quant, self.v_quant, self.attn_quant = q.q_quant, q.k_quant, q.v_quant, q.attn_quant
        self.attn_on, self.num_heads, self.head_dim, self.scale = q.attn_on, q.num_heads, q.head_dim, q.scale

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise BvbenchError("the packed engine does not support attention masks")
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.binary:
            out = self._binary(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(self.norm(out)))

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:
        """S = (q * d^-0.5) k^T with q, k binarized: popcount dot times r_q d^-0.5 and r_k (BiViT Eq. 5)."""
        bq = acts.binarize(self.q_quant, q, acts.SIGNED)  # type: ignore[arg-type]
        bk = acts.binarize(self.k_quant, k, acts.SIGNED)  # type: ignore[arg-type]
        rq = (bq.scale * self.scale) if bq.scale is not None else torch.full(q.shape[:-1], self.scale)
        kp = pack_panels(bk.source, threshold=bk.threshold, strict=bk.strict)
        return pack_matmul(bq.source, kp, threshold=bq.threshold, strict=bq.strict, row_scale=rq.reshape(-1),
                           col_scale=None if bk.scale is None else bk.scale.reshape(-1))

    def _binary(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scores = self._scores(q, k)
        a = scores if self.attn_on == "scores" else scores.softmax(dim=-1)
        v_sides = _value_sides(self.v_quant, v)  # type: ignore[arg-type]
        if acts.kind_of(self.attn_quant) != acts.GSB_ATT and len(v_sides) == 1:  # one mask x one +-1 V: fused
            b = acts.binarize(self.attn_quant, a, acts.MASK)  # type: ignore[arg-type]
            sv = v_sides[0]
            return pack_matmul(b.source, sv.packed, mode="mask" if sv.signed else "mask01",  # type: ignore[arg-type]
                               threshold=b.threshold, strict=b.strict, col_scale=sv.scale,
                               row_scale=None if b.scale is None else b.scale.reshape(-1),
                               batch_scale=None if sv.coef == 1.0 else torch.full((q.shape[0] * q.shape[1],),
                                                                                  float(sv.coef)))
        a_sides = _attention_sides(self.attn_quant, a)  # type: ignore[arg-type]
        out = torch.zeros(v.shape, dtype=torch.float32)
        bh = q.shape[0] * q.shape[1]
        for sa in a_sides:
            for sv in v_sides:
                coef = torch.as_tensor(sa.coef * sv.coef, dtype=torch.float32).reshape(1).expand(bh)
                mask_matmul(sa.packed, sv.packed, a.shape[-1], signed=sv.signed, row_scale=sa.scale,  # type: ignore[arg-type]
                            col_scale=sv.scale, batch_scale=coef, out=out, accumulate=True)
        return out


def _attention_sides(quant: nn.Module, a: Tensor) -> list[_Side]:
    """The {0,1} masks of the binarized map with their scales: one mask, or GSB's a0 A_bin + sum a_i M_i
    (GSB Eq. 10-13) with A_ret = A - Phi (GSB Eq. 9)."""
    if acts.kind_of(quant) != acts.GSB_ATT:
        b = acts.binarize(quant, a, acts.MASK)
        scale = None if b.scale is None else b.scale.reshape(-1)
        return [_Side(pack_signs(b.source, threshold=b.threshold, strict=b.strict), scale)]
    a_ret = quant.retarget(a)  # type: ignore[operator]
    alpha = quant.alpha.detach().clamp_min(SCALE_MIN)
    rowmax = a_ret.amax(dim=-1)
    t0 = 0.5 * rowmax if quant.a_bin == "mask" else float(0.5 * alpha[0])  # GSB Table VIII / GSB Eq. 11
    sides = [_Side(pack_signs(a_ret, threshold=t0, strict=True), None, alpha[0])]
    for i, c in enumerate(quant.coeffs, start=1):  # type: ignore[arg-type]
        sides.append(_Side(pack_signs(a_ret, threshold=c * rowmax, strict=True), None, alpha[i]))
    return sides


def _value_sides(quant: nn.Module, v: Tensor) -> list[_Side]:
    """V^T as +-1 panels with one scale per column, or GSB's sum_i b_i sign(V0) M_i (GSB Eq. 26-27): the sign
    plane times b_0 plus, per extra mask, its positive and negative {0,1} planes times +-b_i."""
    if acts.kind_of(quant) != acts.GSB_V:
        b = acts.binarize(quant, v, acts.SIGNED)
        src = b.source.transpose(-1, -2).contiguous()
        # r is the same along the tokens for every supported V quantizer: token 0's r serves every column
        scale = None if b.scale is None else b.scale[..., :1].expand(*v.shape[:-2], v.shape[-1]).reshape(-1)
        return [_Side(pack_panels(src, threshold=b.threshold, strict=b.strict), scale)]
    v0 = (v - quant.omega.detach()).transpose(-1, -2).contiguous()  # type: ignore[operator]
    beta = quant.beta.detach().clamp_min(SCALE_MIN)
    dims = tuple(range(1, v0.dim()))
    vmax, vmin = v0.amax(dim=dims, keepdim=True), v0.amin(dim=dims, keepdim=True)
    positive = v0 >= 0
    sides = [_Side(pack_panels(v0), None, beta[0])]
    for i, c in enumerate(quant.coeffs, start=1):  # type: ignore[arg-type]
        m = (v0 > c * vmax) | (v0 < c * vmin)
        sides.append(_Side(pack_bool_panels(m & positive), None, beta[i], signed=False))
        sides.append(_Side(pack_bool_panels(m & ~positive), None, -beta[i], signed=False))
    return sides
