"""The shipped recipes: they load under every profile, and their paper numbers match the paper texts.

The transcription checks read each value from the YAML and look for it in the table's own block of the paper
text file (../shared/papers/), so they check the copy, not a constant.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from bvbench.recipes import PROFILES, RECIPES_DIR, available, load_recipe

PAPERS = next((p for p in (Path(os.environ.get("BVBENCH_PAPERS", "/nonexistent")),
                            RECIPES_DIR.parent.parent / "shared" / "papers", RECIPES_DIR.parent / "shared" / "papers")
               if p.is_dir()), RECIPES_DIR.parent.parent / "shared" / "papers")
RECIPES = available()

# (recipe, table) -> (anchor, start, end): the table's block is the text from `start` (searched after `anchor`)
# up to `end`. Starting at the header line keeps captions out of the order check.
BLOCKS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("bitvit-cifar10", "Table 1"): ("Table 1. Performance", "Table 1.", "The Vision Transformer (ViT) stands out"),
    ("bitnet-vit-cifar10", "Table 1"): ("Table 1: CIFAR-10", "Table 1:", "Table 2:"),
    ("bitnet-vit-cifar100", "Table 2"): ("Table 2: CIFAR-100", "Table 2:", "Confusion Matrices"),
    ("bi-vit-imagenet", "Table 1"): ("Table 1. Evaluating", "Method\t#Bits", "5.3. Results"),
    ("bi-vit-imagenet", "Table 2"): ("Table 2. Experiments", "Network\tMethod", "formance of the low-bit"),
    ("bivit-tinyimagenet", "Table 2"): ("Table 2. Ablation", "Arch\tMethod", "Also, we conduct"),
    ("bivit-tinyimagenet", "Table 3"): ("Table 3. Comparisons", "Method\tTop-1", "#### 4.2.2"),
    ("bivit-tinyimagenet", "Table 4"): ("Table 4. Ablation", "Method\tATTN", "With the pretrained information"),
    ("bivit-tinyimagenet", "Table 5"): ("Table 5. Ablation", "Method\tATTN", "### 4.3."),
    ("bivit-tinyimagenet", "Table 6"): ("Table 6. Comparisons", "Arch\tMethod", "We first evaluate"),
    ("bivit-imagenet", "Table 7"): ("Table 7. Comparisons", "Arch\tMethod", "two model structures"),
    ("gsb-cifar100", "Table I"): ("TABLE I\n", "Methods\tDisti.", "C. Results On Oxford"),
    ("gsb-cifar100", "Table IV"): ("TABLE IV\n", "Methods\tW-A", "TABLE V\n"),
    ("gsb-cifar100", "Table V"): ("TABLE V\n", "Framework", "The effectiveness of each module"),
    ("gsb-cifar100", "Table IX"): ("TABLE IX\n", "Methods\tAttention", "VI. CONCLUSION"),
    ("gsb-flowers102", "Table II"): ("TABLE II\n", "Methods\tDisti.", "D. Results On Chaoyang"),
    ("gsb-flowers102", "Table VI"): ("TABLE VI\n", "Top-1(%)", "activations and the other"),
    ("gsb-chaoyang", "Table III"): ("TABLE III\n", "Methods\tDisti.", "Compared with the Oxford"),
}
# Values whose printed form is garbled in the text extraction: the raw text to find instead of the number.
GARBLED = {("bi-vit-imagenet", "deit-s-bibert", "top1"): "_ 1 7.4"}
NUM = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


@cache
def raw_recipe(name: str) -> dict:
    return yaml.load((RECIPES_DIR / f"{name}.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@cache
def loaded(name: str, profile: str = "paper"):
    """load_recipe, once per recipe and profile (parsing YAML dominates the run time)."""
    return load_recipe(name, profile=profile)


def profiles_of(name: str) -> list[str]:
    return ["paper", *(raw_recipe(name).get("profiles") or {})]


@cache
def paper_text(file: str) -> str:
    if not (PAPERS / file).is_file():
        pytest.skip(f"paper text {file} not found (set BVBENCH_PAPERS to the folder of the papers)")
    return (PAPERS / file).read_text()


def block(recipe: str, table: str) -> str:
    file = raw_recipe(recipe)["paper"]["file"]
    text = paper_text(file)
    anchor, start, end = BLOCKS[(recipe, table)]
    a = text.index(anchor)
    s = text.index(start, a)
    e = text.index(end, s + len(start))
    return text[s:e]


def norm(s: str) -> str:
    """Drop the markup and spacing of the text extraction: 'Ours ( $\\beta=0.20$ )' -> 'Ours(β=0.20)'."""
    s = s.replace("\\beta", "β").replace("<sup>1</sup>", "¹").replace("<sup>2</sup>", "²")
    s = re.sub(r"</?[bi]>|\$", "", s)
    return re.sub(r"\s+", "", s)


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUM.findall(text)]


# ---------------------------------------------------------------- every recipe, every profile

CASES = [(n, p) for n in RECIPES for p in profiles_of(n)]


@pytest.mark.parametrize("name,profile", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_recipe_loads_under_each_profile(name: str, profile: str) -> None:
    assert profile in PROFILES
    r = loaded(name, profile)
    assert r.name == name and r.profile == profile


@pytest.mark.parametrize("name", RECIPES)
def test_paper_keys_are_columns_of_the_row_table(name: str) -> None:
    r = loaded(name)
    for row in r.rows:
        keys = {c.key for c in r.paper.table(row.table).columns}
        assert set(row.paper) <= keys, (row.name, set(row.paper) - keys)
        for c in r.paper.table(row.table).columns:
            v = row.paper.get(c.key)
            if v is not None:  # descriptive columns hold strings, measured ones numbers
                assert isinstance(v, str) != c.measured, (row.name, c.key, v)


@pytest.mark.parametrize("name", RECIPES)
def test_profiles_leave_paper_values_alone(name: str) -> None:
    base = {row.name: row.paper for row in loaded(name).rows}
    for p in profiles_of(name)[1:]:
        assert {row.name: row.paper for row in loaded(name, p).rows} == base


MINE = sorted({r for r, _ in BLOCKS})


@pytest.mark.parametrize("name", MINE)
def test_cpu_and_smoke_profiles_are_small_and_offline(name: str) -> None:
    assert {"cpu", "smoke"} <= set(profiles_of(name))
    # cpu: at most 8 epochs of 20000 images per row (a from-scratch fp row: ~7 min on 2 cores)
    for p, max_epochs, max_images in (("cpu", 8, 160_000), ("smoke", 2, 128)):
        r = loaded(name, p)
        assert r.data.img_size == 32
        for row in r.rows:
            if row.status == "reference":
                continue
            assert not row.model.pretrained, (p, row.name)  # no downloads: fp rows stand in for the weights
            total = sum(s.epochs for s in row.resolved_stages())
            assert total <= max_epochs, (p, row.name, total)
            assert row.data.img_size == 32 and 0 < (row.data.train_subset or 0) <= 20000, (p, row.name)
            assert total * row.data.train_subset <= max_images, (p, row.name)


@pytest.mark.parametrize("name,profile", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_init_from_rows_share_the_architecture(name: str, profile: str) -> None:
    """A row initialised from another row's weights builds the same model (re-evaluated rows: same method too)."""
    r = loaded(name, profile)
    for row in r.rows:
        if row.init_from and row.status != "reference":
            src = r.row(row.init_from)
            assert (row.model.name, row.model.source) == (src.model.name, src.model.source), (row.name, src.name)
            if row.train.epochs == 0 and not row.stages:
                assert row.method == src.resolved_stages()[-1].method, (row.name, src.name)


@pytest.mark.parametrize("name", MINE)
def test_rows_run_or_are_references(name: str) -> None:
    """Every trainable row runs a registered method; rows not run are references with a note saying why."""
    from bvbench.methods import METHODS

    r = loaded(name)
    for row in r.rows:
        if row.status != "reference":
            assert row.status == "run", row.name
            assert row.method.name in METHODS, (row.name, row.method.name)
        else:
            assert row.note, row.name
        if row.teacher or row.distill.kind != "none":
            assert row.teacher and row.distill.kind != "none", row.name


# ---------------------------------------------------------------- transcription against the paper text

TABLE_CASES = sorted(BLOCKS)


@pytest.mark.parametrize("name,table", TABLE_CASES, ids=[f"{n}-{t}" for n, t in TABLE_CASES])
def test_paper_values_appear_in_the_printed_table(name: str, table: str) -> None:
    r = loaded(name)
    text = block(name, table)
    found = numbers(text)
    rows = [row for row in r.rows if row.table == table and row.paper]
    assert rows
    for row in rows:
        for key, v in row.paper.items():
            garbled = GARBLED.get((name, row.name, key))
            if garbled:
                assert garbled in text
            elif isinstance(v, str):
                assert norm(v) in norm(text), (row.name, key, v)
            else:
                assert any(abs(v - x) < 1e-9 for x in found), (row.name, key, v)


@pytest.mark.parametrize("name,table", TABLE_CASES, ids=[f"{n}-{t}" for n, t in TABLE_CASES])
def test_rows_are_in_paper_order(name: str, table: str) -> None:
    """Row labels (the method cell, after ' | ') occur in the printed table in the rows' order."""
    r = loaded(name)
    text = norm(block(name, table))
    rows = [row for row in r.rows if row.table == table and row.paper]
    if name == "gsb-flowers102" and table == "Table VI":  # a grid: its cells, row by row, are the printed values
        printed = [float(x) for x in re.findall(r"\d+\.\d+", block(name, table))]
        assert [row.paper["top1"] for row in rows] == printed
        ka_kv = [(int(row.paper["k_a"]), int(row.paper["k_v"])) for row in rows]
        assert ka_kv == [(a, v) for v in range(5) for a in range(5)]
        return
    pos, prev = 0, None
    for row in rows:
        label = norm(row.label.split(" | ")[-1])
        start = pos if label == prev else pos + (len(prev) if prev else 0)  # a merged cell may serve several rows
        i = text.find(label, start)
        assert i >= 0, f"{row.name}: {row.label!r} not found after the previous row's label"
        pos, prev = i, label


def _line_value(name: str, table: str, line_re: str) -> float:
    m = re.search(line_re, block(name, table), re.M)
    assert m, line_re
    return float(m.group(1))


def test_spot_checks() -> None:
    gsb = {row.name: row for row in loaded("gsb-cifar100").rows}
    assert gsb["ours"].paper["top1"] == _line_value("gsb-cifar100", "Table I", r"^Ours\t.*\t([\d.]+)$") == 71.10
    assert gsb["deit-small-distill"].paper["top1"] == _line_value("gsb-cifar100", "Table I", r"^DeiT-Small \[2\]\t✓.*\t([\d.]+)$")
    assert gsb["t9-ours"].paper["block_ops"] == _line_value("gsb-cifar100", "Table IX", r"^Ours\t.*\t([\d.]+)$")
    bit = {row.name: row for row in loaded("bitvit-cifar10").rows}
    assert bit["vgg16"].paper["params"] == _line_value("bitvit-cifar10", "Table 1", r"^Number of\t.*\t([\d.]+) M$") == 134.3
    assert bit["resnet18"].paper["size_fp32_mib"] == float(block("bitvit-cifar10", "Table 1").split("Model size (MB)")[1].split()[3])
    poster = {row.name: row for row in loaded("bitnet-vit-cifar100").rows}
    assert poster["bitnet"].paper["precision"] == _line_value("bitnet-vit-cifar100", "Table 2", r"^Precision\t[\d.]+\t([\d.]+)\t")
    bv = {row.name: row for row in loaded("bivit-imagenet").rows}
    assert bv["swin-ours"].paper["top1"] == _line_value("bivit-imagenet", "Table 7", r"^\tOurs\t1/32\t<b>([\d.]+)</b>$") == 70.8
    biv = {row.name: row for row in loaded("bi-vit-imagenet").rows}
    assert biv["t1-lsf"].paper["top1"] == _line_value("bi-vit-imagenet", "Table 1", r"^\+ Learnable Scaling Factor \(LSF\)\t1-1\t\$([\d.]+)\^")
