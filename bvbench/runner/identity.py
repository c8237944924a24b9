"""What makes two runs the same run: the resolved configuration of a row (its run id)."""

from __future__ import annotations

from typing import Any

from bvbench.build import methods_version
from bvbench.recipes.schema import Recipe, Row
from bvbench.results import config_hash

# Fields added to the schema after runs were recorded, with the value that reproduces the older behaviour: at that
# value they are left out of a run's identity, so adding them did not change the id of any existing experiment
# (any other value does). A changed default of an older field still changes every id that depends on it.
ADDED_FIELDS: dict[tuple[str, ...], Any] = {
    ("eval", "count_first_last"): "as_run",
    ("model", "kwargs"): {},
}


AUGMENT_DRAWS = "per-sample"


def row_identity(recipe: Recipe, row: Row, seed: int) -> dict[str, Any]:
    """What makes two runs the same run: the resolved configuration (not labels or paper values)."""
    ident = row.model_dump(mode="json", exclude={"label", "note", "paper", "status", "table", "name"})
    for (*parents, key), neutral in ADDED_FIELDS.items():
        node: Any = ident
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(key, neutral) == neutral:
            node.pop(key, None)
    ident.get("train", {}).pop("checkpoint_every", None)  # when to save changes no result
    ident.update({"profile": recipe.profile, "seed": seed, "methods_version": methods_version()})
    if row.train.augment.random:
        # Random per-image augmentation is drawn from (seed, epoch, sample index) since exact mid-epoch resume
        # (issue 12.5); earlier runs drew it from each worker's stream and are other runs. Rows without random
        # augmentation compute exactly what they did and keep their ids.
        ident["augment_draws"] = AUGMENT_DRAWS
    for dep in ("teacher", "init_from"):
        ref = getattr(row, dep)
        if ref:
            ident[dep] = row_identity(recipe, recipe.row(ref), seed)
    return ident


def run_id(recipe: Recipe, row: Row, seed: int) -> str:
    return f"{recipe.profile}-{row.data.name}-seed{seed}-{config_hash(row_identity(recipe, row, seed))}"
