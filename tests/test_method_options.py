"""Method names and options are validated when a recipe loads (before any data or model is built), with a
close-match suggestion; `methods.apply` takes a method name and keyword options from Python."""

from __future__ import annotations

from pathlib import Path

import pytest

from bvbench import methods
from bvbench.errors import BvbenchError
from bvbench.models import build_model
from bvbench.quant import QAttention
from bvbench.recipes import ModelConfig, load_recipe
from bvbench.recipes.options import METHOD_OPTIONS

GSB_ROW = "  - name: gsb\n    label: GSB\n    method: {method}\n    status: {status}\n"


def recipe_with(tmp_path: Path, tiny_recipe: Path, method: str, status: str = "run") -> Path:
    f = tmp_path / "m.yaml"
    f.write_text(tiny_recipe.read_text().replace("name: tiny", "name: m").replace(
        "profiles:", GSB_ROW.format(method=method, status=status) + "profiles:"))
    return f


def test_every_registered_method_declares_its_options() -> None:
    assert set(methods.METHODS.names()) == set(METHOD_OPTIONS)


@pytest.mark.parametrize("method, expect", [
    ("{name: gsbb}", "unknown method 'gsbb'. Did you mean: gsb"),
    ("{name: gsb, k_atttt: 3}", "unknown option 'k_atttt'. Did you mean: k_att"),
    ("{name: gsb, k_att: 99}", "option 'k_att'"),
])
def test_bad_method_fails_at_load(tmp_path: Path, tiny_recipe: Path, method: str, expect: str) -> None:
    with pytest.raises(BvbenchError, match=expect) as e:
        load_recipe(str(recipe_with(tmp_path, tiny_recipe, method)))
    assert "rows[gsb]" in str(e.value) and "\n" not in str(e.value)


def test_pending_row_may_name_an_unimplemented_method(tmp_path: Path, tiny_recipe: Path) -> None:
    rec = load_recipe(str(recipe_with(tmp_path, tiny_recipe, "{name: not-yet}", status="pending")))
    assert rec.row("gsb").method.name == "not-yet"


@pytest.mark.parametrize("command", ["validate", "show", "run"])
def test_cli_rejects_a_bad_method_before_building(cli, tmp_path: Path, tiny_recipe: Path, command: str) -> None:
    f = recipe_with(tmp_path, tiny_recipe, "{name: gsb, k_atttt: 3}")
    code, out, err = cli(command, str(f), *(["--out", str(tmp_path / "res")] if command == "run" else []))
    lines = [ln for ln in err.splitlines() if "k_atttt" in ln]
    assert code == 2 and len(lines) == 1 and "Did you mean: k_att" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_apply_with_a_name_and_keyword_options() -> None:
    cfg = ModelConfig(name="vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    model = methods.apply(build_model(cfg, 3), "gsb", k_att=3, k_v=1)
    (attn,) = [m for m in model.modules() if isinstance(m, QAttention)]
    assert attn.attn_precision.k_att == 3 and attn.attn_precision.k_v == 1
    with pytest.raises(BvbenchError, match="Did you mean: k_att"):
        methods.apply(build_model(cfg, 3), "gsb", k_atttt=3)
