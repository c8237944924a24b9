"""When a measured number may be set against the paper's: the setup a run measured (data set, model, input size,
epochs) against the paper's (the recipe's published protocol), the `--set` overrides that changed a profile's
protocol, and the binomial interval of a single accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bvbench.data import dataset_info
from bvbench.errors import BvbenchError
from bvbench.recipes.schema import Row

ARCH_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
ARCH_NAMES = {"patch_size": "patch", "embed_dim": "dim", "depth": "depth", "num_heads": "heads",
              "mlp_ratio": "mlp"}
Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def data_display(name: str) -> str:
    try:
        return dataset_info(name).display
    except BvbenchError:
        return name


def img_size(row: Row) -> int | None:
    """The input size the row's model sees: data.img_size, else model.img_size, else the data set's own."""
    if row.data.img_size or row.model.img_size:
        return row.data.img_size or row.model.img_size
    try:
        return dataset_info(row.data.name).img_size
    except BvbenchError:
        return None


def model_signature(row: Row) -> str:
    """The model's name with the architecture fields a profile overrides: 'deit_small (patch 4, dim 128)'."""
    if row.model.source != "timm":  # torchvision models take no architecture fields
        return f"{row.model.source} {row.model.name}"
    over = [f"{ARCH_NAMES[f]} {v:g}" if isinstance(v, float) else f"{ARCH_NAMES[f]} {v}"
            for f in ARCH_FIELDS if (v := getattr(row.model, f)) is not None]
    over += [f"{k} {v}" for k, v in sorted((getattr(row.model, "kwargs", None) or {}).items())]
    name = row.model.name
    return name + (f" ({', '.join(over)})" if over else "")


def total_epochs(row: Row) -> int:
    return sum(s.epochs or 0 for s in row.resolved_stages())


@dataclass(frozen=True)
class Setup:
    """What a number was measured on."""

    data: str
    model: str
    img_size: int | None
    epochs: int

    @classmethod
    def of(cls, row: Row) -> Setup:
        return cls(row.data.name, model_signature(row), img_size(row), total_epochs(row))


def differences(ours: Setup, paper: Setup) -> dict[str, tuple[str, str]]:
    """What differs, by aspect: {'data set': (ours, paper), ...}; the first three make a Δ not comparable."""
    out: dict[str, tuple[str, str]] = {}
    if ours.data != paper.data:
        out["data set"] = (data_display(ours.data), data_display(paper.data))
    if ours.model != paper.model:
        out["model"] = (ours.model, paper.model)
    if ours.img_size != paper.img_size:
        out["image size"] = (f"{ours.img_size} px", f"{paper.img_size} px")
    if ours.epochs != paper.epochs:
        out["epochs"] = (str(ours.epochs), str(paper.epochs))
    return out


BLOCKING = ("data set", "model", "image size")  # the aspects that make a Δ meaningless


def comparable(diff: dict[str, Any]) -> bool:
    return not any(k in diff for k in BLOCKING)


def protocol(row: Row) -> dict[str, Any]:
    """The fields of a row that make a profile's protocol: epochs per stage, subsets, input size, step cuts."""
    return {"data.train_subset": row.data.train_subset, "data.test_subset": row.data.test_subset,
            "data.img_size": row.data.img_size, "train.epochs": row.train.epochs,
            "train.max_steps_per_epoch": row.train.max_steps_per_epoch,
            "stages": ", ".join(f"{s.name}:{s.epochs}" for s in row.resolved_stages())}


def overrides(run: Row, profile: Row) -> list[str]:
    """`key=value (profile: value)` for each protocol field where a run differs from its profile's row."""
    ours, theirs = protocol(run), protocol(profile)
    return [f"{k}={ours[k]} (profile: {theirs[k]})" for k in ours if ours[k] != theirs[k]]


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion `p` measured on `n` trials."""
    if n <= 0:
        return (0.0, 1.0)
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def half_width_pct(n: int, p: float = 0.5) -> float:
    """Half width in percentage points of the normal-approximation 95 % interval of an accuracy `p` on `n`
    images (p = 0.5: the widest)."""
    return 100 * Z95 * math.sqrt(p * (1 - p) / n) if n > 0 else math.nan
