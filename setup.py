"""Builds bvbench's packed bit kernels (bvbench/engine/csrc) with the system C compiler; metadata is in
pyproject.toml. The result is a plain shared library (no Python C API) that bvbench.engine loads with ctypes:
ctypes releases the GIL during each call, the C code never touches Python objects or reference counts, and
the library does not depend on the interpreter's ABI. SIMD paths are compiled with per-function target
attributes and chosen at run time, so no -march flag is passed."""

from setuptools import Extension, setup

CSRC = "bvbench/engine/csrc"

setup(
    ext_modules=[
        Extension(
            "bvbench.engine._bvkernels",
            sources=[f"{CSRC}/bv_common.c", f"{CSRC}/bv_avx2.c", f"{CSRC}/bv_avx512.c"],
            depends=[f"{CSRC}/bvkernels.h"],
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-fvisibility=hidden", "-pthread"],
            extra_link_args=["-pthread"],
        )
    ]
)
