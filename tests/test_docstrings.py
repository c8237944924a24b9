"""Paper equations are cited with the paper's name (`GSB Eq. 14`, `BiViT Eq. 11`), never as a bare `Eq. 11`,
and no docstring points at a file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bvbench"
PAPERS = r"(GSB|BiViT|Bi-ViT|BiBERT|BitNet|LSQ|Q-ViT|XNOR-Net|ReActNet|DeiT|Hinton|1bit-vit-cifar10|1\.58bit-vit-poster|Bi-Real)"
EQ = re.compile(r"(?<![A-Za-z0-9-])Eqs?\. ?(?=[0-9])")
NAMED = re.compile(PAPERS + r"[ A-Za-z.-]{0,12}$")


def bare_citations(text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in EQ.finditer(line):
            if not NAMED.search(line[: m.start()]):
                out.append(f"{n}: {line.strip()}")
    return out


def test_bare_citation_is_found() -> None:
    assert bare_citations("x = sign(w)  # Eq. 14") and not bare_citations("x  # GSB Eq. 14, BiViT Eq. 2")


def test_every_equation_names_its_paper() -> None:
    bad = [f"{p.relative_to(PACKAGE.parent)}:{line}" for p in sorted(PACKAGE.rglob("*.py"))
           for line in bare_citations(p.read_text())]
    assert bad == []


def test_no_docstring_points_outside_the_repository() -> None:
    bad = [str(p) for p in PACKAGE.rglob("*.py") if "IMPLEMENTATION-NOTES" in p.read_text()]
    assert bad == []
