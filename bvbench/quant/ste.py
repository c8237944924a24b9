"""Autograd functions shared by the quantizers: sign with a chosen straight-through estimator and the
scaled sign / scaled round-clip binarizers with learnable-scale gradients (LSQ-style, GSB Eq. 14 and 29)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from bvbench.quant.base import gt, le, lt, sign

STE_MODES = ("identity", "clipped", "clipped_open", "approxsign")


def ste_grad(x: Tensor, mode: str) -> Tensor:
    """d sign(x)/dx as estimated by `mode`: identity (GSB Eq. 6), clipped 1[|x|<=1] (GSB Eq. 5, Bi-ViT Sec. 3.1),
    clipped_open 1[|x|<1] (BiViT Eq. 2) or Bi-Real's ApproxSign (2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere)."""
    if mode == "identity":
        return torch.ones_like(x)
    if mode == "clipped":
        return le(x.abs(), 1)
    if mode == "clipped_open":
        return lt(x.abs(), 1)
    if mode == "approxsign":
        return torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x))
    raise ValueError(f"unknown straight-through estimator {mode!r}; choose from {STE_MODES}")


class SignSTE(Function):
    """sign(x) in {-1,+1} forward; backward g * ste_grad(x, mode)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, mode: str = "clipped", zero_to_positive: bool = True) -> Tensor:
        ctx.mode = mode
        if mode != "identity":
            ctx.save_for_backward(x)
        return sign(x, zero_to_positive)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        if ctx.mode == "identity":
            return g, None, None
        (x,) = ctx.saved_tensors
        return g * ste_grad(x, ctx.mode), None, None


def sign_ste(x: Tensor, mode: str = "clipped", zero_to_positive: bool = True) -> Tensor:
    """Functional form of `SignSTE`."""
    return SignSTE.apply(x, mode, zero_to_positive)


class ScaledSign(Function):
    """y = alpha * sign(x / alpha). Backward (Bi-ViT Eq. 11, GSB Eq. 29): dy/dx = 1[|x| <= alpha],
    dy/dalpha = sign(x) - (x/alpha) 1[|x| <= alpha], summed to alpha's shape and multiplied by `grad_scale`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, grad_scale: float = 1.0) -> Tensor:
        ctx.save_for_backward(x, alpha)
        ctx.grad_scale = grad_scale
        return sign(x).mul_(alpha)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor | None, None]:
        x, alpha = ctx.saved_tensors
        gx = g * le(x.abs(), alpha)
        if not ctx.needs_input_grad[1]:
            return gx, None, None
        shape = alpha.shape
        ga = (g * sign(x)).sum_to_size(shape) - (gx * x).sum_to_size(shape) / alpha
        return gx, ga * ctx.grad_scale, None


class ScaledRoundClip(Function):
    """y = alpha * clip(round(x / alpha), 0, 1) (GSB Eq. 3, 11). Backward (GSB Eq. 5, 14, 17; LSQ):
    dy/dx = 1[0 <= x/alpha <= 1], dy/dalpha = round-clip(x/alpha) - (x/alpha) 1[0 <= x/alpha <= 1]."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, grad_scale: float = 1.0) -> Tensor:
        ctx.save_for_backward(x, alpha)
        ctx.grad_scale = grad_scale
        return gt(x, 0.5 * alpha).mul_(alpha)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor | None, None]:
        x, alpha = ctx.saved_tensors
        half = 0.5 * alpha
        gx = g * le((x - half).abs_(), half)  # 0 <= x <= alpha
        if not ctx.needs_input_grad[1]:
            return gx, None, None
        shape = alpha.shape
        ga = (g * gt(x, half)).sum_to_size(shape) - (gx * x).sum_to_size(shape) / alpha
        return gx, ga * ctx.grad_scale, None


class IdentitySTE(Function):
    """Forward `quantize(x)`; backward the identity g (BitNet's straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, quantize: Callable[[Tensor], Tensor]) -> Tensor:
        return quantize(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g, None
