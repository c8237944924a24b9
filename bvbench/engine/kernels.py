"""Python face of the packed bit kernels: pack signs or masks along K into uint64 words, then exact popcount
products (XNOR-popcount BNN dot product ``K - 2 popcount(a XOR b)`` for ±1 x ±1, ``2 popcount(m AND v) -
popcount(m)`` for {0,1} x {±1} (BiBERT Bool attention, BiViT SAB, GSB masks), ``popcount(m AND v)`` for
{0,1} x {0,1}), with an optional fused float epilogue ``r * row_scale * col_scale + bias``.

Operands: A is a uint64 tensor (..., M, W) of packed rows (`pack_signs`, `pack_bool`), W = ceil(K / 64), bit
j of word w is element 64 w + j, padding bits 0. B is `Panels` (`pack_panels`, `to_panels`): rows grouped by
16 so that one A word meets sixteen B words in one vector instruction; weights are packed once, activations
used as B (K and V of attention) per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bvbench.engine._lib import NR, PackArgs, encode, lib, path_id

__all__ = [
    "Panels",
    "pack_bool",
    "pack_bool_panels",
    "pack_panels",
    "pack_signs",
    "row_popcount",
    "to_panels",
    "words_for",
]

OP_XOR, OP_AND = 0, 1


def words_for(k: int) -> int:
    """64-bit words per packed row of K bits."""
    return -(-k // 64)


@dataclass(frozen=True)
class Panels:
    """A packed B operand: `words` (batch, ceil(n / 16), W, 16) uint64, `n` rows of `k` bits per batch."""

    words: Tensor
    n: int
    k: int

    @property
    def batch(self) -> int:
        return self.words.shape[0]

    @property
    def nbytes(self) -> int:
        return self.words.numel() * 8


def _threads(threads: int | None) -> int:
    return max(1, threads if threads is not None else torch.get_num_threads())


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what}: kernel path not supported by this CPU")


def _rows2d(x: Tensor) -> Tensor:
    """x as a 2-D (rows, last dim) tensor whose rows are evenly strided and whose last dim is contiguous."""
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _pack(x: Tensor, out: Tensor, threshold: float | Tensor, strict: bool, panel_rows: int | None,
          threads: int | None, path: str | None) -> None:
    """Pack every row of x (float32 or uint8) into `out` (rows layout, or panels of `panel_rows` rows)."""
    x2 = _rows2d(x)
    rows, k = x2.shape
    thresh = None
    if isinstance(threshold, Tensor):
        thresh = threshold.detach().to(torch.float32).reshape(-1).contiguous()
        if thresh.numel() != rows:
            raise ValueError(f"threshold has {thresh.numel()} values for {rows} rows")
    w = words_for(k)
    group = panel_rows or rows
    args = encode(PackArgs, dict(
        rows=rows, k=k, words=w, x=x2.data_ptr(), ldx=x2.stride(0),
        thresh=thresh.data_ptr() if thresh is not None else None,
        thresh0=0.0 if isinstance(threshold, Tensor) else float(threshold), strict=int(strict),
        panel=int(panel_rows is not None), out=out.data_ptr(), ldo=w, group=group,
        stride_group=-(-group // NR) * w * NR,
    ))  # fmt: skip
    fn = lib().bv_pack_u8 if x2.dtype == torch.uint8 else lib().bv_pack_f32
    _check(fn(path_id(path), args, _threads(threads)), "pack")


def _as_input(x: Tensor, bool_input: bool) -> Tensor:
    if bool_input:
        return x.view(torch.uint8) if x.dtype == torch.bool else (x != 0).view(torch.uint8)
    return x.detach().to(torch.float32)


def pack_signs(
    x: Tensor, *, threshold: float | Tensor = 0.0, strict: bool = False, threads: int | None = None,
    path: str | None = None,
) -> Tensor:
    """Bits ``x >= threshold`` (``x > threshold`` when `strict`) along the last dim: (..., K) -> uint64
    (..., ceil(K / 64)). sign(0) = +1 is ``strict=False`` (GSB Eq. 4), sign(0) = -1 is ``strict=True``
    (BiViT Eq. 1); a tensor `threshold` gives one threshold per row (x.shape[:-1]), e.g. SAB's beta * max P."""
    x = _as_input(x, False)
    out = torch.empty(*x.shape[:-1], words_for(x.shape[-1]), dtype=torch.uint64)
    _pack(x, out, threshold, strict, None, threads, path)
    return out


def pack_bool(mask: Tensor, *, threads: int | None = None, path: str | None = None) -> Tensor:
    """Bits ``mask != 0`` along the last dim: (..., K) -> uint64 (..., ceil(K / 64))."""
    m = _as_input(mask, True)
    out = torch.empty(*m.shape[:-1], words_for(m.shape[-1]), dtype=torch.uint64)
    _pack(m, out, 0.0, False, None, threads, path)
    return out


def _panels_out(x: Tensor) -> tuple[Tensor, int, int]:
    n, k = x.shape[-2], x.shape[-1]
    batch = math.prod(x.shape[:-2])
    return torch.zeros(batch, -(-n // NR), words_for(k), NR, dtype=torch.uint64), n, k


def pack_panels(
    x: Tensor, *, threshold: float | Tensor = 0.0, strict: bool = False, threads: int | None = None,
    path: str | None = None,
) -> Panels:
    """`pack_signs` of a B operand (..., N, K) straight into panel layout (one batch per leading index)."""
    x = _as_input(x, False)
    out, n, k = _panels_out(x)
    _pack(x, out, threshold, strict, n, threads, path)
    return Panels(out, n, k)


def pack_bool_panels(mask: Tensor, *, threads: int | None = None, path: str | None = None) -> Panels:
    """`pack_bool` of a B operand (..., N, K) into panel layout."""
    m = _as_input(mask, True)
    out, n, k = _panels_out(m)
    _pack(m, out, 0.0, False, n, threads, path)
    return Panels(out, n, k)


def to_panels(packed: Tensor, k: int) -> Panels:
    """Panel layout of packed rows (..., N, W) with K = `k` bits each."""
    if packed.dtype != torch.uint64 or packed.shape[-1] != words_for(k):
        raise ValueError(f"expected uint64 (..., N, {words_for(k)}) words for K={k}, got {packed.dtype} "
                         f"{tuple(packed.shape)}")
    src = packed.reshape(-1, *packed.shape[-2:]).contiguous()
    n, w = src.shape[-2:]
    out = torch.empty(src.shape[0], -(-n // NR), w, NR, dtype=torch.uint64)
    for b in range(src.shape[0]):
        lib().bv_panelize(src[b].data_ptr(), n, w, w, out[b].data_ptr())
    return Panels(out, n, k)


def row_popcount(packed: Tensor) -> Tensor:
    """Set bits per packed row: (..., W) uint64 -> int32 (...)."""
    src = _rows2d(packed)
    out = torch.empty(src.shape[0], dtype=torch.int32)
    lib().bv_row_popcount(src.data_ptr(), src.shape[0], src.shape[1], src.stride(0), out.data_ptr())
    return out.reshape(packed.shape[:-1])
