"""What the engine needs from an activation quantizer: the bits it produces and their magnitude, or its 8-bit
integer codes. Every supported 1-bit quantizer outputs ``r * (+-1)`` (`SIGNED`) or ``r * {0, 1}`` (`MASK`) with
r > 0 the same along the packed axis (per tensor, sample, head or row), so bits = (output > 0) and r = the
row's largest magnitude; the common ones (sign, elastic) are read straight off their input instead.
A quantizer outside these lists is refused by name (`kind_of` returns None)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bvbench.engine.int8 import absmax_codes
from bvbench.quant import (
    LSQ,
    SCALE_MIN,
    AbsMax,
    BiBERTAttention,
    Elastic,
    GSBAttention,
    GSBBaseline,
    GSBValue,
    LearnableScaleBinarizer,
    RSign,
    SignAct,
    SignScaledAttention,
    SoftmaxAwareBinarizer,
    XnorAct,
    layer_norm,
)

__all__ = ["INT8", "MASK", "SIGNED", "Bits", "Int8Codes", "binarize", "int8_codes", "kind_of"]

SIGNED, MASK, INT8, GSB_ATT, GSB_V = "signed", "mask", "int8", "gsb-attention", "gsb-value"


def kind_of(q: nn.Module | None) -> str | None:
    """SIGNED, MASK, INT8, GSB_ATT, GSB_V for a supported quantizer, "none" for no quantizer, else None."""
    if q is None:
        return "none"
    if isinstance(q, LearnableScaleBinarizer):  # also RectifiedLSF
        return None if q.variant != "paper" else SIGNED if q.signed else MASK  # code variant: affine zero point
    if isinstance(q, (SignAct, RSign)):  # also ApproxSign
        return SIGNED
    if isinstance(q, (Elastic, XnorAct)):  # also HeadElastic
        return SIGNED if q.signed else MASK
    if isinstance(q, (BiBERTAttention, GSBBaseline, SoftmaxAwareBinarizer, SignScaledAttention)):  # last: A >= 0, all +1
        return MASK
    if isinstance(q, AbsMax) and q.bits <= 8:
        return INT8
    if isinstance(q, LSQ) and q.kind == "activation" and q.bits <= 8:
        return INT8
    if isinstance(q, GSBAttention):
        return GSB_ATT
    if isinstance(q, GSBValue):
        return GSB_V
    return None


@dataclass
class Bits:
    """A binarized tensor to pack: bit = ``source > threshold`` (``>=`` unless `strict`); `scale` is r per
    row (source.shape[:-1]) or None for r = 1."""

    source: Tensor
    threshold: float | Tensor
    strict: bool
    scale: Tensor | None


def _alpha(q: nn.Module) -> Tensor:
    return q.alpha.detach().clamp_min(SCALE_MIN)  # type: ignore[union-attr,operator]


def _rows(t: Tensor, x: Tensor) -> Tensor:
    """A scale broadcastable to x (scalar, per sample [B,1..], per head [H,1,1]) as one value per row."""
    return t.expand(x.shape[:-1] + (1,)).squeeze(-1) if t.dim() else t.expand(x.shape[:-1])


def binarize(q: nn.Module, x: Tensor, kind: str) -> Bits:
    """The bits and magnitudes of ``q(x)`` (SIGNED or MASK `kind`), eval mode."""
    if isinstance(q, SignAct):  # sign(x): sign(0) = +1 (GSB Eq. 4) or -1 (BiViT Eq. 1, strict)
        return Bits(x, 0.0, not q.zero_to_positive, None)
    if isinstance(q, RSign):
        return Bits(x - q.threshold.detach(), 0.0, False, None)
    if isinstance(q, Elastic):  # GSB Eq. 4 alpha sign(x - b) / GSB Eq. 3 alpha 1[x - b > alpha / 2]
        a = _alpha(q)
        xb = x - q.offset.detach()
        return Bits(xb, 0.0, False, _rows(a, x)) if q.signed else Bits(xb, float(0.5 * a), True, _rows(a, x))
    if isinstance(q, BiBERTAttention):  # BiViT Eq. 5: Bool(scores) = 1[scores > 0]
        return Bits(x, 0.0, True, None)
    if isinstance(q, XnorAct):  # GSB Eq. 1-4: beta sign(x - a_mu) / beta 1[x > beta / 2], read off the input
        dims = tuple(range(1, x.dim())) if x.dim() > 1 else (0,)
        if q.signed and q.center:
            x = x - x.mean(dim=dims, keepdim=True)
        beta = x.abs().mean(dim=dims, keepdim=True).clamp_min(SCALE_MIN)
        if q.signed:
            return Bits(x, 0.0, False, _rows(beta, x))
        return Bits(x, _rows(0.5 * beta, x), True, _rows(beta, x))
    if isinstance(q, GSBBaseline):  # GSB Eq. 7: gamma 1[A > gamma / 2], gamma per sample
        gamma = q.scale(x)
        return Bits(x, _rows(0.5 * gamma, x), True, _rows(gamma, x))
    v = q(x)  # every other supported quantizer: read its output (values +-r or {0, r})
    mag = v.abs().amax(-1) if kind == SIGNED else v.amax(-1)
    return Bits(v, 0.0, True, mag)


@dataclass
class Int8Codes:
    """8-bit activation codes: value = (codes + shift) * step + eta; step / eta scalar or per row (keepdim)."""

    codes: Tensor
    step: Tensor
    shift: int
    eta: Tensor | None


def int8_codes(q: nn.Module, x: Tensor) -> Int8Codes:
    """Integer codes of an AbsMax (BitNet, 1bit-vit-cifar10 Fig. 4-7) or LSQ activation quantizer, computed with
    the quantizer's own fp32 operations so that codes * step equals its output."""
    if isinstance(q, LSQ):
        s = q.step(x)
        return Int8Codes((x / s).clamp(-q.qn, q.qp).round().to(torch.int8), s, 0, None)
    assert isinstance(q, AbsMax)
    if q.layernorm:
        x = layer_norm(x)
    qb = 2 ** (q.bits - 1)
    if q.shifted:
        eta = q._reduce(x, "amin")
        z = x - eta
        gamma = q._reduce(z, "amax").clamp_min(SCALE_MIN)
        c = (z * (qb / gamma)).round().clamp(0, qb)
        shift = qb if qb > 127 else 0  # [0, 128] does not fit int8: store c - 128
        return Int8Codes((c - shift).to(torch.int8), gamma / qb, shift, eta)
    if qb <= 128:  # one C pass instead of abs, amax, div, mul, round, clamp, cast
        codes, gamma = absmax_codes(x, qb, q.granularity == "token", SCALE_MIN)
        return Int8Codes(codes, gamma / qb, 0, None)
    gamma = q._reduce(x.abs(), "amax").clamp_min(SCALE_MIN)
    c = (x * (qb / gamma)).round().clamp(-qb, qb - 1)
    return Int8Codes(c.to(torch.int8), gamma / qb, 0, None)
