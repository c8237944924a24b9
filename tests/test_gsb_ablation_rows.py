"""GSB Table VII / VIII rows build the setting they print; Bi-ViT Table 3 (COCO) is listed as not supported."""

from __future__ import annotations

import pytest

from bvbench.build import build_row_model
from bvbench.quant import GSBAttention
from bvbench.recipes import load_recipe

ROWS = {"t7-phi-zero": ("zero", "round"), "t7-phi-mean": ("mean", "round"), "t7-phi-hn": ("hn", "round"),
        "t7-phi-hnn": ("hnn", "round"), "t8-same-as-mask": ("hnn", "mask"), "t8-ours": ("hnn", "round")}


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_table_vii_viii_rows_build_their_setting(profile: str) -> None:
    rec = load_recipe("gsb-cifar100", profile, ["data.name=fake"] if profile == "smoke" else [])
    paper = {r.name: r.paper for r in rec.rows}
    assert {n: paper[n]["top1"] for n in ROWS} == {"t7-phi-zero": 67.22, "t7-phi-mean": 56.47, "t7-phi-hn": 68.92,
                                                    "t7-phi-hnn": 71.10, "t8-same-as-mask": 59.28, "t8-ours": 71.10}
    if profile == "paper":
        return
    for name, (phi, a_bin) in ROWS.items():
        row = rec.row(name)
        src = rec.row(row.init_from) if row.train.epochs == 0 and row.init_from else row
        model = build_row_model(src, 10)
        atts = [m for m in model.modules() if isinstance(m, GSBAttention)]
        assert atts and all((q.phi_mode, q.a_bin) == (phi, a_bin) for q in atts), name
        if row is src:
            assert row.resolved_stages()[0].method.model_dump(exclude_none=True).get("stage") == 1, name


def test_list_recipes_says_coco_detection_is_not_supported(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import bvbench.cli

    monkeypatch.setattr(bvbench.cli.console, "_width", 400)  # the console is made at import: COLUMNS is read then
    code, out, err = cli("list", "recipes")
    assert code == 0, err
    line = next(x for x in out.splitlines() if "bi-vit-imagenet" in x)
    assert "Table 3: COCO detection" in line and "classifiers only" in out
