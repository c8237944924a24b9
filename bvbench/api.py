"""The Python API for notebooks: `bvbench.run` (a recipe, as `bvbench run` does), `bvbench.profile` (the
counts of a model) and `bvbench.methods.apply` (convert a timm model). `import bvbench` loads this module on
first use of one of its names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bvbench.errors import BvbenchError
from bvbench.evaluate.complexity import Complexity


@dataclass(frozen=True)
class RowResult:
    """One finished run of a row: its run id, folder and metrics.json."""

    row: str
    run_id: str
    path: Path
    metrics: dict[str, Any] = field(repr=False)

    @property
    def top1(self) -> float | None:
        return self.metrics.get("top1")


@dataclass(frozen=True)
class RunResult:
    """What `run` returns: the recipe's finished rows (trained now or reused), in run order."""

    recipe: str
    profile: str
    seed: int
    out: Path
    rows: list[RowResult]
    resolved: Any = field(default=None, repr=False, compare=False)  # the loaded Recipe (profile and sets applied)

    def __getitem__(self, row: str) -> RowResult:
        for r in self.rows:
            if r.row == row:
                return r
        raise KeyError(f"no finished run of row {row!r} (rows: {', '.join(r.row for r in self.rows)})")

    def table(self) -> str:
        """The recipe's comparison tables (paper | ours | delta) as Markdown, as `bvbench table` prints them."""
        from bvbench.report.table import build_tables, to_markdown

        return to_markdown(build_tables(self.resolved, self.out, self.profile))


def run(recipe: str | Path, profile: str = "paper", sets: Sequence[str] = (), rows: Sequence[str] | str | None = None,
        out: str | Path = "results", *, seed: int | None = None, device: str = "auto", data_dir: str | None = None,
        download: bool = False, resume: bool = False, loggers: Sequence[str] = (), quiet: bool = False) -> RunResult:
    """Train and evaluate the rows of `recipe` (a name or a YAML path) like `bvbench run`, reusing finished runs;
    `sets` are `--set KEY=VALUE` overrides, `rows` the rows to run (their teachers run too), `loggers` as
    `--logger`. `quiet` hides the progress lines. Errors are `BvbenchError`s (`RowsFailed` when rows diverged).

    >>> import bvbench
    >>> res = bvbench.run("quickstart", profile="smoke", sets=["data.name=fake"], rows=["fp"],
    ...                   out="results-notebook", device="cpu", quiet=True)
    >>> [(r.row, r.run_id == r.path.name, 0.0 <= r.top1 <= 1.0) for r in res.rows]
    [('fp', True, True)]
    >>> res["fp"].metrics["profile"], res["fp"].metrics["data"]["name"]
    ('smoke', 'fake')
    """
    from bvbench.runner import RunOptions, run_recipe
    from bvbench.runner.rows import console

    names = rows.split(",") if isinstance(rows, str) else list(rows) if rows is not None else None
    opts = RunOptions(profile=profile, rows=names, sets=list(sets), data_dir=data_dir, download=download,
                      out=str(out), seed=seed, device=device, resume=resume, loggers=list(loggers))
    was_quiet, console.quiet = console.quiet, quiet or console.quiet
    try:
        rec, done = run_recipe(str(recipe), opts)
    finally:
        console.quiet = was_quiet
    results = [RowResult(rd.path.parent.name, rd.path.name, rd.path, rd.metrics().dump()) for rd in done]
    return RunResult(rec.name, rec.profile, rec.seed if seed is None else seed, Path(out), results, rec)


def profile(model: nn.Module, input_shape: Sequence[int] | None = None, *, convention: str = "bi-vit") -> Complexity:
    """Parameters, MACs, BOPs, FLOPs, OPs (BOPs/64 + FLOPs) and sizes of one forward pass of one image, as
    `bvbench profile` counts them (precision-aware: quantized layers count BOPs). `input_shape` (C, H, W)
    defaults to the model's own image size; `convention`: bi-vit, gsb or plain.

    >>> import timm, bvbench
    >>> model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    >>> fp = bvbench.profile(model)
    >>> fp.params, fp.bops
    (5362762, 0.0)
    >>> gsb = bvbench.profile(bvbench.methods.apply(model, "gsb", k_att=3))
    >>> gsb.bops > 0, gsb.ops < fp.ops / 10, gsb.size_mb < fp.size_mb / 10
    (True, True, True)
    """
    from bvbench.evaluate.complexity import CONVENTIONS, count_complexity
    from bvbench.models import unfused_attention
    from bvbench.registry import suggest

    if not isinstance(model, nn.Module):
        raise BvbenchError(f"bvbench.profile takes a torch.nn.Module, not {type(model).__name__}")
    if convention not in CONVENTIONS:
        raise BvbenchError(f"unknown convention {convention!r}.{suggest(convention, list(CONVENTIONS))} "
                           f"(choose {', '.join(CONVENTIONS)})")
    shape = tuple(input_shape) if input_shape is not None else _image_shape(model)
    with unfused_attention(model):
        return count_complexity(model, shape, convention=convention)


def _image_shape(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) a model takes: timm's patch embedding size, else its pretrained config's input size."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    chans = getattr(getattr(pe, "proj", None), "in_channels", 3)
    if isinstance(size, tuple | list) and len(size) == 2:
        return (int(chans), int(size[0]), int(size[1]))
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if isinstance(cfg, dict) and len(cfg.get("input_size") or ()) == 3:
        return tuple(int(v) for v in cfg["input_size"])
    raise BvbenchError(f"cannot tell the input size of {type(model).__name__}: pass input_shape=(3, H, W)")


__all__ = ["RowResult", "RunResult", "profile", "run"]
