"""Attention binarizers: BiBERT Bool attention, BiViT Softmax-aware Binarization (SAB) and Bi-ViT's learnable
head-wise scaling factors (LSF). Attention maps are [B, H, N, N]; q, k, v are [B, H, N, d]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import Function

from bvbench.quant.activations import layer_norm
from bvbench.quant.base import SCALE_MIN, LazyInit, Precision, Quantizer, ge, gt, le, sign
from bvbench.quant.registry import QUANTIZERS
from bvbench.quant.ste import ScaledRoundClip, ScaledSign


class _BoolClippedSTE(Function):
    """Bool(x) = 1[x > 0] (BiViT Eq. 5); backward clipped STE g * 1[|x| <= 1]."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return gt(x, 0)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x.abs() <= 1, g, torch.zeros_like(g))


@QUANTIZERS.register("bibert", kind="attention", bits=1, paper="BiBERT (BiViT Eq. 5 baseline)")
class BiBERTAttention(Quantizer):
    """BiBERT Bi-Attention: no softmax, `A = 1[scores > 0]` with scores = B_Q B_K^T / sqrt(d) of shape
    [B, H, N, N]; clipped STE. q, k, v themselves use `sign_act`. `target` is softmax(scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.precision = Precision(32, 1)

    def forward(self, scores: Tensor) -> Tensor:
        return _BoolClippedSTE.apply(scores)

    def target(self, x: Tensor) -> Tensor:
        return x.softmax(dim=-1)


class _RowScaledSignFn(Function):
    """alpha * sign(A), alpha = ||A_row||_1 / N (detached); backward g * alpha * 1[|A| <= 1] (Bi-ViT Sec. 3.1 STE)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor) -> Tensor:
        alpha = a.abs().mean(dim=-1, keepdim=True)
        ctx.save_for_backward(a, alpha)
        return sign(a).mul_(alpha)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        a, alpha = ctx.saved_tensors
        return g * alpha * le(a.abs(), 1)


@QUANTIZERS.register("bireal_attn", kind="attention", bits=1, paper="Bi-ViT Sec. 3.1, Bi-ViT Eq. 2 (Bi-Real baseline)")
class SignScaledAttention(Quantizer):
    """Bi-ViT's baseline (Sec. 3.1, Bi-ViT Eq. 2) on the softmax map A [B, H, N, N]: b_A = sign(A) as for every other
    activation, with XNOR-Net's [30] scale alpha = ||A_row||_1 / N per query row: out = alpha * sign(A).
    For a softmax map sign(A) = +1 everywhere (sign(0) = +1) and alpha = 1/N: every row attends uniformly, never
    to nothing. Backward: the paper's STE 1[|A| <= 1] times the (detached) scale, dA = g * alpha * 1[|A| <= 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.precision = Precision(32, 1)

    def forward(self, a: Tensor) -> Tensor:
        return _RowScaledSignFn.apply(a)


def optimal_threshold(p: Tensor, iters: int = 5, beta: float = 0.25) -> tuple[Tensor, Tensor, Tensor]:
    """BiViT Eq. 6-10: block coordinate descent per row of `p` for the 1-bit basis v and code b in {0, 1}:
    v = x.b / ||b||^2 (BiViT Eq. 8), T = v / 2 (BiViT Eq. 9), b = Bool(x - T) (BiViT Eq. 10), `iters` rounds. The paper gives
    no start; we start from b = Bool(x - beta max x) (BiViT Eq. 11), so the error never exceeds scaled SAB's.
    BCD reaches a local optimum. Returns (b, v, T), v and T with a trailing dim of 1."""
    b = gt(p, beta * p.amax(dim=-1, keepdim=True))
    v = t = p.new_zeros(p.shape[:-1] + (1,))
    for _ in range(iters):
        v = (p * b).sum(dim=-1, keepdim=True) / b.sum(dim=-1, keepdim=True).clamp_min(1)
        t = v / 2
        b = gt(p, t)
    return b, v, t


class _SABFunction(Function):
    """Forward: `binarize(scores)` -> (P, A_b); backward: the softmax vjp P (g - sum g P) (BiViT Eq. 12)."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, binarize: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Tensor:
        p, out = binarize(scores)
        ctx.save_for_backward(p)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        (p,) = ctx.saved_tensors
        return p * (g - (g * p).sum(dim=-1, keepdim=True)), None


@QUANTIZERS.register("sab", kind="attention", bits=1, paper="BiViT Softmax-aware Binarization (BiViT Eq. 6-12)")
class SoftmaxAwareBinarizer(Quantizer):
    """BiViT SAB on pre-softmax scores [B, H, N, N]: P = softmax(scores), per row T = beta * max P (BiViT Eq. 11),
    A_b = Bool(P - T) = 1[P > T] (BiViT Eq. 10) in {0, 1}, not rescaled; backward is softmax's gradient (BiViT Eq. 12).

    `threshold="optimal"` uses the block-coordinate-descent T of BiViT Eq. 6-10 (`iters` rounds, for analysis);
    `scale=True` multiplies by the per-row basis v = P.b / ||b||^2 (BiViT Eq. 8; Table 1 rows with scales).
    `variant="code"`: 1[P >= T] as in the public code. `target` is softmax(scores).
    """

    def __init__(
        self,
        beta: float = 0.25,
        threshold: str = "approx",
        iters: int = 5,
        scale: bool = False,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        if threshold not in ("approx", "optimal") or variant not in ("paper", "code"):
            raise ValueError("threshold must be 'approx'|'optimal' and variant 'paper'|'code'")
        self.beta, self.threshold, self.iters = beta, threshold, iters
        self.scale, self.variant = scale, variant
        self.precision = Precision(32, 1)

    def binarize(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """(P, A_b) for pre-softmax `scores` without gradient bookkeeping."""
        p = scores.softmax(dim=-1)
        if self.threshold == "optimal":
            b = optimal_threshold(p, self.iters, self.beta)[0]
        else:
            t = self.beta * p.amax(dim=-1, keepdim=True)
            b = ge(p, t) if self.variant == "code" else gt(p, t)
        if self.scale:
            b = b * ((p * b).sum(dim=-1, keepdim=True) / b.sum(dim=-1, keepdim=True).clamp_min(1))
        return p, b

    def forward(self, scores: Tensor) -> Tensor:
        return _SABFunction.apply(scores, self.binarize)

    def target(self, x: Tensor) -> Tensor:
        return x.softmax(dim=-1)


@QUANTIZERS.register("lsf", kind="attention", bits=1, paper="Bi-ViT learnable head-wise scaling (Bi-ViT Eq. 9-11)")
class LearnableScaleBinarizer(LazyInit):
    """Bi-ViT LSF: per head alpha_h, `alpha_h * sign(x / alpha_h)` for q, k, v ([B, H, N, d], `signed=True`).

    Backward (Bi-ViT Eq. 11): dx = g * 1[|x| <= alpha_h]; dalpha_h = sum g (sign(x) - x/alpha_h 1[|x| <= alpha_h])
    (the same STE applied to alpha, as GSB Eq. 29). For the attention map A >= 0 ([B, H, N, N], `signed=False`)
    sign would give all ones, so it uses `alpha_h * clip(round(A / alpha_h), 0, 1)` with clip range
    0 <= A <= alpha_h. alpha_h is initialised to 2 * mean|x| of head h on the first batch (the code's rule;
    the paper gives none), clamped >= 1e-5.
    `variant="code"` adds the public code's learnable per-head zero point z (init 0): f(x - z) + z.
    """

    def __init__(self, num_heads: int, signed: bool = True, variant: str = "paper") -> None:
        super().__init__()
        if variant not in ("paper", "code"):
            raise ValueError(f"variant must be 'paper' or 'code', not {variant!r}")
        self.num_heads, self.signed, self.variant = num_heads, signed, variant
        self.alpha = nn.Parameter(torch.ones(num_heads))
        if variant == "code":
            self.zero_point = nn.Parameter(torch.zeros(num_heads))
        else:
            self.register_parameter("zero_point", None)
        self.precision = Precision(32, 1)

    def init_from(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        self.alpha.copy_((2 * x.abs().mean(dim=dims)).clamp_min(SCALE_MIN))

    def forward(self, x: Tensor) -> Tensor:
        self.maybe_init(x)
        alpha = self.alpha.clamp_min(SCALE_MIN).view(-1, 1, 1)
        fn = ScaledSign if self.signed else ScaledRoundClip
        if self.zero_point is None:
            return fn.apply(x, alpha, 1.0)
        z = self.zero_point.view(-1, 1, 1)
        return fn.apply(x - z, alpha, 1.0) + z


@QUANTIZERS.register("lsf_rectified", kind="attention", bits=1, paper="GSB Table I-III Q-ViT* (Q-ViT IRM + Bi-ViT LSF)")
class RectifiedLSF(LearnableScaleBinarizer):
    """Q-ViT's information rectification before binarizing q and k: parameter-free LayerNorm over head_dim,
    then the head-wise learnable-scale sign alpha_h sign(x / alpha_h) (Bi-ViT Eq. 9-10)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(layer_norm(x))
