"""GSB (Group Superposition Binarization): the baseline attention binarizer (GSB Eq. 7-8), GSB on the attention
map (GSB Eq. 9-25) and GSB on V (GSB Eq. 26-34). Attention maps are [B, H, N, N]; V is [B, H, N, C]."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import Function

from bvbench.quant.base import SCALE_MIN, LazyInit, Precision, Quantizer, gt, le, lt, sign
from bvbench.quant.registry import QUANTIZERS
from bvbench.quant.ste import ScaledRoundClip

PHI_MODES = ("hnn", "hn", "zero", "mean")
"""GSB Table VII's offsets: learnable H x N x N (the paper's), learnable H x N, 0, mean(A_re)."""


def gsb_coefficients(k: int) -> list[float]:
    """c_i = 0.5 + 0.4 i / k for i = 1..k (GSB Eq. 13, 27)."""
    return [0.5 + 0.4 * i / k for i in range(1, k + 1)]


@QUANTIZERS.register("gsb_baseline", kind="attention", bits=1, paper="GSB Eq. 7-8 (baseline)")
class GSBBaseline(Quantizer):
    """GSB baseline on the softmax map A [B, H, N, N]: `gamma * clip(round(A / gamma), 0, 1)` (GSB Eq. 7).

    Stage 1: gamma = mean|A| (GSB Eq. 2). Stage 2: gamma = mean of the entries > 0.5 (GSB Eq. 8), switched back to
    GSB Eq. 2 for a sample whose count of A/gamma > 0.5 is below `min_count` (default N, the token count).
    `scaled=False` drops the scale (gamma = 1). gamma is a per-sample statistic (no gradient); backward STE
    (GSB Eq. 5): dA = g * 1[0 <= A/gamma <= 1]. Set `stage` to 2 for the second training stage.
    """

    statistics = True  # gamma is a statistic of A (priced so by evaluate.complexity)

    def __init__(self, stage: int = 1, scaled: bool = True, min_count: int | None = None) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, not {stage}")
        self.stage, self.scaled, self.min_count = stage, scaled, min_count
        self.precision = Precision(32, 1)

    def scale(self, a: Tensor) -> Tensor:
        """gamma per sample, shape [B, 1, 1, 1]."""
        dims = tuple(range(1, a.dim()))
        gamma2 = a.abs().mean(dim=dims, keepdim=True)
        if not self.scaled:
            return torch.ones_like(gamma2)
        if self.stage == 1:
            return gamma2.clamp_min(SCALE_MIN)
        big = a > 0.5
        n_big = big.sum(dim=dims, keepdim=True)
        gamma8 = (a * big).sum(dim=dims, keepdim=True) / n_big.clamp_min(1)
        count = (a > 0.5 * gamma8).sum(dim=dims, keepdim=True)
        need = self.min_count if self.min_count is not None else a.shape[-1]
        ok = (n_big > 0) & (count >= need)
        return torch.where(ok, gamma8, gamma2).clamp_min(SCALE_MIN)

    def forward(self, a: Tensor) -> Tensor:
        return ScaledRoundClip.apply(a, self.scale(a.detach()), 1.0)


class _GSBAttentionFn(Function):
    """Forward GSB Eq. 10-13; backward GSB Eq. 14-20 (scale gradients averaged over H*N*N per sample).

    Masks are compared straight into float tensors (`gt`, `lt`): the same values as `(a > t).to(dtype)` at a
    fraction of the cost. The reductions keep the form `(g * m).sum()`: a dot product would be faster still but
    sums in another order, and training amplifies that rounding (a different run for the same seed)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, alpha: Tensor, coeffs: list[float], grad_scale: float,
                mask0: bool = False) -> Tensor:
        rowmax = a.amax(dim=-1, keepdim=True)
        if mask0:  # GSB Table VIII "same as M_i": A_bin = 1[A_ret > 0.5 rowmax A_ret] (GSB Eq. 12-13, c_0 = 0.5)
            out = gt(a, 0.5 * rowmax).mul_(alpha[0])
        else:
            out = gt(a, 0.5 * alpha[0]).mul_(alpha[0])  # a0 * clip(round(A_ret / a0), 0, 1)
        compiling = torch.compiler.is_compiling()  # no `out=` under the compiler (see quant.base.gt); same values
        m = torch.empty_like(a)  # one mask buffer, reused
        for i, c in enumerate(coeffs, start=1):
            out.addcmul_(gt(a, c * rowmax) if compiling else torch.gt(a, c * rowmax, out=m), alpha[i])  # + a_i M_i
        ctx.save_for_backward(a, alpha, rowmax)
        ctx.coeffs, ctx.grad_scale, ctx.mask0 = coeffs, grad_scale, mask0
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        a, alpha, rowmax = ctx.saved_tensors
        a0 = alpha[0]
        m = torch.empty_like(a)  # one mask buffer, reused
        if ctx.mask0:  # as an M_i: dA_bin = 1[0 < A_ret - Theta_0 < 1] (GSB Eq. 20), da0 as GSB Eq. 15
            local = gt(a, 0.5 * rowmax)  # its own buffer: m is reused below
            galpha = [(g * local).sum()]
            _mask_local(a, 0.5, rowmax, local).mul_(a0)
        else:
            local = lt((a - 0.5 * a0).abs_(), 0.5 * a0)  # A_0 = 1[0 < A_ret / a0 < 1], GSB Eq. 17-18
            galpha = [(g * gt(a, 0.5 * a0)).sum() - (g * local).mul_(a).sum() / a0]  # GSB Eq. 14
        compiling = torch.compiler.is_compiling()
        for i, c in enumerate(ctx.coeffs, start=1):
            m = gt(a, c * rowmax) if compiling else torch.gt(a, c * rowmax, out=m)
            galpha.append((g * m).sum())  # GSB Eq. 15
            local.addcmul_(_mask_local(a, c, rowmax, m), alpha[i])
        return g * local, torch.stack(galpha) * ctx.grad_scale, None, None, None  # GSB Eq. 16


def _mask_local(a: Tensor, c: float, rowmax: Tensor, m: Tensor) -> Tensor:
    """1[0 < A_ret - Theta < 1] from m = 1[A_ret > Theta], Theta = c rowmax (GSB Eq. 20), in place in m. A_ret -
    Theta <= (1 - c) rowmax: the upper bound holds everywhere when every rowmax < 1 / (1 - c) (softmax maps)."""
    if torch.compiler.is_compiling() or bool(((1 - c) * rowmax >= 1).any()):  # compiled: no data-dependent
        m.mul_(lt(a, c * rowmax + 1))  # branch; the factor is all ones where eager skips it
    return m


@QUANTIZERS.register("gsb", kind="attention", bits=1, paper="GSB Eq. 9-25 (attention map)")
class GSBAttention(LazyInit):
    """GSB on the softmax map A [B, H, N, N] -> [B, H, N, N]; needs `num_heads` (H) and `num_tokens` (N).

    A_ret = A - Phi (GSB Eq. 9; Phi learnable [H, N, N], init 0), A_bin = clip(round(A_ret / a0), 0, 1) (GSB Eq. 11),
    M_i = 1[A_ret > c_i * rowmax A_ret] (GSB Eq. 12-13), output a0 A_bin + sum_i a_i M_i (GSB Eq. 10), k masks.
    Backward: dA_ret = g (1[0 < A_ret/a0 < 1] + sum_i a_i 1[0 < A_ret - Theta_i < 1]) (GSB Eq. 16-20);
    da0, da_i per GSB Eq. 14-15, i.e. summed over the batch and divided by H*N*N. Thresholds get no gradient.
    Scales a_0..a_k (`alpha`, clamped >= 1e-5) are initialised at the first forward by GSB Eq. 25 (generalised
    to k: a0 = mean|A_ret|, a0 + ... + a_i = mean of A_ret over band i = {Theta_i <= A_ret < Theta_{i+1}}).
    `variant="code"`: A_ret = A + Phi and the code's init a0 = 4 mean(A), a_i = 4 mean(A over band i).
    GSB Table VII `phi`: "hnn" (learnable [H, N, N], the paper), "hn" (learnable [H, N, 1]: one offset per head
    and query row), "zero" (Phi = 0), "mean" (Phi = mean(A) per sample, a statistic). GSB Table VIII `a_bin`:
    "round" (GSB Eq. 11, the paper) or "mask" (A_bin defined like M_i: 1[A_ret > 0.5 rowmax A_ret]).
    """

    def __init__(self, num_heads: int, num_tokens: int, k: int = 2, variant: str = "paper", phi: str = "hnn",
                 a_bin: str = "round") -> None:
        super().__init__()
        if variant not in ("paper", "code") or phi not in PHI_MODES or a_bin not in ("round", "mask"):
            raise ValueError(f"GSBAttention: variant {variant!r}, phi {phi!r} or a_bin {a_bin!r} unknown")
        self.num_heads, self.num_tokens, self.k, self.variant = num_heads, num_tokens, k, variant
        self.phi_mode, self.a_bin = phi, a_bin
        self.coeffs = gsb_coefficients(k)
        shape = {"hnn": (num_heads, num_tokens, num_tokens), "hn": (num_heads, num_tokens, 1)}.get(phi)
        self.phi = nn.Parameter(torch.zeros(shape)) if shape else None
        self.alpha = nn.Parameter(torch.ones(k + 1))
        self.precision = Precision(32, 1)

    def bands(self, a: Tensor) -> list[Tensor]:
        """Boolean masks of the k bands {Theta_i <= A < Theta_{i+1}} (the last one unbounded above)."""
        rowmax = a.amax(dim=-1, keepdim=True)
        ge = [a >= c * rowmax for c in self.coeffs] + [torch.zeros_like(a, dtype=torch.bool)]
        return [ge[i] & ~ge[i + 1] for i in range(self.k)]

    def init_from(self, a: Tensor) -> None:
        if self.variant == "code":
            vals = [4 * a.mean()] + [4 * (a[m].mean() if m.any() else a.mean()) for m in self.bands(a)]
            self.alpha.copy_(torch.stack(vals).clamp_min(SCALE_MIN))
            return
        cum = [a.abs().mean()]
        for m in self.bands(a):
            cum.append(a[m].mean() if m.any() else cum[-1])
        alpha = torch.stack([cum[0]] + [cum[i] - cum[i - 1] for i in range(1, self.k + 1)])
        self.alpha.copy_(alpha.clamp_min(SCALE_MIN))

    def offset(self, a: Tensor) -> Tensor | float:
        """Phi for map `a` (GSB Eq. 9; Table VII settings)."""
        if self.phi is not None:
            return self.phi
        return a.detach().mean(dim=tuple(range(1, a.dim())), keepdim=True) if self.phi_mode == "mean" else 0.0

    def retarget(self, a: Tensor) -> Tensor:
        """A_ret (GSB Eq. 9), or A + Phi for the code variant."""
        return a + self.offset(a) if self.variant == "code" else a - self.offset(a)

    def forward(self, a: Tensor) -> Tensor:
        a_ret = self.retarget(a)
        self.maybe_init(a_ret)
        scale = 1.0 / a_ret[0].numel()
        return _GSBAttentionFn.apply(a_ret, self.alpha.clamp_min(SCALE_MIN), self.coeffs, scale, self.a_bin == "mask")


class _GSBValueFn(Function):
    """Forward GSB Eq. 26-27; backward GSB Eq. 28-32 (scale gradients averaged over H*N*C per sample). Float masks and
    `(x * m).sum()` reductions as in `_GSBAttentionFn`."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, beta: Tensor, coeffs: list[float], grad_scale: float) -> Tensor:
        dims = tuple(range(1, v.dim()))
        vmax, vmin = v.amax(dim=dims, keepdim=True), v.amin(dim=dims, keepdim=True)
        level = torch.zeros_like(v).add_(beta[0])
        for i, c in enumerate(coeffs, start=1):
            level.add_(_outside(v, c * vmin, c * vmax).mul_(beta[i]))
        ctx.save_for_backward(v, beta, vmax, vmin)
        ctx.coeffs, ctx.grad_scale = coeffs, grad_scale
        return level.mul_(sign(v))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, None, None]:
        v, beta, vmax, vmin = ctx.saved_tensors
        s, absv = sign(v), v.abs()
        local = lt(absv, beta[0])  # V_0 = 1[-1 < V0 / b0 < 1], GSB Eq. 31
        gs, gv = g * s, g * v
        gbeta = [gs.sum() - (gv * local).sum() / beta[0]]  # GSB Eq. 29, i = 0
        for i, c in enumerate(ctx.coeffs, start=1):
            m = _outside(v, c * vmin, c * vmax)
            local.add_(le(absv, beta[i]).mul_(m))  # V_i, GSB Eq. 32
            inside = lt(absv, beta[i]).mul_(m)
            gbeta.append((gs * m).sum() - (gv * inside).sum() / beta[i])  # GSB Eq. 29 masked by M_i
        return g * local, torch.stack(gbeta) * ctx.grad_scale, None, None  # GSB Eq. 28, 30


def _outside(v: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """1[v > hi or v < lo] as floats (lo < hi, so the two never hold together)."""
    return gt(v, hi).add_(lt(v, lo))


@QUANTIZERS.register("gsb_v", kind="attention", bits=1, paper="GSB Eq. 26-34 (value matrix)")
class GSBValue(LazyInit):
    """GSB on V [B, H, N, C] -> [B, H, N, C]; needs `num_heads` (H) and `head_dim` (C).

    V0 = V - Omega (Omega learnable [H, 1, C], init 0), M_i = 1[V0 > c_i vmax or V0 < c_i vmin] with vmax,
    vmin the max/min of V0 per sample (GSB Eq. 27), output sum_i b_i sign(V0) M_i, M_0 = 1 (GSB Eq. 26).
    Backward: dV0 = g (1[|V0/b0| < 1] + sum_i 1[|V0/b_i| <= 1] M_i) (GSB Eq. 30-32); db_i =
    sum g M_i (sign(V0) - V0/b_i 1[|V0/b_i| < 1]) / (H*N*C) (GSB Eq. 28-29). Scales `beta` (>= 1e-5)
    are initialised at the first forward by GSB Eq. 34 (b0 + ... + b_i = mean|V0| over band i).
    """

    def __init__(self, num_heads: int, head_dim: int, k: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.k = num_heads, head_dim, k
        self.coeffs = gsb_coefficients(k)
        self.omega = nn.Parameter(torch.zeros(num_heads, 1, head_dim))
        self.beta = nn.Parameter(torch.ones(k + 1))
        self.precision = Precision(32, 1)

    def masks(self, v: Tensor) -> list[Tensor]:
        """M_1..M_k of GSB Eq. 27 for V0 = `v` (per-sample max/min)."""
        dims = tuple(range(1, v.dim()))
        vmax, vmin = v.amax(dim=dims, keepdim=True), v.amin(dim=dims, keepdim=True)
        return [(v > c * vmax) | (v < c * vmin) for c in self.coeffs]

    def init_from(self, v: Tensor) -> None:
        ms = [torch.ones_like(v, dtype=torch.bool)] + self.masks(v) + [torch.zeros_like(v, dtype=torch.bool)]
        cum: list[Tensor] = []
        for i in range(self.k + 1):
            band = ms[i] & ~ms[i + 1]
            cum.append(v.abs()[band].mean() if band.any() else (cum[-1] if cum else v.abs().mean()))
        beta = torch.stack([cum[0]] + [cum[i] - cum[i - 1] for i in range(1, self.k + 1)])
        self.beta.copy_(beta.clamp_min(SCALE_MIN))

    def forward(self, v: Tensor) -> Tensor:
        v0 = v - self.omega
        self.maybe_init(v0)
        return _GSBValueFn.apply(v0, self.beta.clamp_min(SCALE_MIN), self.coeffs, 1.0 / v0[0].numel())
