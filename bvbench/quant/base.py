"""What every quantized module tells the complexity counter: its bit widths."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Precision:
    """Bits of the weights and of the input activations a module multiplies (32 = full precision)."""

    weight_bits: int = 32
    act_bits: int = 32

    @property
    def binary(self) -> bool:
        """True when each multiply is a 1-bit x 1-bit product (an XNOR + popcount: one BOP)."""
        return self.weight_bits == 1 and self.act_bits == 1

    def __str__(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"


FULL = Precision(32, 32)


SCALE_MIN = 1e-5
"""Lower bound of every learnable scale (GSB code: all learnable scales clamped to >= 1e-5)."""


@dataclass(frozen=True)
class AttentionPrecision:
    """Bits of the two attention products of one attention module (set as ``attn.attn_precision``).

    ``qk``: ``Precision(weight_bits=bits of k, act_bits=bits of q)``; ``av``: ``Precision(weight_bits=bits of
    V, act_bits=bits of A)``. ``k_att`` / ``k_v``: number of GSB extra masks on A / on V (0 = plain
    binarization); a binary ``A.V`` then costs ``(k_att + 1) * (k_v + 1)`` binary products.
    """

    qk: Precision = FULL
    av: Precision = FULL
    k_att: int = 0
    k_v: int = 0


def gt(x: Tensor, t: Tensor | float) -> Tensor:
    """1[x > t] in x's dtype and shape. Comparing straight into a float tensor is one pass; `(x > t).to(dtype)`
    (a bool tensor, then a conversion) costs several times more on the CPU, and masks are most of the work of
    the attention binarizers. Under torch.compile (which cannot trace `out=` into a strided tensor) the plain
    form, which the compiler fuses into one pass anyway: the same 0/1 values either way."""
    if torch.compiler.is_compiling():
        return (x > t).to(x.dtype)
    return torch.gt(x, t, out=torch.empty_like(x))


def ge(x: Tensor, t: Tensor | float) -> Tensor:
    """1[x >= t] in x's dtype and shape (see `gt`)."""
    if torch.compiler.is_compiling():
        return (x >= t).to(x.dtype)
    return torch.ge(x, t, out=torch.empty_like(x))


def lt(x: Tensor, t: Tensor | float) -> Tensor:
    """1[x < t] in x's dtype and shape (see `gt`)."""
    if torch.compiler.is_compiling():
        return (x < t).to(x.dtype)
    return torch.lt(x, t, out=torch.empty_like(x))


def le(x: Tensor, t: Tensor | float) -> Tensor:
    """1[x <= t] in x's dtype and shape (see `gt`)."""
    if torch.compiler.is_compiling():
        return (x <= t).to(x.dtype)
    return torch.le(x, t, out=torch.empty_like(x))


def sign(x: Tensor, zero_to_positive: bool = True) -> Tensor:
    """Sign with values in {-1, +1}; `zero_to_positive` picks sign(0) = +1 (GSB Eq. 4) or -1 (BiViT Eq. 1)."""
    pos = ge(x, 0) if zero_to_positive else gt(x, 0)
    return pos.mul_(2).sub_(1)


class Quantizer(nn.Module):
    """Base of every quantizer: a `precision` (bits produced), `k` extra GSB masks (0 elsewhere), a variant."""

    precision: Precision = FULL
    k: int = 0
    variant: str = "paper"

    def target(self, x: Tensor) -> Tensor:
        """The real-valued tensor the output approximates (default: the input itself)."""
        return x

    def step(self, x: Tensor) -> Tensor | None:
        """For a quantizer whose output is integer codes times a step size: that step for input `x` (so
        `forward(x) / step(x)` are the codes a packed export stores). None: not such a quantizer."""
        return None


class LazyInit(Quantizer):
    """A quantizer whose learnable scales are set from the first batch (under no_grad); the
    `initialized` buffer makes state_dict round-trips skip the re-initialisation."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._init_seen = False  # a Python mirror of the buffer: torch.compile guards on it instead of breaking

    def maybe_init(self, x: Tensor) -> None:
        """Call `init_from(x)` once, at the first forward, without recording gradients."""
        if self._init_seen:
            return
        if not bool(self.initialized):
            with torch.no_grad():
                self.init_from(x.detach())
            self.initialized.fill_(True)
        self._init_seen = True

    def init_from(self, x: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
