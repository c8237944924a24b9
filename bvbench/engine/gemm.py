"""Exact popcount GEMMs over packed operands (see `bvbench.engine.kernels` for the layouts)."""

from __future__ import annotations

import torch
from torch import Tensor

from bvbench.engine._lib import NR, GemmArgs, PackArgs, encode, lib, path_id
from bvbench.engine.kernels import OP_AND, OP_XOR, Panels, row_popcount, to_panels, words_for

__all__ = ["binary_matmul", "mask_matmul", "pack_matmul"]


def _f32(v: Tensor) -> Tensor:
    return v if v.dtype == torch.float32 and v.is_contiguous() else v.detach().to(torch.float32).contiguous()


def _vec(v: Tensor | None, batch: int, length: int, name: str) -> tuple[Tensor | None, int]:
    """A float32 vector shared by every batch (stride 0) or one per batch (stride `length`)."""
    if v is None:
        return None, 0
    t = _f32(v)
    if t.numel() == length:
        return t, 0
    if t.numel() == batch * length:
        return t, length
    raise ValueError(f"{name} has {t.numel()} values, expected {length} or {batch} x {length}")


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _operand_a(a: Tensor, b: Panels) -> tuple[Tensor, tuple[int, ...]]:
    """A as (batch, M, W) with unit word stride, and the leading shape of the result."""
    w = words_for(b.k)
    if a.dtype != torch.uint64 or a.dim() < 2 or a.shape[-1] != w:
        raise ValueError(f"A must be uint64 (..., M, {w}) for K={b.k}, got {a.dtype} {tuple(a.shape)}")
    return _batched(a, b)


def _batched(a: Tensor, b: Panels) -> tuple[Tensor, tuple[int, ...]]:
    """A (packed words or float rows) as (batch, M, last) with a contiguous last dim, and the result's leading
    shape: a shared B (a weight) makes every leading index of A one more row."""
    last, nb = a.shape[-1], b.batch
    a3 = a.reshape(1, -1, last) if nb == 1 else a.reshape(-1, a.shape[-2], last)
    if a3.shape[0] != nb:
        raise ValueError(f"A has {a3.shape[0]} batches, B has {nb}")
    return (a3 if a3.stride(-1) == 1 else a3.contiguous()), tuple(a.shape[:-1])


def _output(out: Tensor | None, shape: tuple[int, ...], view: tuple[int, int, int], dtype: torch.dtype,
            accumulate: bool) -> tuple[Tensor, int, int]:
    """The result tensor and its row and batch strides (a new one is dense: no view needed)."""
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs `out`")
        return torch.empty(shape, dtype=dtype), view[2], view[1] * view[2]
    if tuple(out.shape) != shape or out.dtype != dtype:
        raise ValueError(f"out must be {dtype} {shape}, got {out.dtype} {tuple(out.shape)}")
    o3 = out.view(view)  # raises when the rows are not evenly strided
    if o3.stride(-1) != 1:
        raise ValueError("out must have a contiguous last dim")
    return out, o3.stride(1), o3.stride(0)


def _args(batch: int, m: int, b: Panels, op: int, base: int, mul: int, *, row_scale: Tensor | None = None,
          col_scale: Tensor | None = None, batch_scale: Tensor | None = None, bias: Tensor | None = None,
          out: Tensor | None = None, accumulate: bool = False, lead: tuple[int, ...]) -> tuple[dict, Tensor, list]:
    """The C arguments of one GEMM (A's pointer still unset), its output, and the tensors they point into."""
    floats = row_scale is not None or col_scale is not None or batch_scale is not None or bias is not None or (
        out is not None and out.dtype == torch.float32
    )
    n = b.n
    out, ldc, stride_c = _output(out, (*lead, n), (batch, m, n), torch.float32 if floats else torch.int32,
                                 accumulate)
    rs, rs_stride = _vec(row_scale, batch, m, "row_scale")
    cs, cs_stride = _vec(col_scale, batch, n, "col_scale")
    bs, _ = _vec(batch_scale, 1, batch, "batch_scale")
    bias_t, _ = _vec(bias, 1, n, "bias")
    bw = b.words if b.words.is_contiguous() else b.words.contiguous()
    nb, panels, words, _ = bw.shape
    g = dict(
        batch=batch, m=m, n=n, words=words, b=bw.data_ptr(), stride_b=panels * words * NR if nb > 1 else 0,
        op=op, base=base, mul=mul, accumulate=int(accumulate), ldc=ldc, stride_c=stride_c,
        row_scale=_ptr(rs), stride_row_scale=rs_stride, col_scale=_ptr(cs), stride_col_scale=cs_stride,
        batch_scale=_ptr(bs), bias=_ptr(bias_t), **{"out_f32" if floats else "out_i32": out.data_ptr()},
    )  # fmt: skip
    return g, out, [bw, rs, cs, bs, bias_t]


def _threads(threads: int | None) -> int:
    return max(1, threads if threads is not None else torch.get_num_threads())


def _gemm(a: Tensor, b: Panels, op: int, base: int, mul: int, row_sub: Tensor | None, *,
          threads: int | None = None, path: str | None = None, **epilogue: Tensor | bool | None) -> Tensor:
    a3, lead = _operand_a(a, b)
    batch, m, w = a3.shape
    g, out, keep = _args(batch, m, b, op, base, mul, lead=lead, **epilogue)  # type: ignore[arg-type]
    g.update(a=a3.data_ptr(), lda=a3.stride(1), stride_a=a3.stride(0))
    sub = None if row_sub is None else row_sub.reshape(-1).to(torch.int32).contiguous()
    if sub is not None:
        g.update(row_sub=sub.data_ptr(), stride_row_sub=m)
    if lib().bv_gemm(path_id(path), encode(GemmArgs, g), _threads(threads)) != 0:
        raise RuntimeError(f"kernel path {path!r} is not supported by this CPU")
    del keep, sub
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


_MODES = {"binary": (OP_XOR, -2, False), "mask": (OP_AND, 2, True), "mask01": (OP_AND, 1, False)}


def pack_matmul(x: Tensor, b: Panels, *, mode: str = "binary", threshold: float | Tensor = 0.0,
                strict: bool = False, threads: int | None = None, path: str | None = None,
                **epilogue: Tensor | bool | None) -> Tensor:
    """`pack_signs(x, threshold, strict)` then `binary_matmul` (mode "binary"), `mask_matmul` ("mask": {0,1} x
    {+-1}; "mask01": {0,1} x {0,1}) in one kernel call: float rows x (..., M, K), the packed bits never
    leave C. Same epilogue keywords and result as the two calls."""
    op, mul, sub = _MODES[mode]
    if x.shape[-1] != b.k:
        raise ValueError(f"x has K={x.shape[-1]}, B was packed with K={b.k}")
    x3, lead = _batched(_f32(x) if x.dtype != torch.float32 else x, b)
    batch, m, k = x3.shape
    g, out, keep = _args(batch, m, b, op, k if op == OP_XOR else 0, mul, lead=lead, **epilogue)  # type: ignore[arg-type]
    thresh = _f32(threshold).reshape(-1) if isinstance(threshold, Tensor) else None
    if thresh is not None and thresh.numel() != batch * m:
        raise ValueError(f"threshold has {thresh.numel()} values for {batch * m} rows")
    sb, ldx, _ = x3.stride()
    if sb != m * ldx:  # rows must be evenly strided across batches
        x3 = x3.contiguous()
        ldx = k
    pa = dict(rows=batch * m, k=k, words=words_for(k), x=x3.data_ptr(), ldx=ldx, thresh=_ptr(thresh),
              thresh0=0.0 if thresh is not None else float(threshold), strict=int(strict))  # type: ignore[arg-type]
    rc = lib().bv_pack_gemm(path_id(path), encode(PackArgs, pa), encode(GemmArgs, g), int(sub), _threads(threads))
    if rc != 0:
        raise RuntimeError(f"pack_matmul failed ({rc}): kernel path {path!r} unsupported or out of memory")
    del keep, thresh
    return out
