"""bvbench's packed inference engine: C kernels (csrc/, runtime CPU dispatch: AVX-512 VPOPCNTDQ, AVX2,
portable) for exact XNOR/AND-popcount products of packed bits, and int8 products through PyTorch."""

from bvbench.engine._lib import PATHS, cpu_flags, cpu_model, kernel_path, supported_paths
from bvbench.engine.gemm import binary_matmul, mask_matmul
from bvbench.engine.int8 import int8_matmul
from bvbench.engine.kernels import (
    Panels,
    pack_bool,
    pack_bool_panels,
    pack_panels,
    pack_signs,
    row_popcount,
    to_panels,
    words_for,
)

__all__ = [
    "PATHS",
    "Panels",
    "binary_matmul",
    "cpu_flags",
    "cpu_model",
    "int8_matmul",
    "kernel_path",
    "mask_matmul",
    "pack_bool",
    "pack_bool_panels",
    "pack_panels",
    "pack_signs",
    "row_popcount",
    "supported_paths",
    "to_panels",
    "words_for",
]
