"""Small quantizers the method specs need beyond `bvbench.quant`: the GSB baseline's statistic activation
binarizer (GSB Eq. 1-5), an 8-bit LSQ quantizer for GSB's patch embedding and heads, a head-wise elastic
binarizer for GSB's q/k (learnable bias of shape [H, 1, d]) and a quantized Conv2d built in place."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bvbench.quant.activations import Elastic
from bvbench.quant.base import SCALE_MIN, LazyInit, Precision, Quantizer
from bvbench.quant.ste import ScaledRoundClip, ScaledSign


class XnorAct(Quantizer):
    """GSB baseline activation binarizer with XNOR-Net statistics (GSB Eq. 1-2), no learnable parameter.

    signed (type-B, Eq. 4): `beta * sign(x - a_mu)` with a_mu = mean(x), beta = mean|x - a_mu| (per sample when
    `center`, else a_mu = 0); backward (Eq. 5) dx = g * 1[|x - a_mu| / beta <= 1].
    unsigned (type-A, Eq. 3): `beta * clip(round(x / beta), 0, 1)`, beta = mean|x|; backward
    dx = g * 1[0 <= x / beta <= 1]. beta is a statistic (no gradient).
    """

    def __init__(self, signed: bool = True, center: bool = True) -> None:
        super().__init__()
        self.signed, self.center = signed, center
        self.precision = Precision(32, 1)

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.dim())) if x.dim() > 1 else (0,)
        if self.signed and self.center:
            x = x - x.detach().mean(dim=dims, keepdim=True)
        beta = x.detach().abs().mean(dim=dims, keepdim=True).clamp_min(SCALE_MIN)
        if self.signed:
            return ScaledSign.apply(x, beta, 0.0)
        return ScaledRoundClip.apply(x, beta, 0.0)


class HeadElastic(Elastic):
    """GSB's q / k binarizer: `a * sign(x - b)` with a learnable bias b of shape [H, 1, d] (init 0) and a
    learnable scalar scale a (init 2 mean|x|, GSB Eq. 4-5, 29); x is [B, H, N, d]."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__(signed=True)
        self.offset = nn.Parameter(torch.zeros(num_heads, 1, head_dim))


class LSQ(LazyInit):
    """b-bit LSQ (Esser et al.): `s * clip(round(x / s), -Q_n, Q_p)`, Q_p = 2^(b-1) - 1, Q_n = 2^(b-1);
    s learnable, one per output channel (`per_channel`, weights [out, ...]) or one per tensor, initialised to
    2 mean|x| / sqrt(Q_p) at the first forward; gradients: dx = g 1[-Q_n <= x/s <= Q_p], ds = g (round(x/s) -
    x/s) inside and -Q_n or Q_p outside, scaled by 1 / sqrt(numel * Q_p). Used by GSB for the 8-bit patch
    embedding (per output channel) and heads (IMPLEMENTATION-NOTES, GSB)."""

    def __init__(self, bits: int = 8, kind: str = "weight", num_channels: int | None = None) -> None:
        super().__init__()
        if kind not in ("weight", "activation"):
            raise ValueError(f"kind must be 'weight' or 'activation', not {kind!r}")
        self.bits, self.kind = bits, kind
        self.qp, self.qn = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
        self.scale = nn.Parameter(torch.ones(num_channels if num_channels else ()))
        self.precision = Precision(bits, 32) if kind == "weight" else Precision(32, bits)

    def _shaped(self, s: Tensor, x: Tensor) -> Tensor:
        return s.view(-1, *([1] * (x.dim() - 1))) if s.dim() else s

    def init_from(self, x: Tensor) -> None:
        if self.scale.dim():
            stat = x.abs().flatten(1).mean(dim=1)
        else:
            stat = x.abs().mean()
        self.scale.copy_((2 * stat / self.qp**0.5).clamp_min(SCALE_MIN))

    def forward(self, x: Tensor) -> Tensor:
        self.maybe_init(x)
        g = 1.0 / (x.numel() * self.qp) ** 0.5
        s = self.scale.clamp_min(SCALE_MIN)
        s = (s - s * g).detach() + s * g  # value s, gradient scaled by g (LSQ)
        s = self._shaped(s, x)
        u = (x / s).clamp(-self.qn, self.qp)
        return ((u.round() - u).detach() + u) * s


class QConv2d(nn.Conv2d):
    """A Conv2d whose weight passes through `weight_quant` (GSB's 8-bit patch embedding); shares the original
    conv's Parameters. `precision` = (weight bits, 32)."""

    weight_quant: nn.Module | None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, weight_quant: nn.Module) -> QConv2d:
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,  # type: ignore[arg-type]
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups,  # type: ignore[arg-type]
                bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta")
        q.weight = conv.weight
        q.bias = conv.bias
        q.weight_quant = weight_quant
        q.precision = Precision(weight_quant.precision.weight_bits, 32)  # type: ignore[union-attr]
        q.train(conv.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_quant(self.weight) if self.weight_quant is not None else self.weight
        return self._conv_forward(x, w, self.bias)


__all__ = ["LSQ", "HeadElastic", "QConv2d", "XnorAct"]
