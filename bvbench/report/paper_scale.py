"""Complexity and size of a row's paper-scale model (the published protocol's model and input size, random
weights, as `bvbench profile` counts them), so that a paper table's Params / OPs / BOPs / FLOPs / Size columns
are comparable with the paper's whatever profile the accuracy was measured at.

Counting a 224 px model takes seconds, so the counts are cached in results/<recipe>/paper_scale.json, one entry
per row, keyed by a hash of everything the count depends on (model, methods, input, convention, code version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bvbench.build import METHODS_VERSION
from bvbench.data import dataset_info
from bvbench.errors import BvbenchError
from bvbench.evaluate.profile import complexity_metrics, converted_model, fp_macs, input_shape
from bvbench.methods import METHODS
from bvbench.recipes.schema import Recipe, Row
from bvbench.results import atomic_write_json, config_hash

# metrics.json keys that describe the model, not what it learnt: at paper scale in paper tables.
PAPER_SCALE_KEYS = frozenset({"params", "macs", "bops", "flops", "ops", "size_mb", "size_mib", "size_fp32_mib",
                              "attn_bops", "attn_flops", "mlp_bops", "mlp_flops", "block_ops"})
CACHE_FILE = "paper_scale.json"
COUNT_VERSION = "1"  # bump when complexity counting changes


def _countable(row: Row) -> Row:
    """The row without what would load weights (pretrained download, checkpoint): counts need none."""
    return row.model_copy(update={"model": row.model.model_copy(update={"pretrained": False, "checkpoint": None})})


def count_key(row: Row) -> str:
    """Hash of everything the row's counts depend on."""
    stages = [s.model_dump(mode="json") for s in row.resolved_stages()]
    return config_hash({"model": row.model.model_dump(mode="json", exclude={"pretrained", "checkpoint"}),
                        "stages": stages, "data": [row.data.name, row.data.img_size],
                        "eval": [row.eval.complexity, row.eval.count_first_last],
                        "methods": METHODS_VERSION, "count": COUNT_VERSION})


def runnable(row: Row) -> bool:
    """Whether the row's methods are implemented (reference and pending rows are not counted)."""
    return row.status == "run" and all(s.method is not None and s.method.name in METHODS
                                       for s in row.resolved_stages())


def count_row(row: Row) -> dict[str, Any]:
    """The flat complexity keys of the row's model at its own (here: the paper's) scale, random weights."""
    row = _countable(row)
    classes = row.model.num_classes or dataset_info(row.data.name).num_classes
    model = converted_model(row, classes)
    out = complexity_metrics(model, row, fp_macs(row, classes))
    out.pop("blocks", None)
    return {k: v for k, v in out.items() if k in PAPER_SCALE_KEYS} | {"img_size": input_shape(row)[1],
                                                                     "model": row.model.name}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def paper_scale(recipe: Recipe, results: Path, rows: list[str]) -> dict[str, dict[str, Any]]:
    """Counts of the named rows of `recipe` (its paper profile) by row name, from the cache where it holds
    them, counted (and cached when results/<recipe>/ exists) otherwise. Rows that cannot be counted are left
    out."""
    path = results / recipe.name / CACHE_FILE
    cache = _read(path)
    out, changed = {}, False
    for name in rows:
        row = recipe.row(name)
        if not runnable(row):
            continue
        key = count_key(row)
        entry = cache.get(name)
        if not isinstance(entry, dict) or entry.get("key") != key:
            try:
                entry = {"key": key, **count_row(row)}
            except (BvbenchError, RuntimeError, ValueError):
                continue  # a model that cannot be built at paper scale: no paper-scale counts
            cache[name], changed = entry, True
        out[name] = {k: v for k, v in entry.items() if k != "key"}
    if changed and path.parent.is_dir():
        atomic_write_json(path, dict(sorted(cache.items())))
    return out
