"""`bvbench profile`: the efficiency columns of paper 1 Table 1, from the shipped recipe."""

from __future__ import annotations

import json

import pytest


def test_profile_bitvit_cifar10_matches_paper_table_1(cli) -> None:
    code, out, err = cli("profile", "bitvit-cifar10", "--rows", "vit,resnet18,vgg16", "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["row"]: r for r in doc["rows"]}
    assert doc["recipe"] == "bitvit-cifar10" and set(rows) == {"vit", "resnet18", "vgg16"}
    # (params in M, fp32 MiB, GMACs) as printed in paper 1 Table 1
    for name, (params, mib, gmacs) in {"vit": (85.81, 327.33, 17.59), "resnet18": (11.18, 42.65, 1.82),
                                        "vgg16": (134.3, 512.32, 15.52)}.items():
        r = rows[name]
        assert r["params"] / 1e6 == pytest.approx(params, abs=0.01)
        assert r["size_fp32_mib"] == pytest.approx(mib, abs=0.01)
        assert r["macs"] / 1e9 == pytest.approx(gmacs, rel=0.005)
    vit = rows["vit"]
    assert len(vit["blocks"]) == 12 and vit["bops"] == 0 and vit["ops"] == pytest.approx(vit["flops"])


def test_gsb_table_ix_counts_the_distillation_token(cli) -> None:
    """GSB Table IX's 146.9 / 233.6 / 267.3 x10^6 BOPs need n = 198 tokens (class, distillation, 196 patches)."""
    code, out, err = cli("profile", "gsb-cifar100", "--rows", "t9-ours-baseline,t9-ours", "--json")
    assert code == 0, err
    rows = {r["row"]: r for r in json.loads(out)["rows"]}
    for row, key, want in (("t9-ours-baseline", "attn_bops", 146.9e6), ("t9-ours-baseline", "mlp_bops", 233.6e6),
                           ("t9-ours", "attn_bops", 267.3e6)):
        assert rows[row][key] == pytest.approx(want, rel=0.01), (row, key)
