"""QLinear: an nn.Linear whose weight and input pass through quantizers, built in place from a Linear."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from bvbench.quant.activations import layer_norm
from bvbench.quant.base import Precision


class QLinear(nn.Linear):
    """y = act_quant(LN(x)) @ weight_quant(W)^T + b (GSB Eq. 1; BitLinear, 1bit-vit-cifar10 Fig. 7).

    `norm=True` applies the parameter-free LayerNorm before the activation quantizer (BitNet SubLN).
    The bias stays full precision. `precision` = (weight bits of `weight_quant`, act bits of `act_quant`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_quant: nn.Module | None = None,
        act_quant: nn.Module | None = None,
        norm: bool = False,
        device: object = None,
        dtype: object = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_quant = weight_quant
        self.act_quant = act_quant
        self.norm = norm
        wbits = weight_quant.precision.weight_bits if weight_quant is not None else 32
        abits = act_quant.precision.act_bits if act_quant is not None else 32
        self.precision = Precision(wbits, abits)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, weight_quant: nn.Module, act_quant: nn.Module | None, norm: bool = False
    ) -> QLinear:
        """A QLinear sharing `linear`'s weight and bias Parameters (bit-exact, same tensors)."""
        q = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            weight_quant=weight_quant,
            act_quant=act_quant,
            norm=norm,
            device="meta",
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q.train(linear.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if self.norm:
            x = layer_norm(x)
        if self.act_quant is not None:
            x = self.act_quant(x)
        w = self.weight_quant(self.weight) if self.weight_quant is not None else self.weight
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, precision={self.precision}, norm={self.norm}"


def quantize_linears(model: nn.Module, make: Callable[[str, nn.Linear], QLinear | None]) -> list[str]:
    """Replace, in place, every nn.Linear for which `make(name, linear)` returns a QLinear (keep it on None).
    Returns the qualified names replaced. Use `QLinear.from_linear` inside `make` to keep the weights."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                full = f"{name}.{child_name}" if name else child_name
                q = make(full, child)
                if q is not None:
                    setattr(module, child_name, q)
                    replaced.append(full)
    return replaced


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
