"""Exact popcount GEMMs over packed operands (see `bvbench.engine.kernels` for the layouts)."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from bvbench.engine._lib import GemmArgs, lib, path_id
from bvbench.engine.kernels import OP_AND, OP_XOR, Panels, row_popcount, to_panels, words_for

__all__ = ["binary_matmul", "mask_matmul"]


def _vec(v: Tensor | None, batch: int, length: int, name: str) -> tuple[Tensor | None, int]:
    """A float32 vector shared by every batch (stride 0) or one per batch (stride `length`)."""
    if v is None:
        return None, 0
    t = v.detach().to(torch.float32).reshape(-1).contiguous()
    if t.numel() == length:
        return t, 0
    if t.numel() == batch * length:
        return t, length
    raise ValueError(f"{name} has {t.numel()} values, expected {length} or {batch} x {length}")


def _operand_a(a: Tensor, b: Panels) -> tuple[Tensor, tuple[int, ...]]:
    """A as (batch, M, W) with unit word stride, and the leading shape of the result."""
    w = words_for(b.k)
    if a.dtype != torch.uint64 or a.dim() < 2 or a.shape[-1] != w:
        raise ValueError(f"A must be uint64 (..., M, {w}) for K={b.k}, got {a.dtype} {tuple(a.shape)}")
    if b.batch == 1:  # a shared B (a weight): every leading index of A is one more row
        a3 = a.reshape(1, -1, w)
    else:
        a3 = a.reshape(-1, a.shape[-2], w)
        if a3.shape[0] != b.batch:
            raise ValueError(f"A has {a3.shape[0]} batches, B has {b.batch}")
    return (a3 if a3.stride(-1) == 1 else a3.contiguous()), tuple(a.shape[:-1])


def _output(out: Tensor | None, shape: tuple[int, ...], view: tuple[int, int, int], dtype: torch.dtype,
            accumulate: bool) -> tuple[Tensor, Tensor]:
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs `out`")
        out = torch.empty(shape, dtype=dtype)
    if tuple(out.shape) != shape or out.dtype != dtype:
        raise ValueError(f"out must be {dtype} {shape}, got {out.dtype} {tuple(out.shape)}")
    o3 = out.view(view)  # raises when the rows are not evenly strided
    if o3.stride(-1) != 1:
        raise ValueError("out must have a contiguous last dim")
    return out, o3


def _gemm(a: Tensor, b: Panels, op: int, base: int, mul: int, row_sub: Tensor | None, *,
          row_scale: Tensor | None = None, col_scale: Tensor | None = None, batch_scale: Tensor | None = None,
          bias: Tensor | None = None, out: Tensor | None = None, accumulate: bool = False,
          threads: int | None = None, path: str | None = None) -> Tensor:
    a3, lead = _operand_a(a, b)
    batch, m, w = a3.shape
    floats = any(v is not None for v in (row_scale, col_scale, batch_scale, bias)) or (
        out is not None and out.dtype == torch.float32
    )
    out, o3 = _output(out, (*lead, b.n), (batch, m, b.n), torch.float32 if floats else torch.int32, accumulate)
    rs, rs_stride = _vec(row_scale, batch, m, "row_scale")
    cs, cs_stride = _vec(col_scale, batch, b.n, "col_scale")
    bs, _ = _vec(batch_scale, 1, batch, "batch_scale")
    bias_t, _ = _vec(bias, 1, b.n, "bias")
    sub = None if row_sub is None else row_sub.reshape(-1).to(torch.int32).contiguous()
    bw = b.words if b.words.is_contiguous() else b.words.contiguous()
    args = GemmArgs(
        batch=batch, m=m, n=b.n, words=w, a=a3.data_ptr(), lda=a3.stride(1), stride_a=a3.stride(0),
        b=bw.data_ptr(), stride_b=bw[0].numel() if b.batch > 1 else 0,
        op=op, base=base, mul=mul, accumulate=int(accumulate),
        row_sub=None if sub is None else sub.data_ptr(), stride_row_sub=m,
        out_i32=None if floats else o3.data_ptr(), out_f32=o3.data_ptr() if floats else None,
        ldc=o3.stride(1), stride_c=o3.stride(0),
        row_scale=None if rs is None else rs.data_ptr(), stride_row_scale=rs_stride,
        col_scale=None if cs is None else cs.data_ptr(), stride_col_scale=cs_stride,
        batch_scale=None if bs is None else bs.data_ptr(), bias=None if bias_t is None else bias_t.data_ptr(),
    )  # fmt: skip
    threads_n = max(1, threads if threads is not None else torch.get_num_threads())
    if lib().bv_gemm(path_id(path), ctypes.byref(args), threads_n) != 0:
        raise RuntimeError(f"kernel path {path!r} is not supported by this CPU")
    return out


def _panels(b: Tensor | Panels, k: int) -> Panels:
    p = b if isinstance(b, Panels) else to_panels(b, k)
    if p.k != k:
        raise ValueError(f"B was packed with K={p.k}, not {k}")
    return p


def binary_matmul(a: Tensor, b: Tensor | Panels, k: int, **epilogue: object) -> Tensor:
    """±1 x ±1 product ``A B^T`` of packed rows A (..., M, W) and B (..., N, W) (or `Panels`): int32 (..., M, N)
    ``K - 2 popcount(a XOR b)`` (XNOR-Net / BNN dot product), exact; padding bits are 0 in both, so they agree
    and are not counted. Keyword epilogue (float32 result): row_scale (M), col_scale (N), batch_scale, bias
    (N); `out` (an int32 or float32 tensor of the result's shape) and `accumulate` (add into out); threads,
    path (default `torch.get_num_threads()`, `kernel_path()`)."""
    return _gemm(a, _panels(b, k), OP_XOR, k, -2, None, **epilogue)  # type: ignore[arg-type]


def mask_matmul(m: Tensor, v: Tensor | Panels, k: int, *, signed: bool = True, **epilogue: object) -> Tensor:
    """{0,1} x {±1} product ``M V`` (`signed`: ``2 popcount(m AND v) - popcount(m)``, V packed by sign, bit =
    +1) or {0,1} x {0,1} (``popcount(m AND v)``), exact int32 (..., M, N); `v` holds V^T's rows, i.e. the
    columns of V packed along K. Used for binarized attention maps times binarized values (BiBERT Bool
    attention, BiViT SAB Eq. 10, GSB Eq. 10 masks). Epilogue keywords as in `binary_matmul`."""
    panels = _panels(v, k)
    if not signed:
        return _gemm(m, panels, OP_AND, 0, 1, None, **epilogue)  # type: ignore[arg-type]
    return _gemm(m, panels, OP_AND, 0, 2, row_popcount(m), **epilogue)  # type: ignore[arg-type]
