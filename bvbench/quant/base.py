"""What every quantized module tells the complexity counter: its bit widths."""

from __future__ import annotations

from dataclasses import dataclass


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
