"""b-bit LSQ (Esser et al., Learned Step Size Quantization), used by GSB for its 8-bit patch embedding and heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bvbench.quant.base import SCALE_MIN, LazyInit, Precision
from bvbench.quant.registry import QUANTIZERS


@QUANTIZERS.register("lsq", kind="weight", bits=8, paper="LSQ (Esser et al.); GSB 8-bit patch embedding and heads")
class LSQ(LazyInit):
    """b-bit LSQ (Esser et al.): `s * clip(round(x / s), -Q_n, Q_p)`, Q_p = 2^(b-1) - 1, Q_n = 2^(b-1);
    s learnable, one per output channel (`per_channel`, weights [out, ...]) or one per tensor, initialised to
    2 mean|x| / sqrt(Q_p) at the first forward; gradients: dx = g 1[-Q_n <= x/s <= Q_p], ds = g (round(x/s) -
    x/s) inside and -Q_n or Q_p outside, scaled by 1 / sqrt(numel * Q_p). Used by GSB for the 8-bit patch
    embedding (per output channel) and heads (GSB: first and last layers at 8 bits)."""

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

    def _step(self, x: Tensor, scale: Tensor) -> Tensor:
        g = 1.0 / (x.numel() * self.qp) ** 0.5
        s = scale.clamp_min(SCALE_MIN)
        s = (s - s * g).detach() + s * g  # value s, gradient scaled by g (LSQ)
        return self._shaped(s, x)

    def step(self, x: Tensor) -> Tensor:
        """The step size forward multiplies the integer codes of `x` by (same fp32 operations, no gradient):
        `codes * step(x)` equals `forward(x)` (what a packed export stores)."""
        return self._step(x, self.scale.detach())

    def forward(self, x: Tensor) -> Tensor:
        self.maybe_init(x)
        s = self._step(x, self.scale)
        u = (x / s).clamp(-self.qn, self.qp)
        return ((u.round() - u).detach() + u) * s


__all__ = ["LSQ"]
