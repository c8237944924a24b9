"""The recipe schema: unknown keys, bad values, profiles and --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from bvbench.errors import BvbenchError
from bvbench.recipes import load_recipe, parse_set


def test_tiny_recipe_resolves_rows_from_recipe_defaults(tiny_recipe: Path) -> None:
    r = load_recipe(str(tiny_recipe))
    fp = r.row("fp")
    assert fp.model.embed_dim == 32 and fp.data.name == "fake" and fp.train.epochs == 2
    assert fp.table == "Table 1" and fp.paper["top1"] == 70.5
    assert [s.name for s in fp.resolved_stages()] == ["main"]


def test_unknown_key_names_file_and_key(tmp_path: Path, tiny_recipe: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_recipe.read_text().replace("batch_size: 32", "batch_sise: 32"))
    with pytest.raises(BvbenchError) as e:
        load_recipe(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "'batch_sise'" in msg and "unknown key" in msg


def test_bad_value_names_the_row_and_field(tmp_path: Path, tiny_recipe: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_recipe.read_text().replace("label: Full precision", "label: Full precision\n    train: {lr: -1}"))
    with pytest.raises(BvbenchError) as e:
        load_recipe(str(bad))
    assert "rows[fp].train.lr" in str(e.value) and "greater than 0" in str(e.value)


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nrows: [\n  - a: 1\n")
    with pytest.raises(BvbenchError, match=r"broken.yaml: line \d+.*invalid YAML"):
        load_recipe(str(bad))


def test_set_override_is_decisive_and_validated(tiny_recipe: Path) -> None:
    text = tiny_recipe.read_text().replace("label: Full precision", "label: Full precision\n    train: {epochs: 7}")
    tiny_recipe.write_text(text)
    assert load_recipe(str(tiny_recipe)).row("fp").train.epochs == 7
    r = load_recipe(str(tiny_recipe), sets=["train.epochs=3", "model.depth=1", "train.lr=1e-3"])
    assert r.row("fp").train.epochs == 3  # the row's own value is replaced too
    assert r.row("fp").model.depth == 1 and r.row("fp").train.lr == pytest.approx(1e-3)
    r = load_recipe(str(tiny_recipe), sets=["rows.fp.train.batch_size=8"])
    assert r.row("fp").train.batch_size == 8 and r.row("other").train.batch_size == 32
    with pytest.raises(BvbenchError, match="Did you mean: epochs"):
        load_recipe(str(tiny_recipe), sets=["train.epoch=3"])
    with pytest.raises(BvbenchError, match="greater than or equal to 1"):
        load_recipe(str(tiny_recipe), sets=["train.batch_size=0"])
    with pytest.raises(BvbenchError, match="no row 'fpp'"):
        load_recipe(str(tiny_recipe), sets=["rows.fpp.train.lr=1"])


def test_profiles_merge_and_unknown_profile(tiny_recipe: Path) -> None:
    r = load_recipe(str(tiny_recipe), profile="smoke")
    assert r.profile == "smoke" and r.row("fp").train.max_steps_per_epoch == 2 and r.row("fp").train.epochs == 1
    with pytest.raises(BvbenchError, match="no 'cpu' profile"):
        load_recipe(str(tiny_recipe), profile="cpu")
    with pytest.raises(BvbenchError, match="unknown profile"):
        load_recipe(str(tiny_recipe), profile="gpu")


def test_row_references_and_paper_columns_are_checked(tmp_path: Path, tiny_recipe: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_recipe.read_text().replace("label: Reference only", "label: Reference only\n    teacher: fq"))
    with pytest.raises(BvbenchError, match="teacher 'fq' is not a row. Did you mean: fp"):
        load_recipe(str(bad))
    bad.write_text(tiny_recipe.read_text().replace("bits: 1-1}", "bits: 1-1, top5: 3}"))
    with pytest.raises(BvbenchError, match=r"paper values for \['top5'\]"):
        load_recipe(str(bad))


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(BvbenchError, match="Did you mean: quickstart"):
        load_recipe("quickstrat")


def test_parse_set_reads_yaml_scalars() -> None:
    assert parse_set(["a.b=3", "c=1e-4", "d=true", "e=deit_tiny", "f=[1, 5]"]) == [
        ("a.b", 3), ("c", 1e-4), ("d", True), ("e", "deit_tiny"), ("f", [1, 5])]
    with pytest.raises(BvbenchError, match="KEY=VALUE"):
        parse_set(["novalue"])


def test_short_citation_names_first_author_and_title_head() -> None:
    from bvbench.recipes import load_recipe

    assert load_recipe("gsb-cifar100").paper.short == "Gao et al., GSB"
    assert load_recipe("bitvit-cifar10").paper.short.startswith("Liu & Fuh, Fine-Tune the 1-Bit")
    assert load_recipe("quickstart").paper.short == "none: no paper reports digits"
