"""Attention rollout by hand, attention read from timm and quantized attention, and the figure from real runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm
import torch
import yaml
from PIL import Image

from bvbench.errors import BvbenchError
from bvbench.report.attention import attention_figure, cls_map, collect_attention, load_run, rollout

torch.set_num_threads(2)

TINY = """
name: att
title: attention test recipe
seed: 0
paper:
  citation: test
  file: none.txt
  tables:
    - name: Table 1
      columns:
        - {key: top1, label: Top-1 (%), unit: percent}
        - {key: ops, label: OPs (10^8), unit: x1e8}
data: {name: fake, img_size: 16, num_workers: 0, test_subset: 40}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
train: {epochs: 1, batch_size: 32, lr: 2.0e-3, warmup_epochs: 0, amp: false, max_steps_per_epoch: 2,
        augment: {hflip: false, random_crop: false}}
eval: {batch_size: 64}
rows:
  - name: fp
    label: Full precision
    paper: {top1: 70.5, ops: 0.02}
  - name: bin
    label: Bi-ViT binary attention
    method: {name: bi-vit, lsf: true}
    paper: {top1: 60.0, ops: 0.001}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished runs (full precision, binarized attention) made by `bvbench run` on fake data."""
    from bvbench.cli import main

    tmp = tmp_path_factory.mktemp("att")
    f = tmp / "att.yaml"
    f.write_text(TINY)
    main(["run", str(f), "--out", str(tmp / "results"), "--device", "cpu"])
    found = {p.parent.name: p for p in (tmp / "results" / "att").glob("*/*") if (p / ".done").exists()}
    assert set(found) == {"fp", "bin"}
    return found


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------------------------------ maths


def test_rollout_two_layers_by_hand() -> None:
    # one head, two tokens: A^ = (A + I) / row sums, rollout = A^2 @ A^1
    a1 = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])
    a2 = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    # A^1 = [[.75, .25], [0, 1]], A^2 = [[1, 0], [.25, .75]]
    expected = torch.tensor([[0.75, 0.25], [0.1875, 0.8125]])
    assert rollout([a1, a2])[0] == pytest.approx(expected)


def test_rollout_averages_heads_and_rows_sum_to_one() -> None:
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(3, 4, 6, 6, generator=g).softmax(-1) for _ in range(2)]
    r = rollout(maps)
    assert r.sum(-1) == pytest.approx(torch.ones(3, 6))
    eye = torch.eye(6)
    hand = []
    for a in maps:
        m = a.mean(1) + eye
        hand.append(m / m.sum(-1, keepdim=True))
    assert r == pytest.approx(hand[1] @ hand[0], abs=1e-6)
    # the class-token row over the patch tokens, with one or two (DeiT distillation) prefix tokens
    assert cls_map(maps, 1) == pytest.approx(r[:, 0, 1:])
    assert cls_map(maps, 2) == pytest.approx(r[:, 0, 2:])
    assert cls_map(maps, 1, "last") == pytest.approx(maps[1].mean(1)[:, 0, 1:])


def test_binary_maps_are_renormalised_before_rollout() -> None:
    a = torch.tensor([[[[0.0, 0.3, 0.3], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]]]])  # scaled 0/1 map, one empty row
    r = rollout([a])
    assert r.sum(-1) == pytest.approx(torch.ones(1, 3))
    # rows -> [0, .5, .5], [1, 0, 0], uniform [1/3]*3 (empty); + I, then each /2
    assert r[0] == pytest.approx(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [1 / 6, 1 / 6, 2 / 3]]))
    with pytest.raises(BvbenchError, match="choose one of"):
        cls_map([a], 1, "mean")


# ------------------------------------------------------------------------------------------ models


def test_collect_attention_reads_timm_softmax_like_quantized_capture() -> None:
    from bvbench.quant.qattention import attention_maps, capturable

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2,
                              num_heads=2, num_classes=5).eval()
    x = torch.randn(2, 3, 16, 16)
    maps, logits = collect_attention(model, x)  # timm's Attention, fused by default: turned off for the pass
    assert len(maps) == 2 and maps[0].shape == (2, 2, 17, 17)
    assert maps[0].sum(-1) == pytest.approx(torch.ones(2, 2, 17))
    with torch.no_grad():
        assert logits == pytest.approx(model(x), abs=1e-5)
        capturable(model)  # the same weights in bvbench's QAttention, which records softmax(S) itself
        with attention_maps(model) as captured:
            model(x)
    for ours, ref in zip(maps, captured, strict=True):
        assert ours == pytest.approx(ref, abs=1e-6)


def test_distilled_deit_has_two_prefix_tokens() -> None:
    from bvbench.report.attention import _vit_geometry

    model = timm.create_model("deit_tiny_distilled_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2,
                              num_heads=2, num_classes=5)
    prefix, grid = _vit_geometry(model)
    assert (prefix, grid) == (2, (4, 4))
    maps, _ = collect_attention(model, torch.randn(1, 3, 16, 16))
    assert maps[0].shape[-1] == 18 and cls_map(maps, prefix).shape == (1, 16)


def test_model_without_attention_is_an_error() -> None:
    import torchvision

    from bvbench.report.attention import _vit_geometry

    resnet = torchvision.models.resnet18(num_classes=3)
    with pytest.raises(BvbenchError, match="no attention layers"):
        _vit_geometry(resnet)
    with pytest.raises(BvbenchError, match="no attention layers"):
        collect_attention(resnet, torch.randn(1, 3, 16, 16))


# ------------------------------------------------------------------------------------------ runs


def test_binarized_run_maps_are_quantized_and_rollout_is_stochastic(runs: dict[str, Path]) -> None:
    from bvbench.build import build_row_model

    r = load_run(runs["bin"])
    model = build_row_model(r.row, 10, r.path / "checkpoint.pt")
    maps, _ = collect_attention(model, torch.randn(2, 3, 16, 16))
    assert len(maps) == 2
    assert maps[0].unique().numel() <= 3  # {0, alpha}-like: the binarized map, not the softmax
    assert rollout(maps).sum(-1) == pytest.approx(torch.ones(2, 17))


def test_attention_figure_from_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    two = attention_figure([runs["fp"], runs["bin"]], 3, tmp_path / "a.png")
    one = attention_figure([runs["fp"]], 1, tmp_path / "b.png", method="last")
    (w2, h2), (w1, h1) = png_size(two), png_size(one)
    assert w2 > w1 * 1.3 and h2 > h1 * 2  # 3 columns x 3 image rows vs 2 x 1
    assert two.stat().st_size > 20_000


def test_plots_from_the_same_runs(runs: dict[str, Path]) -> None:
    from bvbench.recipes import load_recipe
    from bvbench.report.plots import plot_recipe

    results = runs["fp"].parent.parent.parent
    recipe = load_recipe(str(results.parent / "att.yaml"))
    files = plot_recipe(recipe, results)
    assert [p.name for p in files] == ["accuracy_vs_ops.png", "accuracy_vs_size.png", "curves.png", "confusion.png"]


def test_not_a_run_folder_or_unfinished_run_is_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BvbenchError, match="not a bvbench run folder"):
        attention_figure([tmp_path], 1, tmp_path / "x.png")
    copy = tmp_path / "att" / "fp" / "unfinished"
    shutil.copytree(runs["fp"], copy)
    (copy / ".done").unlink()
    with pytest.raises(BvbenchError, match="not finished"):
        attention_figure([copy], 1, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_runs_on_different_data_are_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "att" / "digits" / "run"
    shutil.copytree(runs["bin"], other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["row"]["data"]["name"] = "digits"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(BvbenchError, match="different test data"):
        attention_figure([runs["fp"], other], 1, tmp_path / "x.png")
    with pytest.raises(BvbenchError, match="at least one image"):
        attention_figure([runs["fp"]], 0, tmp_path / "x.png")
