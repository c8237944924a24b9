"""Loading a recipe: its YAML file, a profile and `--set` overrides, validated into a `Recipe`.

Resolution order for every row (later wins):
  recipe fields -> profile fields -> row fields -> profile `models.<paper model>` (the stand-in of each paper
  model, e.g. a small Swin for Swin-T) -> profile `rows.<name>` fields -> `--set` overrides.
A recipe-level `--set train.epochs=3` is decisive: it also replaces a row's own `train.epochs`.
`--set rows.<name>.<key>=V` touches one row only; list items by index (`rows.ours.stages.0.epochs=1`);
`rows.<name>.method.<opt>=V` also reaches the stages whose method copies the row's (a YAML anchor merge).
A resolved recipe written by `bvbench show R --profile P` keeps P.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError

from bvbench.errors import BvbenchError
from bvbench.recipes.schema import (
    PROFILES,
    ROW_SECTIONS,
    AugmentConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    MethodSpec,
    ModelConfig,
    Recipe,
    Row,
    StageConfig,
    TrainConfig,
    deep_merge,
)
from bvbench.registry import suggest

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"


def available() -> list[str]:
    """Names of the recipes shipped in recipes/."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise BvbenchError(f"recipe file {p} does not exist")
        return p
    cand = RECIPES_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise BvbenchError(f"unknown recipe {name_or_path!r}.{suggest(name_or_path, available())} (`bvbench list recipes`)")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BvbenchError(f"{path}:{where}: invalid YAML: {problem}") from None
    except OSError as e:
        raise BvbenchError(f"cannot read recipe {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise BvbenchError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def parse_set(items: list[str] | None) -> list[tuple[str, Any]]:
    """`["train.epochs=3"]` -> `[("train.epochs", 3)]`; values are read as YAML scalars."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise BvbenchError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
        key, _, value = item.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise BvbenchError(f"--set {item!r}: bad key {key!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", parsed):
            parsed = float(parsed)
        out.append((key, parsed))
    return out


def _set_path(d: Any, parts: list[str], value: Any, key: str) -> None:
    """Set `value` at `parts` inside `d`; a list item is addressed by its index (`stages.0.epochs`)."""
    where: list[str] = []
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(d, list):
            if not p.isdigit() or int(p) >= len(d):
                n = len(d)
                raise BvbenchError(f"--set {key}: {'.'.join(where)} is a list of {n} item{'s' * (n != 1)}; "
                                   f"address one by its index 0..{n - 1}" if n else
                                   f"--set {key}: {'.'.join(where)} is an empty list")
            p_key: Any = int(p)
        elif isinstance(d, dict):
            p_key = p
        else:
            raise BvbenchError(f"--set {key}: {'.'.join(where)!r} is a value, not a section")
        where.append(p)
        if last:
            d[p_key] = value
            return
        nxt = d[p_key] if isinstance(d, list) else d.get(p_key)
        if nxt is None:
            nxt = d[p_key] = {}
        d = nxt


def _has_path(d: Any, parts: list[str]) -> bool:
    for p in parts:
        if not isinstance(d, dict) or p not in d:
            return False
        d = d[p]
    return True


_SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig,
    "distill": DistillConfig, "augment": AugmentConfig, "stages": StageConfig,
}


def _check_key(parts: list[str], key: str, top: type[BaseModel] = Recipe) -> None:
    """Reject a `--set` key that names no field, with the closest valid name (list items by index)."""
    if parts[0] not in top.model_fields:
        raise BvbenchError(f"--set {key}: no field {parts[0]!r}.{suggest(parts[0], list(top.model_fields))}")
    model: type[BaseModel] | None = _SECTIONS.get(parts[0])
    rest = parts[1:]
    if parts[0] == "stages" and rest:
        if not rest[0].isdigit():
            example = key[: len(key) - len(".".join(parts))] + ".".join(["stages", "0", *rest[1:]])
            raise BvbenchError(f"--set {key}: address a stage by its index, e.g. {example}")
        rest = rest[1:]  # _set_path checks the index's range
    field = parts[0]
    for p in rest:
        if model is MethodSpec:
            return  # method options are checked against the method's own schema at validation
        if model is None:
            if _is_scalar(top, field):
                raise BvbenchError(f"--set {key}: {field!r} is a value, not a section")
            return
        if p not in model.model_fields:
            raise BvbenchError(f"--set {key}: no field {p!r}.{suggest(p, list(model.model_fields))}")
        top, field = model, p
        model = MethodSpec if p == "method" else _SECTIONS.get(p)


def _is_scalar(model: type[BaseModel], field: str) -> bool:
    """A field holding a plain value (not a mapping, list or section) that `--set` cannot descend into."""
    ann = model.model_fields[field].annotation
    return all(a in (int, float, str, bool, type(None)) or typing.get_origin(a) is Literal
               for a in (typing.get_args(ann) if typing.get_origin(ann) in (Union, UnionType) else (ann,)))


def _shared_method_key(row: dict[str, Any], sub: list[str], value: Any, key: str) -> None:
    """`rows.R.method.K=V` also sets K in every stage whose method copies the row's (a YAML anchor merge,
    `{<<: *m, stage: 1}`), so one override changes every place the recipe shares the value; a stage that sets
    K to a value of its own makes the key ambiguous."""
    if len(sub) != 2 or sub[0] != "method" or not isinstance(row.get("method"), dict):
        return
    method, opt = row["method"], sub[1]
    ambiguous = []
    for i, st in enumerate(row.get("stages") or []):
        sm = st.get("method") if isinstance(st, dict) else None
        if not isinstance(sm, dict) or sm.get("name") != method.get("name"):
            continue
        if sm.get(opt) == method.get(opt):  # shared, also when neither sets it (the same default)
            sm[opt] = value
        else:
            ambiguous.append(f"{key.rsplit('.method.', 1)[0]}.stages.{i}.method.{opt}")
    if ambiguous:
        raise BvbenchError(f"--set {key}: ambiguous, the row's stages set {opt!r} to values of their own; set "
                           f"{' and '.join(ambiguous)} instead (or as well)")


def apply_overrides(raw: dict[str, Any], sets: list[tuple[str, Any]]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    row_names = [r.get("name") for r in raw.get("rows", []) if isinstance(r, dict)]
    for key, value in sets:
        parts = key.split(".")
        if parts[0] == "rows":
            if len(parts) < 3:
                raise BvbenchError(f"--set {key}: use rows.<row>.<field>=VALUE")
            name = parts[1]
            if name not in row_names:
                raise BvbenchError(f"--set {key}: no row {name!r}.{suggest(name, row_names)}")
            sub = parts[2:]
            _check_key(sub, key, Row)
            row = raw["rows"][row_names.index(name)]
            _shared_method_key(row, sub, value, key)
            _set_path(row, sub, value, key)
            continue
        _check_key(parts, key)
        _set_path(raw, parts, value, key)
        if parts[0] in ROW_SECTIONS:  # decisive: also replace the rows' own setting of this key
            for r in raw.get("rows", []):
                if isinstance(r, dict) and _has_path(r, parts):
                    _set_path(r, parts, value, key)
    return raw


def apply_profile(raw: dict[str, Any], profile: str, source: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise BvbenchError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise BvbenchError(f"{source}: 'profiles' must be a mapping of profile name to overrides")
    raw = copy.deepcopy(raw)
    resolved = raw.get("profile")
    if resolved not in (None, "paper") and not profiles:  # written by `bvbench show R --profile P`
        if profile not in ("paper", resolved):
            raise BvbenchError(f"{source}: a resolved recipe of profile {resolved!r} (from `bvbench show`); run it "
                               f"without --profile, or take profile {profile!r} from the original recipe")
        return raw  # its profile is applied already and stays in the run id and the table
    raw["profile"] = profile
    if profile == "paper":
        return raw
    if profile not in profiles:
        raise BvbenchError(f"{source}: recipe has no {profile!r} profile (it has: {', '.join(['paper', *profiles])})")
    over = copy.deepcopy(profiles[profile]) or {}
    if not isinstance(over, dict):
        raise BvbenchError(f"{source}: profiles.{profile} must be a mapping")
    row_over = over.pop("rows", {}) or {}
    if not isinstance(row_over, dict):
        raise BvbenchError(f"{source}: profiles.{profile}.rows must map row names to overrides")
    models = over.pop("models", {}) or {}
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise BvbenchError(f"{source}: profiles.{profile}.models must map a model name to its model settings")
    paper_model = (raw.get("model") or {}).get("name") or ModelConfig.model_fields["name"].default
    raw = deep_merge(raw, over)
    _apply_models(raw, models, paper_model, f"{source}: profiles.{profile}.models")
    names = [r.get("name") for r in raw.get("rows", []) if isinstance(r, dict)]
    for name, patch in row_over.items():
        if name not in names:
            raise BvbenchError(f"{source}: profiles.{profile}.rows names no row {name!r}.{suggest(str(name), names)}")
        i = names.index(name)
        raw["rows"][i] = deep_merge(raw["rows"][i], patch or {})
    return raw


def _apply_models(raw: dict[str, Any], models: dict[str, dict[str, Any]], paper_model: str, where: str) -> None:
    """A profile's `models:` section: the settings of each paper model's stand-in (e.g. the small Swin that a
    Swin-T row trains in the cpu profile), merged into every row that names that model in the paper."""
    used = set()
    for r in raw.get("rows", []):
        if not isinstance(r, dict):
            continue
        own = r.get("model") if isinstance(r.get("model"), dict) else {}
        name = own.get("name") or paper_model
        if name in models:
            r["model"] = deep_merge(own, models[name])
            used.add(name)
    unused = sorted(set(models) - used)
    if unused:
        raise BvbenchError(f"{where} names model {unused[0]!r} that no row uses.{suggest(unused[0], [paper_model])}")


def format_validation_error(e: ValidationError, source: str, raw: dict[str, Any]) -> str:
    """One line per problem, naming the file and the field (rows by name, not index)."""
    lines: list[str] = []
    errors = e.errors()
    top = {(tuple(x["loc"]), x["msg"]) for x in errors if x["loc"] and x["loc"][0] != "rows"}
    for err in errors:
        loc_t = tuple(err["loc"])
        if len(loc_t) > 2 and loc_t[0] == "rows" and (loc_t[2:], err["msg"]) in top:
            continue  # a recipe-level mistake repeated in every row that inherits it
        loc = list(err["loc"])
        parts: list[str] = []
        i = 0
        while i < len(loc):
            p = loc[i]
            if p == "rows" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
                idx = loc[i + 1]
                rows = raw.get("rows") or []
                nm = rows[idx].get("name") if idx < len(rows) and isinstance(rows[idx], dict) else None
                parts.append(f"rows[{nm or idx}]")
                i += 2
                continue
            parts.append(str(p))
            i += 1
        field = ".".join(parts) or "(recipe)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {str(loc[-1])!r}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        line = f"{source}: {field}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def load_recipe(
    name_or_path: str,
    profile: str = "paper",
    sets: list[str] | list[tuple[str, Any]] | None = None,
) -> Recipe:
    """Load, apply the profile and `--set` overrides, validate. Raises BvbenchError with file and field."""
    path = recipe_path(name_or_path)
    raw = read_yaml(path)
    source = str(path)
    raw = apply_profile(raw, profile, source)
    pairs = parse_set(sets) if sets and isinstance(sets[0], str) else list(sets or [])  # type: ignore[arg-type]
    raw = apply_overrides(raw, pairs)  # type: ignore[arg-type]
    if "name" not in raw:
        raw["name"] = path.stem
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise BvbenchError(format_validation_error(e, source, raw)) from None


def to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (profiles already applied) as YAML."""
    data = recipe.model_dump(mode="json", exclude={"profiles"})
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
