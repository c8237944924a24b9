"""Activation quantizers: BitNet absmax, sign (clipped STE), ApproxSign, ReActNet RSign, BiT elastic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bvbench.quant.base import SCALE_MIN, LazyInit, Precision, Quantizer
from bvbench.quant.registry import QUANTIZERS
from bvbench.quant.ste import IdentitySTE, ScaledRoundClip, ScaledSign, sign_ste


def layer_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """LN(x) = (x - E x) / sqrt(Var x + eps) over the last dim, no affine (1bit-vit-cifar10 Fig. 7, SubLN)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


@QUANTIZERS.register("absmax", kind="activation", bits=8, paper="1bit-vit-cifar10 Fig. 4-7; BitNet b1.58")
class AbsMax(Quantizer):
    """BitNet b-bit absmax: `q = clip(round(x * Qb / gamma), -Qb, Qb - 1)`, gamma = ||x||_inf, Qb = 2^(b-1),
    returned dequantized (`q * gamma / Qb`) with the identity STE.

    `granularity`: "tensor" (1-bit BitLinear) or "token" (b1.58: gamma per row of the last dim).
    `shifted=True`: the variant before non-linearities, `clip(round((x - eta) * Qb / gamma), 0, Qb)`,
    eta = min x, gamma = max(x - eta). `layernorm=True` applies the parameter-free LN first (Fig. 7).
    """

    def __init__(
        self, bits: int = 8, granularity: str = "tensor", shifted: bool = False, layernorm: bool = False
    ) -> None:
        super().__init__()
        if granularity not in ("tensor", "token"):
            raise ValueError(f"granularity must be 'tensor' or 'token', not {granularity!r}")
        self.bits, self.granularity, self.shifted, self.layernorm = bits, granularity, shifted, layernorm
        self.precision = Precision(32, bits)

    def _reduce(self, x: Tensor, op: str) -> Tensor:
        return getattr(x, op)(dim=-1, keepdim=True) if self.granularity == "token" else getattr(x, op)()

    def quantize(self, x: Tensor) -> Tensor:
        """The dequantized b-bit value of `x` (no gradient bookkeeping)."""
        qb = 2 ** (self.bits - 1)
        if self.shifted:
            eta = self._reduce(x, "amin")
            z = x - eta
            gamma = self._reduce(z, "amax").clamp_min(SCALE_MIN)
            return (z * (qb / gamma)).round().clamp(0, qb) * (gamma / qb) + eta
        gamma = self._reduce(x.abs(), "amax").clamp_min(SCALE_MIN)
        return (x * (qb / gamma)).round().clamp(-qb, qb - 1) * (gamma / qb)

    def forward(self, x: Tensor) -> Tensor:
        """Any shape; identity STE (dx = g)."""
        if self.layernorm:
            x = layer_norm(x)
        return IdentitySTE.apply(x, self.quantize)


@QUANTIZERS.register("sign_act", kind="activation", bits=1, paper="BNN / BiViT Eq. 1-2 (clipped STE)")
class SignAct(Quantizer):
    """`sign(x)` in {-1,+1} with the clipped STE dx = g * 1[|x| <= 1] and sign(0) = +1 (GSB Eq. 4-5; Bi-ViT Sec.
    3.1). The convention of BiViT Eq. 1-2: `zero_to_positive=False` (sign(0) = -1), `ste="clipped_open"` (|x| < 1)."""

    def __init__(self, ste: str = "clipped", zero_to_positive: bool = True) -> None:
        super().__init__()
        self.ste, self.zero_to_positive = ste, zero_to_positive
        self.precision = Precision(32, 1)

    def forward(self, x: Tensor) -> Tensor:
        return sign_ste(x, self.ste, self.zero_to_positive)


@QUANTIZERS.register("approxsign", kind="activation", bits=1, paper="Bi-Real Net (Bi-ViT baseline)")
class ApproxSign(SignAct):
    """`sign(x)` with Bi-Real's ApproxSign gradient: (2+2x) on [-1,0), (2-2x) on [0,1), 0 elsewhere."""

    def __init__(self) -> None:
        super().__init__(ste="approxsign")


@QUANTIZERS.register("rsign", kind="activation", bits=1, paper="ReActNet (RSign)")
class RSign(Quantizer):
    """ReActNet RSign: `sign(x - tau)` with a learnable threshold tau (init 0; one per feature of the last
    dim when `num_features` is given, else one scalar). dx = g * STE'(x - tau), dtau = -sum(dx).
    `ste="clipped"` (default) or `"approxsign"`."""

    def __init__(self, num_features: int | None = None, ste: str = "clipped") -> None:
        super().__init__()
        self.ste = ste
        self.threshold = nn.Parameter(torch.zeros(num_features if num_features else ()))
        self.precision = Precision(32, 1)

    def forward(self, x: Tensor) -> Tensor:
        return sign_ste(x - self.threshold, self.ste)


@QUANTIZERS.register("elastic", kind="activation", bits=1, paper="BiT elastic binarization / GSB Eq. 3-5")
class Elastic(LazyInit):
    """BiT elastic binarization with learnable scale alpha and offset b (x' = x - b).

    signed (type-B, GSB Eq. 4): `alpha * sign(x')`, alpha init 2 * mean|x|;
    unsigned (type-A, GSB Eq. 3): `alpha * clip(round(x'/alpha), 0, 1)`, alpha init 4 * mean|x|.
    Gradients (GSB Eq. 5, 14, 29): signed dx = g 1[|x'/alpha| <= 1], dalpha = sum g (sign(x') - x'/alpha
    1[|x'/alpha| <= 1]); unsigned dx = g 1[0 <= x'/alpha <= 1], dalpha = sum g (b - x'/alpha 1[0 <= x'/alpha <= 1]).
    The offset is one scalar, or one per feature of the last dim when `num_features` is given (init 0).
    alpha is initialised from the first batch and clamped to >= 1e-5.
    """

    def __init__(self, signed: bool = True, num_features: int | None = None) -> None:
        super().__init__()
        self.signed = signed
        self.alpha = nn.Parameter(torch.ones(()))
        self.offset = nn.Parameter(torch.zeros(num_features if num_features else ()))
        self.precision = Precision(32, 1)

    def init_from(self, x: Tensor) -> None:
        self.alpha.fill_(max((2.0 if self.signed else 4.0) * x.abs().mean().item(), SCALE_MIN))

    def forward(self, x: Tensor) -> Tensor:
        self.maybe_init(x)
        alpha = self.alpha.clamp_min(SCALE_MIN)
        fn = ScaledSign if self.signed else ScaledRoundClip
        return fn.apply(x - self.offset, alpha, 1.0)


@QUANTIZERS.register("xnor_act", kind="activation", bits=1, paper="GSB Eq. 1-5 (baseline, XNOR-Net statistics)")
class XnorAct(Quantizer):
    """GSB baseline activation binarizer with XNOR-Net statistics (GSB Eq. 1-2), no learnable parameter.

    signed (type-B, GSB Eq. 4): `beta * sign(x - a_mu)` with a_mu = mean(x), beta = mean|x - a_mu| (per sample when
    `center`, else a_mu = 0); backward (GSB Eq. 5) dx = g * 1[|x - a_mu| / beta <= 1].
    unsigned (type-A, GSB Eq. 3): `beta * clip(round(x / beta), 0, 1)`, beta = mean|x|; backward
    dx = g * 1[0 <= x / beta <= 1]. beta is a statistic (no gradient).
    """

    statistics = True  # scale and offset are statistics of the input (priced so by evaluate.complexity)

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


@QUANTIZERS.register("head_elastic", kind="activation", bits=1, paper="GSB Eq. 4-5, 29 (q, k with a head-wise bias)")
class HeadElastic(Elastic):
    """GSB's q / k binarizer: `a * sign(x - b)` with a learnable bias b of shape [H, 1, d] (init 0) and a
    learnable scalar scale a (init 2 mean|x|, GSB Eq. 4-5, 29); x is [B, H, N, d]."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__(signed=True)
        self.offset = nn.Parameter(torch.zeros(num_heads, 1, head_dim))
