"""METHODS_VERSION is in the id of every row that runs a quantizer; a full-precision row keeps its id when it
changes (it computes nothing of the methods), its binarized dependants do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bvbench.recipes import load_recipe
from bvbench.runner.identity import REFERENCE, run_id


def test_methods_version_changes_binarized_rows_only(tiny_recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bvbench.build as build

    text = tiny_recipe.read_text().replace("profiles:", """  - name: bin
    label: Binarized
    method: bireal
    init_from: fp
profiles:""")
    tiny_recipe.write_text(text)
    rec = load_recipe(str(tiny_recipe), "paper")
    before = {r: run_id(rec, rec.row(r), 0, REFERENCE) for r in ("fp", "bin")}
    assert before["fp"] == "paper-fake-seed0-6c572a01"  # the id this row had before
    monkeypatch.setattr(build, "METHODS_VERSION", "another-version")
    after = {r: run_id(rec, rec.row(r), 0, REFERENCE) for r in ("fp", "bin")}
    assert after["fp"] == before["fp"] and after["bin"] != before["bin"]
