"""int8 x int8 -> int32 products for rows with 8-bit activations (BitNet W1A8, BitNet b1.58 W1.58A8, GSB's
8-bit LSQ patch embedding): PyTorch's own `torch._int_mm` (oneDNN / MKL integer GEMM on the CPU), never a
hand-written GEMM (the C side only quantizes and scales). Binary (±1) and ternary ({-1, 0, +1}) weights are int8 codes here."""

from __future__ import annotations

import torch
from torch import Tensor

from bvbench.engine._lib import lib, path_id

__all__ = ["absmax_codes", "int8_epilogue", "int8_matmul"]


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


def absmax_codes(x: Tensor, qb: int, per_row: bool, smin: float, *, path: str | None = None) -> tuple[Tensor, Tensor]:
    """BitNet absmax codes in one C pass: int8 ``clamp(round(x * (qb / gamma)), -qb, qb - 1)`` of float32 x
    (..., K) and gamma = max(|x|.amax(), smin) per tensor (0-dim) or per row (..., 1), as AbsMax computes them."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32 or x2.stride(-1) != 1:
        x2 = x2.to(torch.float32).contiguous()
    codes = torch.empty(x.shape, dtype=torch.int8)
    gamma = torch.empty((*x.shape[:-1], 1) if per_row else (), dtype=torch.float32)
    rc = lib().bv_absmax_i8(path_id(path), x2.data_ptr(), x2.shape[0], x2.shape[1], x2.stride(0), int(per_row),
                            float(qb), smin, codes.data_ptr(), gamma.data_ptr())
    if rc != 0:
        raise RuntimeError(f"kernel path {path!r} is not supported by this CPU")
    return codes, gamma


def _per_row(v: Tensor, rows: int, name: str) -> tuple[Tensor, int]:
    t = v.detach().to(torch.float32).contiguous()
    if t.numel() not in (1, rows):
        raise ValueError(f"{name} has {t.numel()} values for {rows} rows")
    return t, int(t.numel() != 1)


def int8_epilogue(r: Tensor, *, shift: int, w_sum: Tensor, step: Tensor, col_scale: Tensor, eta: Tensor | None,
                  bias: Tensor | None) -> Tensor:
    """float32 ``(r + shift w_sum) step col_scale (+ eta (col_scale w_sum)) (+ bias)`` of an int32 product r
    (..., N) in one C pass; step / eta one value or one per row."""
    n = r.shape[-1]
    r2 = r.reshape(-1, n).contiguous()
    rows = r2.shape[0]
    st, st_stride = _per_row(step, rows, "step")
    et, et_stride = (None, 0) if eta is None else _per_row(eta, rows, "eta")
    ws, cs = w_sum.to(torch.int32).contiguous(), col_scale.to(torch.float32).contiguous()
    b = None if bias is None else bias.to(torch.float32).contiguous()
    out = torch.empty(r.shape, dtype=torch.float32)
    lib().bv_i8_epilogue(r2.data_ptr(), rows, n, shift, ws.data_ptr(), st.data_ptr(), st_stride, cs.data_ptr(),
                         None if et is None else et.data_ptr(), et_stride, None if b is None else b.data_ptr(),
                         out.data_ptr())
    return out
