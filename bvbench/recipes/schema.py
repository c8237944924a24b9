"""The recipe schema (pydantic): Recipe, Row and their sections; a row's method options are validated against
the method option models of `bvbench.recipes.options`."""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from bvbench.errors import BvbenchError
from bvbench.recipes.options import check_method
from bvbench.registry import suggest

PROFILES = ("paper", "cpu", "smoke")
ROW_SECTIONS = ("data", "model", "train", "eval")  # recipe-level defaults a row may override in part
NAME_RE = r"^[a-z0-9][a-z0-9_.-]*$"

# Display units of paper columns: measured values are multiplied by the factor to read like the paper.
UNITS: dict[str, float] = {
    "fraction": 1.0,  # accuracy 0.986
    "percent": 100.0,  # Top-1 (%) 70.56
    "count": 1.0,
    "M": 1e-6,  # parameters 85.81 M
    "G": 1e-9,  # 17.59 GMac
    "x1e8": 1e-8,  # OPs (x10^8)
    "x1e9": 1e-9,
    "MB": 1.0,  # sizes are stored in their unit already
    "MiB": 1.0,
    "ms": 1.0,
    "text": 1.0,  # descriptive column, never measured
}


# Bounds that catch a typo before hours of training: no published protocol comes near them.
MAX_EPOCHS = 100_000
MAX_LR = 10.0
MAX_WD = 10.0
MAX_SEED = 2**32 - 1  # numpy's seed range


class Strict(BaseModel):
    # inf and nan are never a meaningful setting (lr=inf trains to nan): rejected when the recipe loads.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PaperColumn(Strict):
    """One column of the paper's table."""

    key: str = Field(description="metric key in metrics.json (top1, f1, params, ...) or a descriptive key")
    label: str = Field(description="the column header as printed in the paper")
    unit: Literal[tuple(UNITS)] = "fraction"  # type: ignore[valid-type]
    measured: bool = Field(True, description="false: a descriptive column (W-A bits, Disti.) from the paper")
    tolerance: float | None = Field(None, ge=0, description="|paper - measured| counted as a match, paper units")


class PaperTable(Strict):
    """One table of the paper, with its columns in the paper's order."""

    name: str = Field(description="the table's name in the paper, e.g. 'Table I'")
    caption: str | None = None
    columns: list[PaperColumn] = Field(min_length=1)


class NotSupported(Strict):
    """A table or study of the paper that bvbench does not run, and why."""

    table: str = Field(description="the table's name in the paper, e.g. 'Table 3'")
    reason: str = Field(min_length=1)


class PaperInfo(Strict):
    """Where the reference numbers come from."""

    citation: str
    file: str = Field(description="file under ../shared/papers/")
    url: str | None = None
    tables: list[PaperTable] = Field(min_length=1)
    not_supported: list[NotSupported] = Field([], description="the paper's tables bvbench does not run, with why")

    @property
    def short(self) -> str:
        """'Li et al., Bi-ViT' from 'Yanjing Li, Sheng Xu, ... Bi-ViT: Pushing the Limit ...'."""
        authors, sep, title = self.citation.partition(". ")
        if not sep:
            return self.citation.split(" (")[0]
        names = [a.strip() for a in authors.split(",") if a.strip()]
        lead = names[0].split()[-1] + (" et al." if len(names) > 2 else f" & {names[1].split()[-1]}"
                                       if len(names) == 2 else "")
        head = title.split(":")[0].strip().rstrip(".")
        return f"{lead}, {head}"

    def table(self, name: str) -> PaperTable:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)


class DataConfig(Strict):
    name: str = "cifar10"
    img_size: int | None = Field(None, ge=8, description="resize to this size; default: the data set's own")
    train_subset: int | None = Field(None, ge=1, description="use a class-stratified subset of the train split")
    test_subset: int | None = Field(None, ge=1, description="use a class-stratified subset of the test split")
    num_workers: int = Field(2, ge=0)


class ModelConfig(Strict):
    name: str = "vit_tiny_patch16_224"
    source: Literal["timm", "torchvision"] = "timm"
    pretrained: bool = Field(False, description="load timm/torchvision weights (needs internet or a cache)")
    checkpoint: str | None = Field(None, description="local state_dict to load (weights_only=True)")
    img_size: int | None = Field(None, ge=8)
    patch_size: int | None = Field(None, ge=1)
    embed_dim: int | None = Field(None, ge=8)
    depth: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    mlp_ratio: float | None = Field(None, gt=0)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    num_classes: int | None = Field(None, ge=2, description="default: the data set's number of classes")
    kwargs: dict[str, Any] = Field({}, description="further timm.create_model arguments of the architecture "
                                   "(Swin: window_size, depths, num_heads; NesT: embed_dims, depths, num_levels)")


class MethodSpec(BaseModel):
    """Which quantizers go where. `name` picks a registered method; other keys are its options."""

    model_config = ConfigDict(extra="allow")
    name: str = "fp"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentConfig(Strict):
    hflip: bool = True
    random_crop: bool = True
    randaugment: str | None = Field(None, description="timm RandAugment string, e.g. rand-m9-mstd0.5-inc1")
    color_jitter: float = Field(0.0, ge=0)
    random_erasing: float = Field(0.0, ge=0, le=1)
    mixup: float = Field(0.0, ge=0)
    cutmix: float = Field(0.0, ge=0)

    @property
    def random(self) -> bool:
        """Whether the per-image transform draws anything at random (mixup and cutmix act on batches)."""
        return bool(self.hflip or self.random_crop or self.randaugment or self.color_jitter > 0
                    or self.random_erasing > 0)


def checkpoint_interval(v: int | str | None) -> tuple[int | None, float | None]:
    """`train.checkpoint_every` as (steps, seconds): 50 -> (50, None), '10min' -> (None, 600.0)."""
    if v is None:
        return None, None
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError("checkpoint_every must be a number of steps >= 1 or minutes like '10min'")
        return v, None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(min|m|s|steps?)?\s*", str(v))
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"checkpoint_every {v!r}: use a number of steps (50) or minutes ('10min')")
    num, unit = float(m.group(1)), m.group(2) or "steps"
    if unit.startswith("step"):
        return max(1, int(num)), None
    return None, num * 60 if unit in ("min", "m") else num


def batch_split(train: TrainConfig, world: int = 1) -> tuple[int, int]:
    """(batch per process and forward pass, accumulation steps) of `train` on `world` processes. Without
    `global_batch`: (batch_size, 1). With it: the largest per-process batch b <= batch_size that divides
    global_batch / world (even with mixup or cutmix, which pair the images of a batch), and
    global_batch / (world * b) accumulation steps; a BvbenchError when there is no such b."""
    g = train.global_batch
    if g is None:
        return train.batch_size, 1
    mixing = train.augment.mixup > 0 or train.augment.cutmix > 0
    step = 2 if mixing else 1
    per = g // world
    fits = [b for b in range(step, min(train.batch_size, per) + 1, step) if per % b == 0]
    if g % world or not fits:
        need = f"a multiple of {world * step}" + (" (mixup/cutmix need an even batch per process)" if mixing else "")
        raise BvbenchError(f"train.global_batch {g} does not split over {world} process(es) with train.batch_size "
                           f"{train.batch_size}: use {need}")
    return fits[-1], per // fits[-1]


class TrainConfig(Strict):
    epochs: int = Field(10, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, description="images per process and forward pass (with global_batch: "
                            "the most per process; not part of the run id then)")
    global_batch: int | None = Field(
        None, ge=1, description="images per optimizer step over all processes; the per-process batch and "
        "gradient accumulation follow from it and the world size (`batch_split`), and the run id no longer "
        "depends on the world size")
    optimizer: Literal["adamw", "adam", "sgd", "lamb"] = "adamw"
    lr: float = Field(5e-4, gt=0, le=MAX_LR)
    lr_base_batch: int | None = Field(None, ge=1, description="scale lr by batch_size / lr_base_batch (DeiT)")
    weight_decay: float = Field(0.05, ge=0, le=MAX_WD)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_lr: float = Field(1e-6, ge=0, le=MAX_LR)
    min_lr: float = Field(1e-6, ge=0, le=MAX_LR)
    step_size: int = Field(30, ge=1, description="epochs between lr drops (step schedule)")
    gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    amp: bool = Field(True, description="bf16/fp16 autocast on CUDA; ignored on the CPU")
    compile: bool = Field(False, description="torch.compile the training model (every method compiles without a "
                          "graph break); fused kernels round differently, so a compiled run is another run")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cut epochs short (smoke tests)")
    checkpoint_every: int | str | None = Field(
        None, description="also save a step checkpoint every N steps (50) or M minutes ('10min'); not part of "
                          "the run id")
    augment: AugmentConfig = AugmentConfig()

    @field_validator("checkpoint_every")
    @classmethod
    def _checkpoint_every(cls, v: int | str | None) -> int | str | None:
        checkpoint_interval(v)
        return v


class EvalConfig(Strict):
    batch_size: int = Field(256, ge=1)
    topk: list[int] = [1, 5]

    @field_validator("topk")
    @classmethod
    def _topk(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v) or 1 not in v:
            raise ValueError(f"topk must be positive integers including 1 (top-1 is every table's accuracy), got {v}")
        return v
    complexity: Literal["bi-vit", "gsb", "plain"] = Field(
        "bi-vit", description="OPs convention (bvbench.evaluate.complexity.CONVENTIONS): whose table to match")
    count_first_last: Literal["as_run", "like_body"] = Field(
        "as_run", description="size/OPs of the full-precision first and last layers (patch embedding, heads) "
        "of a quantized model: as_run counts them as they run; like_body at the blocks' bits (Bi-ViT Table 2's "
        "1-1 sizes and OPs are only reproduced that way); any other real layer always counts as it runs")


class DistillConfig(Strict):
    """Distillation from the row's `teacher` (losses in bvbench.train.losses).

    none: CE. hard (DeiT; GSB Eq. 36 with alpha = lambda): (1-alpha) CE(cls, y) + alpha CE(dist, argmax t).
    soft (Hinton): (1-alpha) CE + alpha tau^2 KL(t || s). distribution (ReActNet / BiViT): (1-alpha) CE +
    alpha * -sum softmax(t) log softmax(s) (alpha 1: the distribution loss alone). ranking (Bi-ViT Eq. 14):
    the hard loss + lam * sum over layers of ||psi(A_t) - psi(A_s)||_2 (Bi-ViT Eq. 12-13); `rank_norm: mean`
    divides each layer's norm by sqrt(H N N) (the paper leaves the normalisation open).
    """

    kind: Literal["none", "hard", "soft", "distribution", "ranking"] = "none"
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")
    tau: float = Field(1.0, gt=0)
    lam: float = Field(10.0, ge=0, description="ranking: weight lambda of L_ranking (Bi-ViT Eq. 14)")
    rank_norm: Literal["fro", "mean"] = Field(
        "fro", description="ranking: per-layer norm of psi(A_t) - psi(A_s): fro = ||.||_2 over H x N x N (Bi-ViT Eq. 12 as "
        "written), mean = that norm / sqrt(H N N) (root mean square over the elements)")


class StageConfig(Strict):
    """One training stage (GSB two-stage, BiViT cross-layer); unset fields come from the row."""

    name: str = Field(pattern=NAME_RE)
    epochs: int | None = Field(None, ge=0, le=MAX_EPOCHS)
    lr: float | None = Field(None, gt=0, le=MAX_LR)
    method: MethodSpec | None = None


class Row(Strict):
    """One row of the paper's table."""

    name: str = Field(pattern=NAME_RE)
    label: str
    status: Literal["run", "pending", "reference"] = Field(
        "run", description="pending: method not implemented yet; reference: shown from the paper, never run"
    )
    note: str | None = None
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    method: MethodSpec = MethodSpec()
    stages: list[StageConfig] = []
    teacher: str | None = Field(None, description="row whose finished run is the teacher")
    init_from: str | None = Field(None, description="row whose final weights initialise this one")
    distill: DistillConfig = DistillConfig()
    table: str | None = Field(None, description="the paper table this row belongs to (default: the first)")
    paper: dict[str, float | int | str | None] = Field({}, description="the paper's printed values by column key")

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check_methods(self) -> Row:
        """A row that runs names registered methods with valid options (pending/reference rows may not)."""
        if self.status != "run":
            return self
        self._check_shapes()
        specs = [("method", self.method)] + [(f"stages[{s.name}].method", s.method) for s in self.stages if s.method]
        for where, spec in specs:
            try:
                check_method(spec.name, spec.options)
            except BvbenchError as e:
                raise ValueError(f"{where}: {e}") from None
        return self

    def _check_shapes(self) -> None:
        """Head count and image sizes that cannot build or feed the model, caught before anything is built."""
        m, d = self.model, self.data
        if m.embed_dim is not None and m.num_heads is not None and m.embed_dim % m.num_heads:
            raise ValueError(f"model.num_heads {m.num_heads} does not divide model.embed_dim {m.embed_dim}")
        if m.img_size is not None and d.img_size is not None and m.img_size != d.img_size:
            raise ValueError(f"model.img_size {m.img_size} differs from data.img_size {d.img_size}; "
                             "set both to the same size")
        if m.img_size is not None and m.patch_size is not None and m.img_size % m.patch_size:
            raise ValueError(f"model.patch_size {m.patch_size} does not divide model.img_size {m.img_size}")

    _resolved: tuple[tuple[Any, ...], list[StageConfig]] | None = PrivateAttr(None)

    def resolved_stages(self) -> list[StageConfig]:
        """The stages with every field filled in from the row, computed once per row (again only when a
        field they depend on was replaced, e.g. by `model_copy(update=...)`)."""
        key = (id(self.stages), id(self.method), self.train.epochs, self.train.lr)
        if self._resolved is None or self._resolved[0] != key:
            self._resolved = (key, self._resolve_stages())
        return self._resolved[1]

    def _resolve_stages(self) -> list[StageConfig]:
        if not self.stages:
            return [StageConfig(name="main", epochs=self.train.epochs, lr=self.train.lr, method=self.method)]
        return [
            StageConfig(
                name=s.name,
                epochs=self.train.epochs if s.epochs is None else s.epochs,
                lr=self.train.lr if s.lr is None else s.lr,
                method=s.method or self.method,
            )
            for s in self.stages
        ]


class Claim(Strict):
    """An ordering the paper asserts: row `better` scores a higher top-1 than row `worse` (bvbench.report.claims
    tests it on the two rows' paired per-image predictions)."""

    better: str = Field(description="the row the paper says is more accurate")
    worse: str = Field(description="the row it beats")
    cites: str = Field(min_length=1, description="where the paper shows it, e.g. 'Table III'")
    headline: bool = Field(False, description="the paper's main claim: the cpu nightly runs its rows with "
                                              "several seeds (bvbench.nightly.HEADLINE_SEEDS)")

    @property
    def text(self) -> str:
        return f"{self.better} > {self.worse}"


class Recipe(Strict):
    """A paper table made runnable."""

    name: str = Field(pattern=NAME_RE)
    title: str
    profile: str = "paper"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    paper: PaperInfo
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    rows: list[Row] = Field(min_length=1)
    claims: list[Claim] = Field([], description="the orderings the paper asserts, each citing its table")
    profiles: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_rows(cls, raw: Any) -> Any:
        """Give each row the recipe-level data/model/train/eval, overlaid with its own partial fields."""
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list):
            return raw
        raw = dict(raw)
        rows = []
        for row in raw["rows"]:
            if isinstance(row, dict):
                row = dict(row)
                for sec in ROW_SECTIONS:
                    base = raw.get(sec) or {}
                    own = row.get(sec) or {}
                    if isinstance(base, dict) and isinstance(own, dict):
                        row[sec] = deep_merge(base, own)
            rows.append(row)
        raw["rows"] = rows
        return raw

    @model_validator(mode="after")
    def _check_references(self) -> Recipe:
        names = [r.name for r in self.rows]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"row names must be unique; repeated: {', '.join(sorted(dup))}")
        for r in self.rows:
            for field in ("teacher", "init_from"):
                ref = getattr(r, field)
                if ref is not None and ref not in names:
                    raise ValueError(f"row {r.name!r}: {field} {ref!r} is not a row.{suggest(ref, names)}")
                if ref == r.name:
                    raise ValueError(f"row {r.name!r}: {field} cannot be the row itself")
        tables = [t.name for t in self.paper.tables]
        for r in self.rows:
            if r.table is None:
                r.table = tables[0]
            if r.table not in tables:
                raise ValueError(f"row {r.name!r}: table {r.table!r} is not in paper.tables.{suggest(r.table, tables)}")
            keys = {c.key for c in self.paper.table(r.table).columns}
            unknown = set(r.paper) - keys
            if unknown:
                raise ValueError(
                    f"row {r.name!r}: paper values for {sorted(unknown)} but {r.table} has no such column"
                )
        self._check_claims(names)
        for p in self.profiles:
            if p not in PROFILES:
                raise ValueError(f"unknown profile {p!r}; profiles are {', '.join(PROFILES)}")
        return self

    def _check_claims(self, names: list[str]) -> None:
        """Each claim names two different rows of this recipe."""
        for c in self.claims:
            for ref in (c.better, c.worse):
                if ref not in names:
                    raise ValueError(f"claim {c.text!r} ({c.cites}): {ref!r} is not a row.{suggest(ref, names)}")
            if c.better == c.worse:
                raise ValueError(f"claim {c.text!r} ({c.cites}) compares a row with itself")

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise BvbenchError(f"recipe {self.name!r} has no row {name!r}.{suggest(name, [r.name for r in self.rows])}")

    def dependencies(self, names: list[str]) -> list[str]:
        """`names` plus the teacher/init rows they need, ordered so that dependencies come first."""
        order: list[str] = []

        def visit(n: str, stack: tuple[str, ...]) -> None:
            if n in stack:
                raise BvbenchError(f"recipe {self.name!r}: rows depend on each other in a cycle: {' -> '.join(stack + (n,))}")
            if n in order:
                return
            r = self.row(n)
            for dep in (r.init_from, r.teacher):
                if dep:
                    visit(dep, stack + (n,))
            order.append(n)

        for n in names:
            visit(n, ())
        return order


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `over` merged in, recursively for nested dicts."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
