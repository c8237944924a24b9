"""Weight binarizers and ternarizers: XNOR/BWN sign, Bi-Real, BitNet 1-bit and BitNet b1.58 absmean."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bvbench.quant.base import SCALE_MIN, LazyInit, Precision, Quantizer, sign
from bvbench.quant.registry import QUANTIZERS
from bvbench.quant.ste import IdentitySTE, sign_ste


class _ScaledWeightSign(LazyInit):
    """Shared body: alpha * sign(W - mu) with a chosen STE; alpha, mu per tensor or per output channel (row)."""

    def __init__(
        self,
        per_channel: bool,
        center: bool,
        ste: str,
        learnable_scale: bool = False,
        out_features: int | None = None,
        zero_to_positive: bool = True,
    ) -> None:
        super().__init__()
        self.per_channel = per_channel or learnable_scale
        self.center = center
        self.ste = ste
        self.zero_to_positive = zero_to_positive
        self.precision = Precision(1, 32)
        if learnable_scale:
            if out_features is None:
                raise ValueError("a learnable channel scale needs out_features (the weight's rows)")
            self.scale = nn.Parameter(torch.ones(out_features, 1))
        else:
            self.register_parameter("scale", None)

    def init_from(self, w: Tensor) -> None:
        """BiViT learnable weight binarization: alpha_c initialised to the row mean of |W|."""
        if self.scale is not None:
            self.scale.copy_(self._stat_scale(w).clamp_min(SCALE_MIN))

    def _dims(self, w: Tensor) -> tuple[int, ...]:
        return tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))

    def _stat_scale(self, w: Tensor) -> Tensor:
        return w.abs().mean(dim=self._dims(w), keepdim=True)

    def forward(self, w: Tensor) -> Tensor:
        """Binarized weight, same shape as `w` ([out, in] for a Linear)."""
        mu = w.detach().mean(dim=self._dims(w), keepdim=True) if self.center else 0.0
        b = sign_ste(w - mu, self.ste, self.zero_to_positive)
        if self.scale is None:
            return b * self._stat_scale(w.detach())
        self.maybe_init(w)
        return b * self.scale.clamp_min(SCALE_MIN).view(-1, *([1] * (w.dim() - 1)))


@QUANTIZERS.register("sign", kind="weight", bits=1, paper="XNOR-Net / GSB Eq. 2, 6; BiViT (learnable)")
class SignWeight(_ScaledWeightSign):
    """XNOR/BWN: `sign(W - mean W) * mean|W|` (GSB Eq. 2), per tensor or per output channel.

    Gradient: dW = g * alpha * STE'(W - mu) with mu and the statistic alpha treated as constants;
    `ste="identity"` (GSB Eq. 6, default), `"clipped"` (1[|W - mu| <= 1]) or `"clipped_open"` (1[|W - mu| < 1],
    BiViT Eq. 2); sign(0) = +1 (GSB Eq. 4) or, `zero_to_positive=False`, -1 (BiViT Eq. 1).
    `learnable_scale=True` (BiViT learnable weight binarization) makes alpha an [out, 1] Parameter
    initialised to the row mean of |W| at the first forward; its gradient is sum_row(g * sign).
    """

    def __init__(
        self,
        per_channel: bool = False,
        learnable_scale: bool = False,
        out_features: int | None = None,
        ste: str = "identity",
        center: bool = True,
        zero_to_positive: bool = True,
    ) -> None:
        super().__init__(per_channel, center, ste, learnable_scale, out_features, zero_to_positive)


@QUANTIZERS.register("bireal", kind="weight", bits=1, paper="Bi-Real Net (Bi-ViT baseline)")
class BiRealWeight(_ScaledWeightSign):
    """Bi-Real: `rowmean|W| * sign(W)`, scale detached; gradient through clamp(W, -1, 1):
    dW = g * alpha_c * 1[|W| <= 1]."""

    def __init__(self) -> None:
        super().__init__(per_channel=True, center=False, ste="clipped")


class IdentityGradWeight(Quantizer):
    """Weights whose dequantized value passes the gradient unchanged (BitNet's identity STE: dW = g)."""

    def quantize(self, w: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, w: Tensor) -> Tensor:
        """Dequantized weight; backward the identity dW = g."""
        return IdentitySTE.apply(w, self.quantize)


@QUANTIZERS.register("bitnet", kind="weight", bits=1, paper="1bit-vit-cifar10 Fig. 3-7 (BitNet)")
class BitNetWeight(IdentityGradWeight):
    """1-bit BitLinear weight: `beta * Sign(W - alpha)`, alpha = mean W, beta = ||W||_1 / (nm),
    Sign(0) = -1 (paper's Sign); identity STE."""

    def __init__(self) -> None:
        super().__init__()
        self.precision = Precision(1, 32)

    def quantize(self, w: Tensor) -> Tensor:
        return sign(w - w.mean(), zero_to_positive=False) * w.abs().mean()


@QUANTIZERS.register("ternary", kind="weight", bits=1.58, paper="BitNet b1.58 (1.58bit-vit-poster)")
class TernaryWeight(IdentityGradWeight):
    """BitNet b1.58 absmean: `gamma * clip(round(W / (gamma + eps)), -1, 1)`, gamma = mean|W|;
    identity STE. Stored in 2 bits, so `precision.weight_bits == 2` (registry bits 1.58)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.precision = Precision(2, 32)

    def quantize(self, w: Tensor) -> Tensor:
        gamma = w.abs().mean()
        return (w / (gamma + self.eps)).round().clamp(-1, 1) * gamma
