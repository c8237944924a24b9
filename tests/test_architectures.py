"""Architecture-preserving profiles: a row labelled Swin-T trains a Swin at every profile, NesT-T a NesT,
DeiT-T/S/B three widths of DeiT; different architectures are different runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from bvbench.errors import BvbenchError
from bvbench.models import build_model
from bvbench.recipes import available, load_recipe
from bvbench.runner.identity import REFERENCE, run_id

_classes: dict[tuple[str, str], str] = {}


def _paper_class(name: str, source: str) -> str:
    """The class of the paper's model, built on the meta device (no memory, no weights)."""
    if (name, source) not in _classes:
        if source == "torchvision":
            _classes[name, source] = {"resnet": "ResNet", "vgg": "VGG"}[name[:6].rstrip("0123456789_")]
        else:
            with torch.device("meta"):
                _classes[name, source] = type(timm.create_model(name, pretrained=False)).__name__
    return _classes[name, source]


@pytest.mark.parametrize("recipe", [r for r in available() if r != "quickstart"])
def test_every_row_trains_its_papers_architecture(recipe: str) -> None:
    paper = {r.name: r for r in load_recipe(recipe, "paper").rows}
    built: dict[str, str] = {}
    for profile in ("cpu", "smoke"):
        for row in load_recipe(recipe, profile).rows:
            if row.status != "run":
                continue
            key = row.model.model_dump_json()
            if key not in built:
                with torch.device("meta"):  # the architecture only: no memory, seconds for VGG16
                    built[key] = type(build_model(row.model, 10)).__name__
            want = _paper_class(paper[row.name].model.name, paper[row.name].model.source)
            assert built[key] == want, f"{recipe}/{row.name} ({profile}) trains a {built[key]}, the paper a {want}"


def test_different_architectures_are_different_runs() -> None:
    rec = load_recipe("bi-vit-imagenet", "cpu")
    ids = {n: run_id(rec, rec.row(n), 0, REFERENCE) for n in ("t1-real", "deit-t-real", "deit-s-real", "deit-b-real",
                                                   "swin-t-real", "swin-s-real")}
    assert ids["t1-real"] == ids["deit-t-real"]  # one configuration, one run (adopted in both places)
    assert len(set(ids.values())) == 5
    widths = [rec.row(n).model.embed_dim for n in ("deit-t-real", "deit-s-real", "deit-b-real")]
    assert widths[1] == 2 * widths[0] and widths[2] == 4 * widths[0]  # DeiT's 192/384/768 ratio


def test_nest_and_swin_sizes_come_from_model_kwargs() -> None:
    rec = load_recipe("bivit-imagenet", "cpu")
    nest = build_model(rec.row("nest-fp").model, 10)
    assert type(nest).__name__ == "Nest" and [lvl.transformer_encoder[0].attn.num_heads for lvl in nest.levels] == [3, 6, 12]
    swin = build_model(rec.row("swin-fp").model, 10)
    assert [len(s.blocks) for s in swin.layers] == [2, 2, 2]
    assert swin(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def _staged(tmp_path: Path, models: str) -> Path:
    f = tmp_path / "r.yaml"
    f.write_text(
        "name: r\ntitle: t\npaper: {citation: c, file: none.txt, tables: [{name: T, columns: [{key: top1, label: T, unit: percent}]}]}\n"
        "data: {name: fake, img_size: 32}\nmodel: {name: deit_tiny_patch16_224}\n"
        "rows:\n  - {name: a, label: A}\n  - {name: b, label: B, model: {name: swin_tiny_patch4_window7_224}}\n"
        f"profiles:\n  cpu:\n    models: {models}\n"
    )
    return f


def test_profile_models_section_is_checked(tmp_path: Path) -> None:
    rec = load_recipe(str(_staged(tmp_path, "{deit_tiny_patch16_224: {embed_dim: 48, num_heads: 3}}")), "cpu")
    assert (rec.row("a").model.embed_dim, rec.row("b").model.embed_dim) == (48, None)
    with pytest.raises(BvbenchError, match="names model 'deit_small_patch16_224' that no row uses"):
        load_recipe(str(_staged(tmp_path, "{deit_small_patch16_224: {embed_dim: 48}}")), "cpu")
    with pytest.raises(BvbenchError, match="must map a model name"):
        load_recipe(str(_staged(tmp_path, "[1]")), "cpu")


def test_torchvision_models_take_no_kwargs() -> None:
    rec = load_recipe("bivit-imagenet", "cpu", ["rows.r18-fp.model.kwargs={depth: 3}"])
    with pytest.raises(BvbenchError, match="takes no model.kwargs"):
        build_model(rec.row("r18-fp").model, 10)
