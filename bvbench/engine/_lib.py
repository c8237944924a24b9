"""Loads the compiled kernels (`_bvkernels`, built from csrc/ by `pip install` / `make install`) with ctypes and
picks the kernel path: the best one this CPU supports, or the one `BVBENCH_KERNEL` forces.

A plain shared library loaded with ctypes rather than a CPython extension: the C side never sees a Python
object (tensors travel as data pointers), ctypes drops the GIL for the length of every call, and nothing
depends on the interpreter's C API or ABI."""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import platform
import struct
from functools import cache
from pathlib import Path

from bvbench.errors import BvbenchError

__all__ = [
    "ABI_VERSION", "NR", "PATHS", "GemmArgs", "PackArgs", "cpu_flags", "encode", "cpu_model", "kernel_path", "lib", "path_id",
    "supported_paths",
]  # fmt: skip

ABI_VERSION = 3
NR = 16  # rows per panel of a B operand (BV_NR)
PATHS = ("portable", "avx2", "avx512")  # index = the C path id, slowest first
ENV = "BVBENCH_KERNEL"

_i64, _i32, _ptr, _f32, _buf = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_float, ctypes.c_char_p


class GemmArgs(ctypes.Structure):
    """`bv_gemm_args` of csrc/bvkernels.h (field for field)."""

    _fields_ = [
        ("batch", _i64), ("m", _i64), ("n", _i64), ("words", _i64),
        ("a", _ptr), ("lda", _i64), ("stride_a", _i64),
        ("b", _ptr), ("stride_b", _i64),
        ("op", _i32), ("base", _i32), ("mul", _i32), ("accumulate", _i32),
        ("row_sub", _ptr), ("stride_row_sub", _i64),
        ("out_i32", _ptr), ("out_f32", _ptr), ("ldc", _i64), ("stride_c", _i64),
        ("row_scale", _ptr), ("stride_row_scale", _i64),
        ("col_scale", _ptr), ("stride_col_scale", _i64),
        ("batch_scale", _ptr), ("bias", _ptr),
    ]  # fmt: skip


class PackArgs(ctypes.Structure):
    """`bv_pack_args` of csrc/bvkernels.h."""

    _fields_ = [
        ("rows", _i64), ("k", _i64), ("words", _i64),
        ("x", _ptr), ("ldx", _i64),
        ("thresh", _ptr), ("thresh0", _f32), ("strict", _i32), ("panel", _i32),
        ("out", _ptr), ("ldo", _i64), ("group", _i64), ("stride_group", _i64),
    ]  # fmt: skip


# The same structs as packed bytes: struct.pack of a tuple costs a microsecond, a ctypes.Structure built from
# keywords tens of them, and a layer makes several calls. Checked against the ctypes layouts below.
_FORMATS = {GemmArgs: "<4qQ2qQq4iQqQQ2qQqQqQQ", PackArgs: "<3qQqQfii4xQ3q"}
_CODECS = {cls: (struct.Struct(fmt), tuple(f[0] for f in cls._fields_), (0,) * len(cls._fields_))
           for cls, fmt in _FORMATS.items()}
for _cls, (_codec, _, _) in _CODECS.items():
    if _codec.size != ctypes.sizeof(_cls):
        raise ImportError(f"{_cls.__name__}: packed layout {_codec.size} B != ctypes layout {ctypes.sizeof(_cls)} B")


def encode(cls: type[ctypes.Structure], fields: dict[str, int | float | None]) -> bytes:
    """The bytes of a `cls` struct (GemmArgs, PackArgs) with `fields` set and every other field 0 / NULL."""
    codec, names, zeros = _CODECS[cls]
    return codec.pack(*[v or 0 for v in map(fields.get, names, zeros)])


def _library_file() -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"_bvkernels{suffix}"
        if candidate.exists():
            return candidate
    return None


@cache
def lib() -> ctypes.CDLL:
    """The loaded kernel library; BvbenchError when it was not built or is from another source version."""
    found = _library_file()
    if found is None:
        raise BvbenchError("bvbench's C kernels are not built: run `make install` (or `pip install -e .`)")
    so = ctypes.CDLL(str(found))
    so.bv_abi_version.restype = ctypes.c_int
    if so.bv_abi_version() != ABI_VERSION:
        raise BvbenchError(f"{found.name} is stale (ABI {so.bv_abi_version()} != {ABI_VERSION}): run `make install`")
    so.bv_supported_paths.restype = ctypes.c_int
    for name, args in {
        "bv_gemm": [ctypes.c_int, _buf, ctypes.c_int],  # a GemmArgs / PackArgs: `encode` bytes (read-only in C)
        "bv_pack_f32": [ctypes.c_int, _buf, ctypes.c_int],
        "bv_pack_u8": [ctypes.c_int, _buf, ctypes.c_int],
        "bv_pack_gemm": [ctypes.c_int, _buf, _buf, ctypes.c_int, ctypes.c_int],
    }.items():
        getattr(so, name).argtypes, getattr(so, name).restype = args, ctypes.c_int
    so.bv_absmax_i8.argtypes = [ctypes.c_int, _ptr, _i64, _i64, _i64, ctypes.c_int, _f32, _f32, _ptr, _ptr]
    so.bv_absmax_i8.restype = ctypes.c_int
    so.bv_i8_epilogue.argtypes = [_ptr, _i64, _i64, _i32, _ptr, _ptr, _i64, _ptr, _ptr, _i64, _ptr, _ptr]
    so.bv_i8_epilogue.restype = None
    so.bv_panelize.argtypes = [_ptr, _i64, _i64, _i64, _ptr]
    so.bv_row_popcount.argtypes = [_ptr, _i64, _i64, _i64, _ptr]
    so.bv_panelize.restype = so.bv_row_popcount.restype = None
    return so


@cache
def supported_paths() -> tuple[str, ...]:
    """Kernel paths this CPU runs (CPUID + OS register-state checks in C), slowest first."""
    mask = lib().bv_supported_paths()
    return tuple(p for i, p in enumerate(PATHS) if mask & (1 << i))


def kernel_path() -> str:
    """The path every kernel call takes now: `BVBENCH_KERNEL` (avx512 | avx2 | portable) when set, else the
    fastest supported one. A forced path this CPU lacks is a BvbenchError, never a silent downgrade."""
    forced = os.environ.get(ENV, "").strip().lower()
    if not forced:
        return supported_paths()[-1]
    if forced not in PATHS:
        raise BvbenchError(f"{ENV}={forced!r} is not a kernel path; choose one of {', '.join(PATHS)}")
    if forced not in supported_paths():
        raise BvbenchError(f"{ENV}={forced} but this CPU supports only {', '.join(supported_paths())}")
    return forced


_PATH_IDS: dict[str, int] = {}


def path_id(path: str | None = None) -> int:
    """C id of `path` (default: `kernel_path()`), cached per `path` / `BVBENCH_KERNEL` value: every kernel call
    asks, and a layer makes several."""
    key = path or "env:" + os.environ.get(ENV, "")
    found = _PATH_IDS.get(key)
    if found is None:
        found = _PATH_IDS[key] = PATHS.index(path or kernel_path())
    return found


@cache
def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo `model name`), for latency footnotes."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


KERNEL_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni", "amx_int8")


@cache
def cpu_flags() -> tuple[str, ...]:
    """The /proc/cpuinfo flags that matter to the kernels and int8 products (KERNEL_FLAGS order)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return tuple(f for f in KERNEL_FLAGS if f in have)
    except OSError:
        pass
    return ()
