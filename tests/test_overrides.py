"""`--set` overrides: shared (anchor-copied) method options, list items by index, messages with the full key,
and a resolved recipe from `bvbench show --profile P` that keeps P."""

from __future__ import annotations

from pathlib import Path

import pytest

from bvbench.errors import BvbenchError
from bvbench.recipes import load_recipe
from bvbench.runner.identity import REFERENCE, run_id

STAGED = """
name: staged
title: two-stage test recipe
paper: {citation: test, file: none.txt, tables: [{name: Table 1, columns: [{key: top1, label: Top-1, unit: percent}]}]}
data: {name: fake, img_size: 16, num_workers: 0}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
train: {epochs: 4, batch_size: 32, lr: 2.0e-3}
rows:
  - name: ours
    label: GSB
    method: &ours {name: gsb, k_att: 2, k_v: 2}
    stages:
      - {name: weights, epochs: 3, method: {<<: *ours, stage: 1}}
      - {name: all, epochs: 1}
  - name: own
    label: GSB, stage 1 with its own k_att
    method: &own {name: gsb, k_att: 2}
    stages:
      - {name: weights, epochs: 3, method: {<<: *own, k_att: 4, stage: 1}}
      - {name: all, epochs: 1}
"""


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    f = tmp_path / "staged.yaml"
    f.write_text(STAGED)
    return f


def _row(rec, name):
    return next(r for r in rec.rows if r.name == name)


def test_method_override_reaches_the_anchor_copy_in_stage_one(staged: Path) -> None:
    row = _row(load_recipe(str(staged), sets=["rows.ours.method.k_att=5"]), "ours")
    assert row.method.k_att == 5
    weights, main = row.resolved_stages()
    assert weights.method.k_att == 5 and weights.method.stage == 1
    assert main.method.k_att == 5
    # a default shared by both (neither sets it) is shared too
    row = _row(load_recipe(str(staged), sets=["rows.ours.method.act_type_a=sign"]), "ours")
    assert row.resolved_stages()[0].method.act_type_a == "sign"


def test_a_stage_with_its_own_value_makes_the_key_ambiguous(staged: Path) -> None:
    with pytest.raises(BvbenchError, match=r"ambiguous.*rows\.own\.stages\.0\.method\.k_att"):
        load_recipe(str(staged), sets=["rows.own.method.k_att=5"])
    row = _row(load_recipe(str(staged), sets=["rows.own.stages.0.method.k_att=6"]), "own")
    assert row.resolved_stages()[0].method.k_att == 6 and row.method.k_att == 2


def test_list_items_are_addressed_by_index(staged: Path) -> None:
    row = _row(load_recipe(str(staged), sets=["rows.ours.stages.0.epochs=1"]), "ours")
    assert [s.epochs for s in row.resolved_stages()] == [1, 1]
    row = _row(load_recipe("gsb-cifar100", "cpu", ["rows.ours.stages.1.epochs=2"]), "ours")
    assert [s.epochs for s in row.resolved_stages()] == [1, 2]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("rows.ours.stages.5.epochs=1", r"rows\.ours\.stages\.5\.epochs: stages is a list of 2 items; .* 0\.\.1"),
        ("rows.ours.stages.x.epochs=1", r"rows\.ours\.stages\.x\.epochs: .*e\.g\. rows\.ours\.stages\.0\.epochs"),
        ("rows.ours.stages.0.epochz=1", r"rows\.ours\.stages\.0\.epochz: no field 'epochz'\. Did you mean: epochs"),
        ("rows.ours.train.epochs.x=1", r"rows\.ours\.train\.epochs\.x: 'epochs' is a value, not a section"),
        ("train.lr.x=1", r"--set train\.lr\.x: 'lr' is a value"),
    ],
)
def test_bad_keys_name_the_whole_key(staged: Path, key: str, message: str) -> None:
    with pytest.raises(BvbenchError, match=message):
        load_recipe(str(staged), sets=[key])


def test_show_then_run_keeps_the_profile(tmp_path: Path, cli) -> None:
    code, out, _ = cli("show", "gsb-cifar100", "--profile", "cpu")
    assert code == 0
    f = tmp_path / "f.yaml"
    f.write_text(out)
    orig, resolved = load_recipe("gsb-cifar100", "cpu"), load_recipe(str(f))
    assert resolved.profile == "cpu"
    assert [run_id(orig, r, 0, REFERENCE) for r in orig.rows] == [run_id(resolved, r, 0, REFERENCE) for r in resolved.rows]
    with pytest.raises(BvbenchError, match="resolved recipe of profile 'cpu'"):
        load_recipe(str(f), "smoke")
