"""bvbench: reproduce, compare and extend binarized and 1.58-bit Vision Transformers.

The Python API (`bvbench.run`, `bvbench.profile`, `bvbench.methods.apply`) is loaded on first use, so that
`import bvbench` stays cheap (no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("run", "profile", "RunResult", "RowResult")
_SUBMODULES = ("methods",)

if TYPE_CHECKING:
    from bvbench import methods
    from bvbench.api import RowResult, RunResult, profile, run


def __getattr__(name: str) -> Any:
    """`bvbench.run` / `profile` / `RunResult` / `RowResult` from bvbench.api, `bvbench.methods`, on first use."""
    import importlib  # not `from bvbench import ...`: that asks this very __getattr__ first

    if name in _API:
        return getattr(importlib.import_module("bvbench.api"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"bvbench.{name}")
    raise AttributeError(f"module 'bvbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_SUBMODULES])


__all__ = ["RowResult", "RunResult", "__version__", "methods", "profile", "run"]
