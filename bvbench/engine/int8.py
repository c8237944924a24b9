"""int8 x int8 -> int32 products for rows with 8-bit activations (BitNet W1A8, BitNet b1.58 W1.58A8, GSB's
8-bit LSQ patch embedding): PyTorch's own `torch._int_mm` (oneDNN / MKL integer GEMM on the CPU), never a
hand-written kernel. Binary (±1) and ternary ({-1, 0, +1}) weights are int8 codes here."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["int8_matmul"]


def int8_matmul(
    a: Tensor, w: Tensor, *, row_scale: Tensor | None = None, col_scale: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """``A W^T`` for int8 codes A (..., M, K) and W (N, K): int32 (..., M, N), exact (every partial sum fits
    int32 for K < 2^17). With any of row_scale (..., M), col_scale (N), bias (N): float32
    ``r * row_scale * col_scale + bias`` (in that order)."""
    if a.dtype != torch.int8 or w.dtype != torch.int8 or w.dim() != 2 or a.shape[-1] != w.shape[1]:
        raise ValueError(f"expected int8 (..., M, K) and (N, K), got {a.dtype} {tuple(a.shape)} and "
                         f"{w.dtype} {tuple(w.shape)}")
    a2 = a.reshape(-1, a.shape[-1])
    r = torch._int_mm(a2, w.t()).reshape(*a.shape[:-1], w.shape[0])
    if row_scale is None and col_scale is None and bias is None:
        return r
    y = r.to(torch.float32)
    if row_scale is not None:
        y = y * row_scale.to(torch.float32).unsqueeze(-1)
    if col_scale is not None:
        y = y * col_scale.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y
