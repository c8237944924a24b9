"""Rooms stay small: no function in bvbench/ is longer than MAX_LINES (def line to last line, decorators aside),
except the few in ALLOWED, each with the reason it is still long."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bvbench"
MAX_LINES = 60

ALLOWED = {
}


def long_functions(source: str, max_lines: int = MAX_LINES) -> dict[str, int]:
    """{qualified name: lines} of the functions and methods in `source` longer than `max_lines`."""
    found: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                n = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                if n > max_lines:
                    found[prefix + child.name] = n
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(ast.parse(source), "")
    return found


def package_long_functions() -> dict[str, int]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        out.update({f"{rel}:{name}": n for name, n in long_functions(path.read_text()).items()})
    return out


def test_no_function_over_the_limit_outside_the_allow_list() -> None:
    extra = {k: n for k, n in package_long_functions().items() if k not in ALLOWED}
    assert not extra, "split these functions (lines): " + ", ".join(f"{k} ({n})" for k, n in sorted(extra.items()))


def test_the_check_sees_long_functions_and_methods() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 1))
    src = f"def short():\n    return 1\n\n\ndef long():\n{body}    return 0\n"
    assert long_functions(src) == {"long": MAX_LINES + 1}
    method = "class C:\n    def m(self):\n" + "".join(f"        x{i} = {i}\n" for i in range(MAX_LINES))
    assert long_functions(method) == {"C.m": MAX_LINES + 1}
    assert long_functions(method, MAX_LINES + 1) == {}
