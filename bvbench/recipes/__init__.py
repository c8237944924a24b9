"""Recipes: the schema (`bvbench.recipes.schema`) and loading with profiles and overrides
(`bvbench.recipes.loading`)."""

from bvbench.recipes.loading import (
    RECIPES_DIR,
    apply_overrides,
    apply_profile,
    available,
    format_validation_error,
    load_recipe,
    parse_set,
    read_yaml,
    recipe_path,
    to_yaml,
)
from bvbench.recipes.schema import (
    NAME_RE,
    PROFILES,
    ROW_SECTIONS,
    UNITS,
    AugmentConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    MethodSpec,
    ModelConfig,
    PaperColumn,
    PaperInfo,
    PaperTable,
    Recipe,
    Row,
    StageConfig,
    Strict,
    TrainConfig,
    deep_merge,
)

__all__ = [
    "NAME_RE", "PROFILES", "RECIPES_DIR", "ROW_SECTIONS", "UNITS", "AugmentConfig", "DataConfig", "DistillConfig",
    "EvalConfig", "MethodSpec", "ModelConfig", "PaperColumn", "PaperInfo", "PaperTable", "Recipe", "Row",
    "StageConfig", "Strict", "TrainConfig", "apply_overrides", "apply_profile", "available", "deep_merge",
    "format_validation_error", "load_recipe", "parse_set", "read_yaml", "recipe_path", "to_yaml",
]
